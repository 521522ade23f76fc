"""The purge loop, the same on every engine: find the expired id span, then batch after batch (sized by
the transaction target, repeated smaller when one overruns its cap, retried after a transient error)
until the engine's step reports nothing left; progress in the log, and a final flush to disk.
"""

from __future__ import annotations

import contextlib
import functools
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from ..queries import expiring, purge_batch
from ..references import with_cascades
from ..stats import RowCounts
from ..tables import Expiry
from . import partition_catalog, partitions, postgresql, sqlite
from .batch import Batch, Step, children_deleter
from .durability import flush_commits
from .pacing import PROGRESS_EVERY_S, BatchSizer, EverySoOften, Progress, Share, with_retries
from .sqlite import WriterTurns

ONE_ROW_OVERRUNS = 5  # one-row batches cut off in a row before the purge gives up


def _no_progress(_message: str) -> None:
    pass


class BatchTooSlow(RuntimeError):
    """Even one-row batches keep running past the time cap: the database is too slow for the target.
    `counts` holds what the purge committed before it stopped."""

    def __init__(self, message: str, counts: RowCounts) -> None:
        super().__init__(message)
        self.counts = counts


def _purge_in_batches(
    engine: Engine,
    name: str,
    id_span: Any,
    step: Step,
    sizer: BatchSizer,
    progress: Progress,
    progress_every_s: float,
    share: Share | None = None,
    counts: RowCounts | None = None,
) -> RowCounts:
    counts = RowCounts() if counts is None else counts
    first_id, until_id = with_retries(functools.partial(_id_span, engine, id_span), counts, progress)
    if first_id is None or until_id is None:
        progress(f"{name}: nothing expired")
        return counts
    after_id = first_id - 1
    turns = WriterTurns(engine)
    every_so_often = EverySoOften(progress, progress_every_s)

    try:
        one_row_overruns = 0
        while True:
            batch = with_retries(functools.partial(step, after_id, until_id, sizer.size), counts, progress)
            if batch.overran:
                one_row_overruns = one_row_overruns + 1 if sizer.size == 1 else 0
                _after_overrun(name, batch, sizer, counts, one_row_overruns, every_so_often)
                continue
            if batch.last_id is None:
                break
            one_row_overruns = 0
            counts.add_batch(batch.deleted, batch.seconds, batch.children, batch.queued)
            after_id = batch.last_id
            sizer.record(batch.seconds)
            total = f"total {counts.deleted}" + _queued(counts)
            smaller = f", next batch {sizer.size} rows" if sizer.size < sizer.largest else ""
            every_so_often(f"{name}: batch {counts.batches} deleted {batch.deleted} ({total}{smaller})")
            turns.after_commit()
            if share is not None:
                # Ids of expired rows are spread over the span, so the share of it walked is the share done.
                share((after_id - first_id + 1) / (until_id - first_id + 1))
        with_retries(functools.partial(flush_commits, engine), counts, progress)
        progress(f"{name}: done, {counts.deleted} deleted in {counts.batches} batches{_queued(counts)}")
    except BaseException:
        # What committed before the failure (or an interrupt, which may land in the final flush or the
        # "done" line: event-log writes) is reported as deleted too: have it on disk if the server still
        # answers, without hiding the failure behind one of the flush's own.
        with contextlib.suppress(Exception):
            flush_commits(engine)
        raise
    return counts


def _queued(counts: RowCounts) -> str:
    return f", {counts.files_queued} files queued" if counts.files_queued else ""


def _after_overrun(
    name: str, batch: Batch, sizer: BatchSizer, counts: RowCounts, one_row_overruns: int, progress: Progress
) -> None:
    """Count a batch cut off at its time cap and halve the next, or give up when even single rows are."""
    counts.add_overrun(batch.seconds)
    cap = f"{sizer.time_cap_ms or 0:.0f} ms"
    if one_row_overruns >= ONE_ROW_OVERRUNS:
        target = f"TRANSACTION_TARGET_MS={(sizer.target_s or 0) * 1000:g}"
        raise BatchTooSlow(
            f"{name}: {ONE_ROW_OVERRUNS} batches of a single row in a row ran past {cap} and were rolled"
            f" back; the database is too slow for {target}. Raise it, or set 0 for no cap.",
            counts,
        )
    progress(f"{name}: a batch of {sizer.size} rows ran past {cap} and was rolled back; repeating it smaller")
    sizer.overran()


def _id_span(engine: Engine, statement: Any) -> tuple[int | None, int | None]:
    with engine.connect() as conn:
        low, high = conn.execute(statement).one()
    return low, high


