"""PostgreSQL's purge batches: each locks its rows, deletes their children and them, and queues their
files in one short transaction whose statements are cut off at the batch's time cap (statement_timeout)
and whose lock waits end sooner (lock_timeout). Their commits do not wait for the disk: durability.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from .. import db
from ..db import PG_STATEMENT_TIMEOUT_MS, is_query_cancelled, write_transaction
from ..queries import purge_batch
from ..tables import Expiry
from .batch import Batch, Children, Execute, Step, batch_end

CAP_SLACK = 0.1  # how far past its cap a batch may run before a statement's own timeout is narrowed
# A capped batch waits for a writer's row lock at most this share of its cap, holding the rows it has
# already locked meanwhile: the wait ends as a lock timeout (a writer is busy: the batch is repeated after
# a pause), not as an overrun (too much work: the batch is repeated smaller).
LOCK_WAIT_SHARE = 0.5
CAP_BATCH = purge_batch.cap_batch()
_CAP_FOLLOWING = purge_batch.cap_following_statements()


class OutOfTime(Exception):
    """The batch's time cap was spent before its next statement could start."""


def within_cap(conn: Connection, started: float, cap_ms: float) -> Execute:
    """Run a batch's statements after its lock so that together, not each, they end within `cap_ms` of
    the batch's start: a statement starting late gets what is left of the cap.

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
                raise OutOfTime
            in_force_ms = max(1, round(left_ms))
            conn.execute(_CAP_FOLLOWING, {"time_cap": str(in_force_ms)})
        return conn.execute(statement, parameters)

    return execute


def batch_caps(time_cap_ms: float | None) -> dict[str, str]:
    """The statement and lock-wait caps of one batch (the connection's own without a cap)."""
    if time_cap_ms is None:
        return purge_batch.caps(PG_STATEMENT_TIMEOUT_MS, db.PG_LOCK_TIMEOUT_MS)
    return purge_batch.caps(time_cap_ms, min(db.PG_LOCK_TIMEOUT_MS, time_cap_ms * LOCK_WAIT_SHARE))


def _overran(after_id: int, started: float) -> Batch:
    """A batch that started at `started` and was cut off at its cap, rolled back."""
    return Batch(after_id, seconds=time.perf_counter() - started, overran=True)


def cut_off_at_cap(exc: DBAPIError, time_cap_ms: float | None) -> bool:
    """Whether the error is a capped transaction's statement cancelled at its cap (the SQLSTATE, not the
    server's translated message); a lock timeout or a dropped connection stays a transient error."""
    return time_cap_ms is not None and is_query_cancelled(exc)


def _overran_or_raise(exc: DBAPIError, time_cap_ms: float | None, after_id: int, started: float) -> Batch:
    """The batch cancelled at its cap, rolled back; any other error is raised."""
    if not cut_off_at_cap(exc, time_cap_ms):
        raise exc
    return _overran(after_id, started)


def rows_with_files(
    engine: Engine,
    lock: Any,
    delete_and_queue: Any,
    time_cap_ms: float | None,
    children: Children | None = None,
) -> Step:
    """In one transaction, lock the next batch's rows, delete their children, then the rows, queueing
    their files in the same statement (none cross the wire).

    The batch's statements, its lock first, are cut off once it has run `time_cap_ms` (statement_timeout,
    local to the batch, narrowed for each one that starts late), and its lock waits sooner: a batch
    caught by a checkpoint, a slow disk or a busy writer rolls back instead of holding its locks on.
    """
    caps = batch_caps(time_cap_ms)

    def step(after_id: int, until_id: int, limit: int) -> Batch:
        now = datetime.now(UTC)
        started = time.perf_counter()
        try:
            with write_transaction(engine) as conn:
                conn.execute(CAP_BATCH, caps)
                last_id, locked = conn.execute(lock, purge_batch.span(after_id, until_id, limit)).one()
                if last_id is None:
                    return Batch(None)
                execute = within_cap(conn, started, time_cap_ms) if time_cap_ms else conn.execute
                batch = purge_batch.id_range(after_id, last_id, now, locked)
                deleted_children, cascaded = children(execute, batch) if children else (0, 0)
                result = execute(delete_and_queue, batch)
                deleted, queued, _uncapped = result.one()
                queued += cascaded
        except OutOfTime:
            return _overran(after_id, started)
        except DBAPIError as exc:
            return _overran_or_raise(exc, time_cap_ms, after_id, started)
        seconds = time.perf_counter() - started
        return Batch(last_id, deleted=deleted, children=deleted_children, queued=queued, seconds=seconds)

    return step


def plain_rows(engine: Engine, expiry: Expiry, table: str, time_cap_ms: float | None) -> Step:
    """A table without files or children: find the batch's end in a read transaction, then delete it
    within the cap; no row lock is taken beforehand, as nothing about the rows needs to stay put."""
    batch_end_at = purge_batch.select_batch_end(expiry, table)
    delete = purge_batch.delete_expired_lifting_cap(expiry, table)
    caps = batch_caps(time_cap_ms)

    def step(after_id: int, until_id: int, limit: int) -> Batch:
        last_id = batch_end(engine, batch_end_at, purge_batch.span(after_id, until_id, limit))
        if last_id is None:
            return Batch(None)
        started = time.perf_counter()
        try:
            with write_transaction(engine) as conn:
                conn.execute(CAP_BATCH, caps)
                deleted = int(conn.execute(delete, purge_batch.id_range(after_id, last_id)).scalar_one())
        except DBAPIError as exc:
            return _overran_or_raise(exc, time_cap_ms, after_id, started)
        return Batch(last_id, deleted=deleted, seconds=time.perf_counter() - started)

    return step
