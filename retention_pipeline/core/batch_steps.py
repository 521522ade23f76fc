"""What one purge batch does on each engine: find (or lock) the next batch of expired rows, delete it
and queue its files, all in one short write transaction. The statements are built once per purge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from . import batch_statements as statements
from . import db
from .db import PG_STATEMENT_TIMEOUT_MS, is_query_cancelled, write_transaction
from .tables import Child, Expiry

CAP_SLACK = 0.1  # how far past its cap a batch may run before a statement's own timeout is narrowed
# A capped batch waits for a writer's row lock at most this share of its cap, holding the rows it has
# already locked meanwhile: the wait ends as a lock timeout (a writer is busy: the batch is repeated after
# a pause), not as a cut-off (too much work: the batch is repeated smaller).
LOCK_WAIT_SHARE = 0.5
_CAP_BATCH = statements.cap_batch()
_CAP_FOLLOWING = statements.cap_following_statements()


@dataclass(frozen=True)
class Batch:
    """One committed batch: the id it reached (None when nothing was left), what it deleted, and how long
    its write transaction was open (from BEGIN to the end of COMMIT). `overran`: cut off at its time cap
    and rolled back, nothing deleted; the same ids are due again, in a smaller batch."""

    last_id: int | None
    deleted: int = 0
    children: int = 0
    queued: int = 0
    seconds: float = 0.0
    overran: bool = False


# One batch: (after_id, until_id, limit) -> what it committed.
Step = Callable[[int, int, int], Batch]


def _batch_end(engine: Engine, statement: Any, parameters: dict[str, int]) -> int | None:
    """Where the next batch ends, found in a read transaction: scanning for it takes no write lock."""
    with engine.connect() as conn:
        value = conn.execute(statement, parameters).scalar()
    return None if value is None else int(value)


Execute = Callable[[Any, dict[str, Any]], Any]  # runs one statement of the batch; returns its result
Children = Callable[[Execute, int, int], int]  # deletes a batch's children; returns how many


class _OutOfTime(Exception):
    """The batch's time cap was spent before its next statement could start."""


def _within_cap(conn: Connection, started: float, cap_ms: float) -> Execute:
    """PostgreSQL: run a batch's statements after its lock so that together, not each, they end within
    `cap_ms` of the batch's start: a statement starting late gets what is left of the cap.

    The batch's first statement set the cap for each statement; while the next would end by the cap plus
    a little slack, no extra round trip is spent narrowing it.
    """
    in_force_ms = cap_ms
    slack_ms = cap_ms * CAP_SLACK

    def execute(statement: Any, parameters: dict[str, Any]) -> Any:
        nonlocal in_force_ms
        elapsed_ms = (time.perf_counter() - started) * 1000
        if elapsed_ms + in_force_ms > cap_ms + slack_ms:
            left_ms = cap_ms - elapsed_ms
            if left_ms <= 0:
                raise _OutOfTime
            in_force_ms = max(1, round(left_ms))
            conn.execute(_CAP_FOLLOWING, {"time_cap": str(in_force_ms)})
        return conn.execute(statement, parameters)

    return execute


def _batch_caps(time_cap_ms: float | None) -> dict[str, str]:
    """PostgreSQL: the statement and lock-wait caps of one batch (the connection's own without a cap)."""
    if time_cap_ms is None:
        return statements.caps(PG_STATEMENT_TIMEOUT_MS, db.PG_LOCK_TIMEOUT_MS)
    return statements.caps(time_cap_ms, min(db.PG_LOCK_TIMEOUT_MS, time_cap_ms * LOCK_WAIT_SHARE))


def _overran(after_id: int, started: float) -> Batch:
    """A batch that started at `started` and was cut off at its cap, rolled back."""
    return Batch(after_id, seconds=time.perf_counter() - started, overran=True)


def _overran_or_raise(exc: DBAPIError, time_cap_ms: float | None, after_id: int, started: float) -> Batch:
    """The batch cancelled at its cap (the SQLSTATE, not the server's translated message), rolled back;
    any other error is raised (a lock timeout or a dropped connection stays a transient error)."""
    if time_cap_ms is None or not is_query_cancelled(exc):
        raise exc
    return _overran(after_id, started)


def _locking_rows(
    engine: Engine,
    lock: Any,
    delete_and_queue: Any,
    time_cap_ms: float | None,
    children: Children | None = None,
) -> Step:
    """PostgreSQL: in one transaction, lock the next batch's rows, delete their children, then the rows,
    queueing their files in the same statement (none cross the wire).

    The batch's statements, its lock first, are cut off once it has run `time_cap_ms` (statement_timeout,
    local to the batch, narrowed for each one that starts late), and its lock waits sooner: a batch
    caught by a checkpoint, a slow disk or a busy writer rolls back instead of holding its locks on.
    """
    batch_caps = _batch_caps(time_cap_ms)

    def step(after_id: int, until_id: int, limit: int) -> Batch:
        now = datetime.now(UTC)
        started = time.perf_counter()
        try:
            with write_transaction(engine) as conn:
                conn.execute(_CAP_BATCH, batch_caps)
                last_id = conn.execute(lock, statements.span(after_id, until_id, limit)).scalar()
                if last_id is None:
                    return Batch(None)
                execute = _within_cap(conn, started, time_cap_ms) if time_cap_ms else conn.execute
                deleted_children = children(execute, after_id, last_id) if children else 0
                result = execute(delete_and_queue, statements.id_range(after_id, last_id, now))
                deleted, queued, _uncapped = result.one()
        except _OutOfTime:
            return _overran(after_id, started)
        except DBAPIError as exc:
            return _overran_or_raise(exc, time_cap_ms, after_id, started)
        seconds = time.perf_counter() - started
        return Batch(last_id, deleted=deleted, children=deleted_children, queued=queued, seconds=seconds)

    return step


