"""PostgreSQL: a table range-partitioned on one of its rules' time columns loses its wholly expired
partitions whole (detach, count, drop), as TimescaleDB's drop_chunks and pg_partman's retention do: a
catalogue change instead of a delete per row, and no dead tuples for vacuum.

A partition qualifies when it is a leaf whose upper bound is at or before that rule's cutoff and none of
its rows is protected by the keep rule. The default partition, sub-partitioned partitions, the partition
the cutoff falls in and partitions holding a protected row are left to the batched delete.

Before the drop, what a batch's DELETE would have done is done set-based, in chunks of the partition's
ids, each its own transaction: the rows' files go into the durable queue, the children the purge empties
itself are deleted, and every foreign key's ON DELETE (CASCADE or SET NULL; a table referenced any other
way is not dropped whole) is applied to the rows referencing the partition. A run killed there leaves the
rows and their files: the file step deletes no file a row still names.

Then the partition is locked against writes (only a late write of an old row waits) and checked again:
a row added while it was cleared, or a row the keep rule now protects, leaves it to the batches. The
detach needs a brief ACCESS EXCLUSIVE lock on the parent: it asks with a short lock_timeout and its own
foreign-key check must end within a short statement_timeout, so a camera writer queued behind it waits
at most about that long; it retries with backoff, and a partition that stays busy is left to the batched
delete. In the detach's transaction the partition is renamed with a prefix of ours, so a run killed
before the drop leaves a table the next run recognises, counts and drops.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, MetaData, Table, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import DropTable

from ..db import write_transaction
from ..queries import expiring, partition_drop
from ..tables import Expiry
from .partition_catalog import (
    Partition,
    PartitionedTable,
    detached_prefix,
    expired_partitions,
    partitioned,
)

if TYPE_CHECKING:
    from .loop import BatchSizer

T = TypeVar("T")
# Runs one transaction's work, repeating it after a transient error (the purge loop's with_retries).
Retry = Callable[[Callable[[], Any]], Any]
Progress = Callable[[str], None]
DETACH_LOCK_TIMEOUT_MS = 50
DETACH_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)
# Why a detach is given up, by pgcode: the parent or the partition stayed locked (lock_not_available, or a
# deadlock with a writer), the detach's foreign-key check ran too long (query_canceled), or a writer made a
# row reference the partition after it was cleared (foreign_key_violation, raised by the detach itself).
_BUSY = "stayed busy"
_GIVEN_UP = {"55P03": _BUSY, "40P01": _BUSY, "57014": _BUSY, "23503": "is referenced again"}
_LEFT_BEHIND = text(
    "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE :prefix AND pg_table_is_visible(oid)"
)
_SET_LOCK_TIMEOUT = text("SELECT set_config('lock_timeout', :timeout, true)")
_SET_STATEMENT_TIMEOUT = text("SELECT set_config('statement_timeout', :timeout, true)")
# The detach's own foreign-key check runs while it holds the parent: it must end within this, or the
# partition is left to the batches.
DETACH_STATEMENT_TIMEOUT_MS = 100


@dataclass(frozen=True)
class Dropped:
    """What dropping partitions did: rows they held, partitions dropped, partitions left to the batches,
    counted children deleted, files queued, and the longest of its transactions."""

    rows: int = 0
    partitions: int = 0
    left_to_batches: int = 0
    children: int = 0
    queued: int = 0
    longest_s: float = 0.0


def _quoted(conn: Connection, name: str) -> str:
    # DDL has no bound parameters for names: SQLAlchemy's own quoting makes each one a single identifier.
    return conn.dialect.identifier_preparer.quote(name)


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    return work(), time.perf_counter() - started


@dataclass
class _Cleared:
    rows: int = 0  # rows seen in the partition while clearing
    children: int = 0
    queued: int = 0
    longest_s: float = 0.0


def _clear_the_way(
    engine: Engine,
    expiry: Expiry,
    target: PartitionedTable,
    rows: ColumnElement[bool],
    delete_images: bool,
    sizer: BatchSizer,
    retry: Retry,
) -> _Cleared:
    """Queue the files of `rows` and remove what hangs off them, a chunk of their ids per transaction,
    chunks sized like batches (to the transaction target), each repeated after a transient error."""
    entry = expiry.registry[target.table]
    media = entry.media(delete_images)
    cleared, after_id = _Cleared(), 0
    queued_at = datetime.now(UTC)

    def one_chunk(after_id: int, size: int) -> tuple[int | None, int, int, int]:
        """(last id, rows, children counted, paths queued) of the chunk after `after_id`."""
        children = queued = 0
        with write_transaction(engine) as conn:
            end = partition_drop.next_chunk_end(expiry, target.table, rows, after_id, size)
            last_id = conn.execute(end).scalar()
            chunk = partition_drop.chunk(expiry, target.table, rows, after_id, last_id)
            seen = conn.execute(partition_drop.count_rows(expiry, target.table, chunk)).scalar_one()
            if media:
                queue = partition_drop.queue_files_of_rows(expiry, target.table, media, chunk, queued_at)
                queued = conn.execute(queue).scalar_one()
            for child in entry.children:
                gone = conn.execute(
                    partition_drop.delete_children_of_rows(expiry, target.table, child, chunk)
                )
                children += gone.rowcount if child.counted else 0
            for key in target.foreign_keys:
                conn.execute(partition_drop.apply_on_delete(expiry, target.table, key, chunk))
        return last_id, seen, children, queued

    while True:
        started = time.perf_counter()
        last_id, seen, children, queued = retry(functools.partial(one_chunk, after_id, sizer.size))
        seconds = time.perf_counter() - started
        cleared.rows, cleared.children, cleared.queued = (
            cleared.rows + seen,
            cleared.children + children,
            cleared.queued + queued,
        )
        cleared.longest_s = max(cleared.longest_s, seconds)
        sizer.record(seconds)
        if last_id is None:
            return cleared
        after_id = last_id


def _detach(
    engine: Engine,
    expiry: Expiry,
    table: str,
    partition: Partition,
    in_partition: ColumnElement[bool],
    cleared: _Cleared | None,
) -> tuple[str | None, str, float, int]:
    """Detach a cleared partition, renaming it ours: its new name (None when given up, with why), the
    longest attempt's transaction, and the rows it holds (counted while nothing could write to it).

    The partition is locked against writes first (only a late write of an old row waits), then checked:
    a row added since it was cleared, or one the keep rule now protects, leaves it to the batches (with
    nothing to clear, `cleared` None, a late row is simply dropped and counted with the rest). Only
    then is the parent asked for, under a short lock_timeout, and the detach's own foreign-key check must
    end within DETACH_STATEMENT_TIMEOUT_MS, so a camera writer waits at most about that long.
    """
    ours = (detached_prefix(table) + partition.name)[:63]
    own_rows = Table(partition.name, MetaData())
    longest, why = 0.0, ""
    for delay in (*DETACH_RETRY_DELAYS_S, None):
        started = time.perf_counter()
        try:
            with write_transaction(engine) as conn:
                conn.execute(_SET_LOCK_TIMEOUT, {"timeout": f"{DETACH_LOCK_TIMEOUT_MS}ms"})
                parent, child = _quoted(conn, table), _quoted(conn, partition.name)
                conn.execute(text(f"LOCK TABLE {child} IN EXCLUSIVE MODE"))
                rows = conn.execute(select(func.count()).select_from(own_rows)).scalar_one()
                if cleared is not None and rows > cleared.rows:
                    return None, "took new rows while it was cleared", time.perf_counter() - started, 0
                if (
                    expiry.registry[table].keep_rule
                    and conn.execute(
                        expiring.count_linked_to_a_retained_event(expiry, in_partition)
                    ).scalar_one()
                ):
                    return None, "now holds a row the keep rule protects", time.perf_counter() - started, 0
                conn.execute(_SET_STATEMENT_TIMEOUT, {"timeout": f"{DETACH_STATEMENT_TIMEOUT_MS}ms"})
                conn.execute(text(f"ALTER TABLE {parent} DETACH PARTITION {child}"))
                conn.execute(text(f"ALTER TABLE {child} RENAME TO {_quoted(conn, ours)}"))
            return ours, "", max(longest, time.perf_counter() - started), int(rows)
        except DBAPIError as exc:
            why = _GIVEN_UP.get(getattr(exc.orig, "pgcode", None) or "", "")
            if not why:
                raise
            longest = max(longest, time.perf_counter() - started)
            if delay is None or why != _BUSY:
                return None, why, longest, 0
            time.sleep(delay)
    return None, why, longest, 0


def _count_and_drop(engine: Engine, detached: str, rows: int | None = None) -> int | None:
    """Drop a detached partition and return its rows, counted now unless the detach counted them (nothing
    writes to it any more); None when a table it references stayed busy (dropping its foreign keys locks
    that table), left for the next run."""
    partition = Table(detached, MetaData())
    try:
        with write_transaction(engine) as conn:
            conn.execute(_SET_LOCK_TIMEOUT, {"timeout": f"{DETACH_LOCK_TIMEOUT_MS}ms"})
            if rows is None:  # left behind by a run killed between its detach and its drop
                rows = int(conn.execute(select(func.count()).select_from(partition)).scalar_one())
            conn.execute(DropTable(partition))
    except DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) in ("55P03", "40P01"):
            return None
        raise
    return rows


def _protected(engine: Engine, expiry: Expiry, table: str, rows: ColumnElement[bool]) -> bool:
    """Whether the keep rule protects one of `rows`, all older than their table's cutoff."""
    if not expiry.registry[table].keep_rule:
        return False
    with engine.connect() as conn:
        return bool(conn.execute(expiring.count_linked_to_a_retained_event(expiry, rows)).scalar())


