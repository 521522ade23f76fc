"""Batched deletion of expired rows: each batch is one short transaction that deletes its rows and queues
their files durably; the caller loops until a step reports it is finished.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Engine

from . import queries
from .db import WriterTurns, is_transient, write_transaction
from .schema import events
from .stats import RowCounts

Progress = Callable[[str], None]
T = TypeVar("T")

RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
PROGRESS_EVERY_S = 2.0  # the library default; runs take PROGRESS_INTERVAL_SECONDS from their plan


@dataclass(frozen=True)
class Batch:
    """One committed batch: the id it reached (None when nothing was left), what it deleted, and how long
    its write transaction was open (from BEGIN to the end of COMMIT)."""

    last_id: int | None
    deleted: int = 0
    children: int = 0
    queued: int = 0
    seconds: float = 0.0


def _no_progress(_message: str) -> None:
    pass


class EverySoOften:
    """Passes progress on at most once every few seconds (each message is an event in Dagster's run
    log, a write of its own), plus the messages that must always be seen."""

    def __init__(self, progress: Progress, seconds: float) -> None:
        self._progress = progress
        self._seconds = seconds
        self._last = float("-inf")

    def __call__(self, message: str, always: bool = False) -> None:
        now = time.monotonic()
        if always or now - self._last >= self._seconds:
            self._last = now
            self._progress(message)


class BatchSizer:
    """How many rows the next batch may take: at most the configured batch size, and fewer when batches
    run past the time target, so no transaction holds its locks much longer than the target whatever the
    disk, the table's size or the machine's load (pt-online-schema-change's --chunk-time).

    With a target, the first batch is small (nothing is known yet about how long a row takes) and each
    quick batch lets the next grow by half; a long batch shrinks the next one at once, in proportion.
    """

    GROWTH = 1.5
    FIRST = 100

    def __init__(self, largest: int, target_s: float | None) -> None:
        self.largest = largest
        self.target_s = target_s or None
        self.size = largest if self.target_s is None else min(largest, self.FIRST)

    def record(self, seconds: float) -> None:
        """Size the next batch from how long one of the current size held its transaction."""
        if self.target_s is None or seconds <= 0:
            return
        fitting = int(self.size * self.target_s / seconds)
        self.size = max(1, min(self.largest, fitting, int(self.size * self.GROWTH) or 1))


def with_retries(step: Callable[[], T], counts: RowCounts, progress: Progress) -> T:
    """Run one batch, repeating it with backoff after a transient database error.

    Retrying here (rather than re-running the whole op) keeps the counts of batches already committed.
    """
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return step()
        except Exception as exc:
            if delay is None or not is_transient(exc):
                raise
            counts.retries += 1
            progress(f"transient database error, retrying the batch in {delay:.1f}s: {exc}")
            time.sleep(delay)
    raise AssertionError("unreachable")


def _loop(
    engine: Engine,
    name: str,
    id_span: Any,
    step: Callable[[int, int, int], Batch],
    sizer: BatchSizer,
    progress: Progress,
    progress_every_s: float,
) -> RowCounts:
    counts = RowCounts()
    first_id, until_id = with_retries(functools.partial(_id_span, engine, id_span), counts, progress)
    if first_id is None or until_id is None:
        progress(f"{name}: nothing expired")
        return counts
    after_id = first_id - 1
    turns = WriterTurns(engine)
    every_so_often = EverySoOften(progress, progress_every_s)

    while True:
        batch = with_retries(functools.partial(step, after_id, until_id, sizer.size), counts, progress)
        if batch.last_id is None:
            break
        counts.add_batch(batch.deleted, batch.seconds, batch.children, batch.queued)
        after_id = batch.last_id
        sizer.record(batch.seconds)
        smaller = f", next batch {sizer.size} rows" if sizer.size < sizer.largest else ""
        every_so_often(
            f"{name}: batch {counts.batches} deleted {batch.deleted} (total {counts.deleted}{smaller})"
        )
        turns.after_commit()
    progress(f"{name}: done, {counts.deleted} deleted in {counts.batches} batches")
    return counts


def _id_span(engine: Engine, statement: Any) -> tuple[int | None, int | None]:
    with engine.connect() as conn:
        low, high = conn.execute(statement).one()
    return low, high


def queue_files(connection: Connection, paths: dict[str, str]) -> int:
    """Queue {path: kind} for deletion inside the caller's transaction; returns how many were given."""
    if not paths:
        return 0
    now = datetime.now(UTC)
    rows = [{"path": p, "kind": k, "queued_at": now} for p, k in sorted(paths.items())]
    # One cached statement, many parameter sets: SQLAlchemy batches them ("insertmanyvalues").
    connection.execute(queries.insert_queued_file(connection.dialect.name), rows)
    return len(rows)


def _batch_end(engine: Engine, statement: Any) -> int | None:
    """Where the next batch ends, found in a read transaction: scanning for it takes no write lock."""
    with engine.connect() as conn:
        value = conn.execute(statement).scalar()
    return None if value is None else int(value)


def delete_detection_batch(
    engine: Engine, cutoff: datetime, after_id: int, until_id: int, limit: int, delete_images: bool
) -> Batch:
    """Delete up to `limit` expired detections in (after_id, until_id] and queue their files."""
    if engine.dialect.name == "postgresql":
        return _delete_detection_batch_locking_rows(engine, cutoff, after_id, until_id, limit, delete_images)
    last_id = _batch_end(engine, queries.select_detection_batch_end(cutoff, after_id, until_id, limit))
    if last_id is None:
        return Batch(None)
    now = datetime.now(UTC)
    started = time.perf_counter()
    with write_transaction(engine) as conn:
        # The write lock is the database's: nothing changes between the INSERT's read and the DELETE.
        queue = queries.queue_files_of_expired_detections(cutoff, after_id, last_id, delete_images, now)
        queued = conn.execute(queue).rowcount
        deleted = conn.execute(queries.delete_expired_detections(cutoff, after_id, last_id)).rowcount
    return Batch(last_id, deleted=deleted, queued=queued, seconds=time.perf_counter() - started)


def _delete_detection_batch_locking_rows(
    engine: Engine, cutoff: datetime, after_id: int, until_id: int, limit: int, delete_images: bool
) -> Batch:
    now = datetime.now(UTC)
    started = time.perf_counter()
    with write_transaction(engine) as conn:
        # Linking a detection to an event takes a KEY SHARE lock on it: once the batch is locked no new
        # link can appear, and the DELETE below applies the whole rule in a fresh snapshot that sees every
        # link committed before the locks. Locking by the cheap half of the rule spares checking the
        # links to retained events twice per row.
        lock = queries.lock_next_detections_that_may_expire(cutoff, after_id, until_id, limit)
        last_id = conn.execute(lock).scalar()
        if last_id is None:
            return Batch(None)
        # The paths go from the deleted rows into the queue inside the server: none cross the wire.
        statement = queries.delete_expired_detections_queueing_files(
            cutoff, after_id, last_id, delete_images, now
        )
        deleted, queued = conn.execute(statement).one()
    return Batch(last_id, deleted=deleted, queued=queued, seconds=time.perf_counter() - started)


def delete_event_batch(engine: Engine, cutoff: datetime, after_id: int, until_id: int, limit: int) -> Batch:
    """Delete up to `limit` expired events in (after_id, until_id], their alerts and links; queue clips."""
    if engine.dialect.name == "postgresql":
        return _delete_event_batch_locking_rows(engine, cutoff, after_id, until_id, limit)
    last_id = _batch_end(engine, queries.select_event_batch_end(cutoff, after_id, until_id, limit))
    if last_id is None:
        return Batch(None)
    now = datetime.now(UTC)
    started = time.perf_counter()
    with write_transaction(engine) as conn:
        alerts = _delete_children_of_events(conn, cutoff, after_id, last_id)
        queued = conn.execute(queries.queue_clips_of_expired_events(cutoff, after_id, last_id, now)).rowcount
        deleted = conn.execute(queries.delete_expired_events(cutoff, after_id, last_id)).rowcount
    seconds = time.perf_counter() - started
    return Batch(last_id, deleted=deleted, children=alerts, queued=queued, seconds=seconds)


def _delete_event_batch_locking_rows(
    engine: Engine, cutoff: datetime, after_id: int, until_id: int, limit: int
) -> Batch:
    now = datetime.now(UTC)
    started = time.perf_counter()
    with write_transaction(engine) as conn:
        # Locked events cannot gain a child (alert, link) until this batch commits.
        last_id = conn.execute(queries.lock_next_expired_events(cutoff, after_id, until_id, limit)).scalar()
        if last_id is None:
            return Batch(None)
        alerts = _delete_children_of_events(conn, cutoff, after_id, last_id)
        statement = queries.delete_expired_events_queueing_clips(cutoff, after_id, last_id, now)
        deleted, queued = conn.execute(statement).one()
    seconds = time.perf_counter() - started
    return Batch(last_id, deleted=deleted, children=alerts, queued=queued, seconds=seconds)


def _delete_children_of_events(conn: Connection, cutoff: datetime, after_id: int, last_id: int) -> int:
    """Delete the alerts and links of one range of expired events; returns how many alerts went."""
    alerts = conn.execute(queries.delete_alerts_of_expired_events(cutoff, after_id, last_id))
    conn.execute(queries.delete_links_of_expired_events(cutoff, after_id, last_id))
    return alerts.rowcount


def delete_row_batch(
    engine: Engine, table: Table, column: str, cutoff: datetime, after_id: int, until_id: int, limit: int
) -> Batch:
    """Delete up to `limit` expired rows in (after_id, until_id] from a table without files or children."""
    batch_end = queries.select_last_id_of_expired_batch(table, column, cutoff, after_id, until_id, limit)
    last_id = _batch_end(engine, batch_end)
    if last_id is None:
        return Batch(None)
    started = time.perf_counter()
    with write_transaction(engine) as conn:
        result = conn.execute(queries.delete_expired_rows(table, column, cutoff, after_id, last_id))
    return Batch(last_id, deleted=result.rowcount, seconds=time.perf_counter() - started)


def purge_detections(
    engine: Engine,
    cutoff: datetime,
    batch_size: int,
    delete_images: bool,
    progress: Progress = _no_progress,
    progress_every_s: float = PROGRESS_EVERY_S,
    target_s: float | None = None,
) -> RowCounts:
    """Delete every expired detection, batch by batch, queueing its thumbnail (and image)."""
    return _loop(
        engine,
        "detections",
        queries.select_expired_detection_id_span(cutoff),
        lambda after, until, size: delete_detection_batch(engine, cutoff, after, until, size, delete_images),
        BatchSizer(batch_size, target_s),
        progress,
        progress_every_s,
    )


def purge_events(
    engine: Engine,
    cutoff: datetime,
    batch_size: int,
    progress: Progress = _no_progress,
    progress_every_s: float = PROGRESS_EVERY_S,
    target_s: float | None = None,
) -> RowCounts:
    """Delete every expired event with its alerts and links, batch by batch, queueing its clip."""
    return _loop(
        engine,
        "events",
        queries.select_expired_id_span(events, "started_at", cutoff),
        lambda after, until, size: delete_event_batch(engine, cutoff, after, until, size),
        BatchSizer(batch_size, target_s),
        progress,
        progress_every_s,
    )


def purge_rows(
    engine: Engine,
    table: Table,
    column: str,
    cutoff: datetime,
    batch_size: int,
    progress: Progress = _no_progress,
    progress_every_s: float = PROGRESS_EVERY_S,
    target_s: float | None = None,
) -> RowCounts:
    """Delete every row of `table` whose `column` is before the cutoff, batch by batch."""
    return _loop(
        engine,
        table.name,
        queries.select_expired_id_span(table, column, cutoff),
        lambda after, until, size: delete_row_batch(engine, table, column, cutoff, after, until, size),
        BatchSizer(batch_size, target_s),
        progress,
        progress_every_s,
    )


def count_rows(engine: Engine, statement: Any) -> int:
    """Run one COUNT statement for a dry run."""
    with engine.connect() as conn:
        return int(conn.execute(statement).scalar_one())