def _under_write_lock(
    engine: Engine, batch_end: Any, queue: Any, delete: Any, children: Children | None = None
) -> Step:
    """SQLite: find where the next batch ends in a read transaction, then in one write transaction delete
    its children, queue its files and delete its rows. The write lock is the database's: nothing changes
    between the queueing INSERT's read and the DELETE."""

    def step(after_id: int, until_id: int, limit: int) -> Batch:
        last_id = _batch_end(engine, batch_end, statements.span(after_id, until_id, limit))
        if last_id is None:
            return Batch(None)
        now = datetime.now(UTC)
        started = time.perf_counter()
        with write_transaction(engine) as conn:
            deleted_children = children(conn.execute, after_id, last_id) if children else 0
            queued = conn.execute(queue, statements.id_range(after_id, last_id, now)).rowcount
            deleted = conn.execute(delete, statements.id_range(after_id, last_id)).rowcount
        seconds = time.perf_counter() - started
        return Batch(last_id, deleted=deleted, children=deleted_children, queued=queued, seconds=seconds)

    return step


def table_batches(
    engine: Engine, expiry: Expiry, table: str, delete_images: bool = False, time_cap_ms: float | None = None
) -> Step:
    """The batch step of a purge: delete up to `limit` expired rows of `table` in (after_id, until_id],
    their children first, and queue their files; on PostgreSQL within `time_cap_ms` or not at all."""
    entry = expiry.registry[table]
    media = entry.media(delete_images)
    if not media and not entry.children:
        return _plain_rows(engine, expiry, table, time_cap_ms)
    children = _children(expiry, table, entry.children) if entry.children else None
    if engine.dialect.name == "postgresql":
        # Locked rows cannot gain a child (an alert, a link) until their batch commits; for detections,
        # linking one to an event takes a KEY SHARE lock on it, so once the batch is locked no new link
        # can appear, and the DELETE applies the whole rule in a fresh snapshot that sees every link
        # committed before the locks.
        return _locking_rows(
            engine,
            statements.lock_next_batch(expiry, table),
            statements.delete_expired_queueing_files(expiry, table, media),
            time_cap_ms,
            children,
        )
    return _under_write_lock(
        engine,
        statements.select_batch_end(expiry, table),
        statements.queue_files_of_expired(expiry, table, media),
        statements.delete_expired(expiry, table),
        children,
    )


def _children(expiry: Expiry, table: str, children: tuple[Child, ...]) -> Children:
    """Delete a batch's children, each table in turn; returns how many of the counted ones went."""
    deletes = [(statements.delete_children(expiry, table, child), child.counted) for child in children]

    def delete(execute: Execute, after_id: int, last_id: int) -> int:
        counted = 0
        for statement, is_counted in deletes:
            rows = int(execute(statement, statements.id_range(after_id, last_id)).rowcount)
            counted += rows if is_counted else 0
        return counted

    return delete


def _plain_rows(engine: Engine, expiry: Expiry, table: str, time_cap_ms: float | None) -> Step:
    """A table without files or children: find the batch's end in a read transaction, then delete it;
    no row lock is taken beforehand, as nothing about the rows needs to stay put."""
    batch_end = statements.select_batch_end(expiry, table)
    postgresql = engine.dialect.name == "postgresql"
    if postgresql:
        delete: Any = statements.delete_expired_lifting_cap(expiry, table)
        batch_caps = _batch_caps(time_cap_ms)
    else:
        delete = statements.delete_expired(expiry, table)

    def step(after_id: int, until_id: int, limit: int) -> Batch:
        last_id = _batch_end(engine, batch_end, statements.span(after_id, until_id, limit))
        if last_id is None:
            return Batch(None)
        started = time.perf_counter()
        try:
            with write_transaction(engine) as conn:
                if postgresql:
                    conn.execute(_CAP_BATCH, batch_caps)
                    deleted = int(conn.execute(delete, statements.id_range(after_id, last_id)).scalar_one())
                else:
                    deleted = conn.execute(delete, statements.id_range(after_id, last_id)).rowcount
        except DBAPIError as exc:
            return _overran_or_raise(exc, time_cap_ms, after_id, started)
        return Batch(last_id, deleted=deleted, seconds=time.perf_counter() - started)

    return step