def drop_expired_partitions(
    engine: Engine,
    expiry: Expiry,
    target: PartitionedTable,
    progress: Progress,
    delete_images: bool,
    sizer: BatchSizer,
    retry: Retry,
) -> Dropped:
    """Drop the table's wholly expired partitions, and any a killed run detached but did not drop."""
    table = target.table
    pattern = detached_prefix(table).replace("_", "\\_") + "%"
    with engine.connect() as conn:
        left_behind = list(conn.execute(_LEFT_BEHIND, {"prefix": pattern}).scalars())
    rows, dropped, given_up, longest = 0, 0, 0, 0.0
    children, queued = 0, 0

    def drop(name: str, counted: int | None = None) -> None:
        nonlocal rows, dropped, longest
        held, seconds = _timed(lambda: retry(functools.partial(_count_and_drop, engine, name, counted)))
        longest = max(longest, seconds)
        if held is None:
            progress(f"{table}: {name} is detached; a table it references stayed busy, the next run drops it")
        else:
            rows, dropped = rows + held, dropped + 1

    for name in left_behind:
        drop(name)
    # No files, no children, no foreign key to it (logs, gpu_stats): nothing to do before the detach.
    entry = expiry.registry[table]
    nothing_hangs_off = not (entry.media(delete_images) or entry.children or target.foreign_keys)
    for partition in expired_partitions(engine, table, target.cutoff):
        in_partition = partition_drop.rows_of_partition(
            expiry, table, target.key, partition.lower, partition.upper
        )
        if _protected(engine, expiry, table, in_partition):
            given_up += 1
            progress(f"{table}: {partition.name} holds rows the keep rule protects; they go through batches")
            continue
        cleared = None
        if not nothing_hangs_off:
            cleared = _clear_the_way(engine, expiry, target, in_partition, delete_images, sizer, retry)
            children, queued = children + cleared.children, queued + cleared.queued
            longest = max(longest, cleared.longest_s)
        detached, why, seconds, held = _detach(engine, expiry, table, partition, in_partition, cleared)
        longest = max(longest, seconds)
        if detached is None:
            given_up += 1
            progress(f"{table}: {partition.name} {why}; its rows go through the batched delete")
            continue
        drop(detached, held)
    if dropped:
        progress(f"{table}: dropped {dropped} expired partitions holding {rows} rows")
    return Dropped(rows, dropped, given_up, children, queued, longest)


def partitions_to_drop(engine: Engine, expiry: Expiry, table: str) -> int:
    """How many partitions of `table` a run with this expiry would drop whole (0: not partitioned so)."""
    target = partitioned(engine, expiry, table)
    if target is None:
        return 0
    return sum(
        not _protected(
            engine,
            expiry,
            table,
            partition_drop.rows_of_partition(expiry, table, target.key, partition.lower, partition.upper),
        )
        for partition in expired_partitions(engine, table, target.cutoff)
    )
