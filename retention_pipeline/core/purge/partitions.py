"""PostgreSQL: a table range-partitioned on one of its rules' time columns loses its wholly expired
partitions whole (detach, count, drop), as TimescaleDB's drop_chunks and pg_partman's retention do: a
catalogue change instead of a delete per row, and no dead tuples for vacuum.

A partition qualifies when it is a leaf whose upper bound is at or before that rule's cutoff and none of
its rows is protected by the keep rule. The default partition, sub-partitioned partitions, the partition
the cutoff falls in and partitions holding a protected row are left to the batched delete.

Before the drop, what a batch's DELETE would have done is done set-based (partition_clearing), in
chunks of the partition's ids, each its own transaction held to the batches' time cap: the rows' files go
into the durable queue, the children the purge empties itself are deleted, and every foreign key's ON
DELETE (CASCADE or SET NULL; a table referenced any other way is not dropped whole) is applied to the
rows referencing the partition (PostgreSQL refuses the detach while any row references it, so this
cannot wait until after it). A run killed there leaves the rows and their files (the file step deletes no
file a row still names), but not what the committed chunks did to other tables: a next run that keeps
the partition (retention lengthened, a new keep-rule link) keeps its rows without those children (see
the design's known limits). A partition whose clearing does not fit the cap even one row at a time is
left to the batched delete.

Then the keep rule is checked again, right before each attempt to detach (partition_ddl: the parent is
held for the DETACH statement only, asked for under a short lock_timeout, retried with backoff; a
partition that stays busy is left to the batched delete), and the partition is renamed ours. Nothing
writes to it any more, so it is counted there, exactly, without holding a lock anyone waits for. More
rows than were cleared means rows were added meanwhile: the way is cleared again, from the detached
table itself. Then it is dropped. A run killed between the detach and the drop leaves a table the next
run recognises, clears again and drops (one a retained event now links stays, whole).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Table, true
from sqlalchemy.engine import Engine

from ..queries import expiring, partition_drop
from ..tables import Expiry, table_of
from . import partition_ddl
from .partition_catalog import Partition, PartitionedTable, expired_partitions, partitioned
from .partition_clearing import Cleared, Retry, Work, clear_the_way

if TYPE_CHECKING:
    from .pacing import BatchSizer

Progress = Callable[[str], None]


@dataclass
class Dropped:
    """What dropping partitions did: rows they held, partitions dropped, partitions left to the batches,
    counted children deleted, files queued, and the longest of its transactions."""

    rows: int = 0
    partitions: int = 0
    left_to_batches: int = 0
    children: int = 0
    queued: int = 0
    longest_s: float = 0.0

    def add(self, cleared: Cleared) -> None:
        """Count in what clearing the way for a partition did."""
        self.children += cleared.children
        self.queued += cleared.queued
        self.longest_s = max(self.longest_s, cleared.longest_s)


def _protected(
    engine: Engine, expiry: Expiry, table: str, rows: ColumnElement[bool], source: Table | None = None
) -> bool:
    """Whether the keep rule protects one of `rows` (of the table, or of `source`, a partition of it
    detached), all older than their table's cutoff."""
    if not expiry.registry[table].keep_rule:
        return False
    statement = expiring.count_linked_to_a_retained_event(expiry, rows, source)
    with engine.connect() as conn:
        return bool(conn.execute(statement).scalar())


def _detach(
    engine: Engine, expiry: Expiry, table: str, partition: Partition, in_partition: ColumnElement[bool]
) -> tuple[str | None, str, float]:
    """Detach a partition once its way is clear: its new name (None when given up, with why) and the
    longest attempt's transaction. The keep rule is checked again right before each attempt: a link made
    while it was cleared, or while a busy parent made the detach wait, keeps it attached."""

    def still_unprotected() -> str:
        if _protected(engine, expiry, table, in_partition):
            return "now holds a row the keep rule protects"
        return ""

    return partition_ddl.detach(engine, table, partition, still_unprotected)