def locks_its_rows(expiry: Expiry, table: str, delete_images: bool) -> bool:
    """Whether each batch of `table` locks its rows before deleting them, on PostgreSQL with SELECT ... FOR
    UPDATE, for which the role needs UPDATE on the table (privileges.py asks this too): a table with files
    to queue or children to delete does."""
    entry = expiry.registry[table]
    return bool(entry.media(delete_images)) or children_deleter(expiry, table, entry.children) is not None


def table_batches(
    engine: Engine, expiry: Expiry, table: str, delete_images: bool = False, time_cap_ms: float | None = None
) -> Step:
    """The engine's batch step for a purge: delete up to `limit` expired rows of `table` in
    (after_id, until_id], their children first, and queue their files; on PostgreSQL within `time_cap_ms`
    or not at all."""
    entry = expiry.registry[table]
    media = entry.media(delete_images)
    on_postgresql = engine.dialect.name == "postgresql"
    children = children_deleter(expiry, table, entry.children, on_postgresql, engine.dialect.name)
    if not locks_its_rows(expiry, table, delete_images):
        if on_postgresql:
            return postgresql.plain_rows(engine, expiry, table, time_cap_ms)
        return sqlite.plain_rows(engine, expiry, table)
    if on_postgresql:
        # Locked rows cannot gain a child (an alert, a link) until their batch commits; for detections,
        # linking one to an event takes a KEY SHARE lock on it, so once the batch is locked no new link
        # can appear, and the DELETE applies the whole rule in a fresh snapshot that sees every link
        # committed before the locks. It judges the locked rows only: the range's others can still gain
        # links, some of which its snapshot would miss.
        return postgresql.rows_with_files(
            engine,
            purge_batch.lock_next_batch(expiry, table),
            purge_batch.delete_expired_queueing_files(expiry, table, media),
            time_cap_ms,
            children,
        )
    return sqlite.rows_with_files(
        engine,
        purge_batch.select_batch_end(expiry, table),
        purge_batch.queue_files_of_expired(expiry, table, media),
        purge_batch.delete_expired(expiry, table),
        children,
    )


def purge_table(
    engine: Engine,
    table: str,
    expiry: Expiry | datetime,
    batch_size: int,
    progress: Progress = _no_progress,
    progress_every_s: float = PROGRESS_EVERY_S,
    target_s: float | None = None,
    delete_images: bool = False,
    share: Share | None = None,
    committed: RowCounts | None = None,
) -> RowCounts:
    """Delete every expired row of one retention table, batch by batch, its children first and its files
    queued (images only with `delete_images`). A datetime stands for the built-in rules at that cutoff.
    `committed`: the counts to fill (and return), which hold what was committed when the purge fails."""
    expiry = with_cascades(engine, Expiry.of(expiry))
    counts = RowCounts() if committed is None else committed
    sizer = BatchSizer(batch_size, target_s)
    dropped, retried = partitions.Dropped(), RowCounts()
    span = (
        expiring.select_expired_detection_id_span(expiry)
        if table == "detections"
        else expiring.select_expired_id_span(expiry, table)
    )
    try:
        if (partitioned := partition_catalog.partitioned(engine, expiry, table)) is not None:
            partitions.drop_expired_partitions(
                engine,
                expiry,
                partitioned,
                progress,
                delete_images,
                sizer,
                functools.partial(with_retries, counts=retried, progress=progress),
                dropped,
            )
        _purge_in_batches(
            engine,
            table,
            span,
            table_batches(engine, expiry, table, delete_images, sizer.time_cap_ms),
            sizer,
            progress,
            progress_every_s,
            share,
            counts,
        )
    except BaseException:
        # What a failed or interrupted step reports (BatchTooSlow's counts, `committed`) includes the
        # partitions it dropped, which are gone: also when it stopped while dropping them or before its
        # batches began.
        _with_dropped(counts, dropped, retried)
        raise
    return _with_dropped(counts, dropped, retried)


def _with_dropped(counts: RowCounts, dropped: partitions.Dropped, retried: RowCounts) -> RowCounts:
    """`counts` with the partitions dropped (each a batch) and the drops' retries added."""
    counts.deleted += dropped.rows
    counts.children_deleted += dropped.children
    counts.files_queued += dropped.queued
    counts.batches += dropped.partitions
    counts.retries += retried.retries
    counts.longest_transaction_ms = max(
        counts.longest_transaction_ms, dropped.longest_s * 1000, retried.longest_transaction_ms
    )
    return counts


def count_rows(engine: Engine, statement: Any) -> int:
    """Run one COUNT statement for a dry run."""
    with engine.connect() as conn:
        return int(conn.execute(statement).scalar_one())