def drop_expired_partitions(
    engine: Engine,
    expiry: Expiry,
    target: PartitionedTable,
    progress: Progress,
    delete_images: bool,
    sizer: BatchSizer,
    retry: Retry,
    totals: Dropped | None = None,
) -> Dropped:
    """Drop the table's wholly expired partitions, and any a killed run detached but did not drop.
    `totals`: the counts to fill (and return), which hold the partitions dropped when it fails."""
    table = target.table
    work = Work(delete_images, sizer, retry)
    totals = Dropped() if totals is None else totals
    entry = expiry.registry[table]
    media = entry.media(delete_images)
    # No files, no children, no foreign key to it (logs, gpu_stats): nothing to do before the detach.
    nothing_hangs_off = not (media or entry.children or target.foreign_keys)

    def drop(name: str, held: int | None = None) -> None:
        """Drop a detached partition holding `held` rows (counted now when not known: nothing writes to
        it any more, so the count is exact, read without a lock anyone waits for)."""
        if held is None:
            held = int(retry(functools.partial(partition_ddl.count, engine, name)))
        gone, seconds = retry(functools.partial(partition_ddl.drop, engine, name))
        totals.longest_s = max(totals.longest_s, seconds)
        if not gone:
            progress(f"{table}: {name} is detached; a table it references stayed busy, the next run drops it")
        else:
            totals.rows, totals.partitions = totals.rows + held, totals.partitions + 1

    def clear_detached(name: str, files: bool) -> Cleared | None:
        """Remove the children of a detached partition's rows, and queue their files again if `files`
        (a queued path stays queued once, a child already gone is not counted again); None when it could
        not be done within the time cap: the partition waits, detached and whole, for the next run."""
        its = partition_ddl.its_media(engine, name, media)
        source = partition_drop.detached_partition(name, target.key, its)
        cleared = clear_the_way(
            engine, expiry, table, source, true(), work, files=files, children=True, media=its
        )
        totals.add(cleared)
        if cleared.given_up:
            progress(f"{table}: {name} is detached and could not be cleared within the time cap; next run")
            return None
        return cleared

    for name in partition_ddl.left_behind(engine, table, expiry.registry.names):
        source = partition_drop.detached_partition(name, target.key, ())
        if not _wholly_expired(engine, source, target):
            progress(
                f"{table}: {name}, detached by a killed run, holds rows younger than today's cutoff; it is"
                " not dropped (attach it again by hand: its rows are out of the table)"
            )
        elif nothing_hangs_off:
            drop(name)
        elif _protected(engine, expiry, table, true(), source):
            # A link made between the detach and the kill: its rows stay whole, out of the table.
            progress(
                f"{table}: {name}, detached by a killed run, holds a row the keep rule now protects; it is"
                " not dropped (attach it again by hand: its rows are out of the table)"
            )
        elif (cleared := clear_detached(name, files=True)) is not None:
            drop(name, cleared.rows)
    for partition in expired_partitions(engine, table, target.cutoff):
        in_partition = partition_drop.rows_of_partition(
            expiry, table, target.key, partition.lower, partition.upper
        )
        if _protected(engine, expiry, table, in_partition):
            totals.left_to_batches += 1
            progress(f"{table}: {partition.name} holds rows the keep rule protects; they go through batches")
            continue
        before = None
        if not nothing_hangs_off:
            # Files and foreign keys now (the detach needs no row referencing the partition left); the
            # children once detached, so that one the camera adds meanwhile goes too.
            whole_table = table_of(entry)
            before = clear_the_way(
                engine, expiry, table, whole_table, in_partition, work, True, False, target.foreign_keys
            )
            totals.add(before)
            if before.given_up:
                totals.left_to_batches += 1
                progress(f"{table}: {partition.name} could not be cleared within the time cap; batches")
                continue
        detached, why, seconds = _detach(engine, expiry, table, partition, in_partition)
        totals.longest_s = max(totals.longest_s, seconds)
        if detached is None and why == partition_ddl.GONE:
            # Its rows are not ours to count: what the clearing did (children, files) was done and is.
            progress(f"{table}: {partition.name} {why}; not dropped by this run")
            continue
        if detached is None:
            totals.left_to_batches += 1
            progress(f"{table}: {partition.name} {why}; its rows go through the batched delete")
            continue
        if before is None:
            drop(detached)
            continue
        # Rows written into it while it was cleared change its count or its ids' sum: their files were
        # not queued, so every row's files are queued again along with the children.
        late = retry(functools.partial(partition_ddl.count_and_sum, engine, detached)) != (
            before.rows,
            before.id_sum,
        )
        if late:
            progress(f"{table}: {partition.name} took rows while it was cleared; queueing its files again")
        if entry.children or late:
            after = clear_detached(detached, files=late)
            if after is not None:
                drop(detached, after.rows)
        else:
            drop(detached, before.rows)
    if totals.partitions:
        progress(f"{table}: dropped {totals.partitions} expired partitions holding {totals.rows} rows")
    return totals


def _wholly_expired(engine: Engine, source: Table, target: PartitionedTable) -> bool:
    """Whether every row of a detached partition is older than the table's cutoff today (a longer
    retention set since it was detached may keep some)."""
    with engine.connect() as conn:
        newest = conn.execute(partition_drop.newest(source, target.key)).scalar()
    return newest is None or newest < target.cutoff


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
