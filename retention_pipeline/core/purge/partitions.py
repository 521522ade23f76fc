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

The detach needs a brief ACCESS EXCLUSIVE lock on the parent: it asks with a short lock_timeout, so a
camera writer queued behind the request waits at most that long, and retries with backoff; a partition
whose detach keeps timing out, or that a new row references by then, is left to the batched delete. In
the detach's transaction the partition is renamed with a prefix of ours, so a run killed before the drop
leaves a table the next run recognises, counts and drops.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import ColumnElement, MetaData, Table, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import DropTable

from ..db import write_transaction
from ..queries import expiring, partition_drop
from ..queries.partition_drop import ForeignKey
from ..tables import Expiry

if TYPE_CHECKING:
    from .loop import BatchSizer

T = TypeVar("T")
Progress = Callable[[str], None]
DETACHED_PREFIX = "retention_detached_"
DETACH_LOCK_TIMEOUT_MS = 50
DETACH_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)
# Why a detach is given up, by pgcode: the parent stayed locked (lock_not_available), or a writer made a
# row reference the partition after it was cleared (foreign_key_violation, raised by the detach itself).
_GIVEN_UP = {"55P03": "stayed busy", "23503": "is referenced again"}
_ON_DELETE = {"c": "CASCADE", "n": "SET NULL"}

_PARTITION_KEY = text(
    "SELECT p.partstrat, array_length(p.partattrs::int2[], 1), a.attname"
    " FROM pg_partitioned_table p"
    " JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]"
    " WHERE p.partrelid = to_regclass(:parent)"
)
# Each leaf partition with its bounds as timestamps (upper NULL for DEFAULT, MAXVALUE or a sub-partitioned
# partition, none of which is dropped whole; lower NULL for MINVALUE).
_PARTITIONS = text(
    "SELECT c.relname,"
    " CAST((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']*)''\\)'))[1] AS timestamptz),"
    " CASE WHEN c.relkind = 'r' THEN"
    "  CAST((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']*)''\\)'))[1] AS timestamptz)"
    " END"
    " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = to_regclass(:parent) AND pg_table_is_visible(c.oid)"
)
# Every foreign key referencing the parent (not its per-partition clones), its columns in key order.
_FOREIGN_KEYS = text(
    "SELECT c.conrelid::regclass::text, c.confdeltype,"
    " ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)"
    "  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),"
    " ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)"
    "  JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)"
    " FROM pg_constraint c"
    " WHERE c.contype = 'f' AND c.confrelid = to_regclass(:parent) AND c.conparentid = 0"
)
_LEFT_BEHIND = text(
    "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE :prefix AND pg_table_is_visible(oid)"
)
_SET_LOCK_TIMEOUT = text("SELECT set_config('lock_timeout', :timeout, true)")


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


@dataclass(frozen=True)
class Partition:
    """One leaf partition and its range [lower, upper) (lower None: MINVALUE)."""

    name: str
    lower: datetime | None
    upper: datetime


@dataclass(frozen=True)
class PartitionedTable:
    """A retention table whose wholly expired partitions may go whole."""

    table: str
    key: str  # the rule's time column the table is partitioned on
    cutoff: datetime
    foreign_keys: tuple[ForeignKey, ...]


def partitioned(engine: Engine, expiry: Expiry, table: str) -> PartitionedTable | None:
    """`table` when its partitions may go whole: PostgreSQL, range-partitioned on one of its rules'
    columns, and referenced by no foreign key but ON DELETE CASCADE or SET NULL ones."""
    if engine.dialect.name != "postgresql" or len(_detached_prefix(table)) > 50:  # our names fit in 63
        return None
    with engine.connect() as conn:
        key = conn.execute(_PARTITION_KEY, {"parent": table}).first()
        references = conn.execute(_FOREIGN_KEYS, {"parent": table}).all()
    if key is None or key[0] != "r" or key[1] != 1:
        return None
    cutoffs = [cutoff for column, cutoff in expiry.rules_of(table) if column == key[2]]
    if not cutoffs or any(action not in _ON_DELETE for _child, action, _cols, _parent_cols in references):
        return None
    foreign_keys = tuple(
        ForeignKey(child, tuple(cols), tuple(parent_cols), _ON_DELETE[action])
        for child, action, cols, parent_cols in references
    )
    # Several rules on the key's column: a row expires when any says so, so the latest cutoff decides.
    return PartitionedTable(table, key[2], max(cutoffs), foreign_keys)


def expired_partitions(engine: Engine, table: str, cutoff: datetime) -> list[Partition]:
    """The leaf partitions of `table` whose whole range lies before `cutoff`, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(_PARTITIONS, {"parent": table}).all()
    expired = [Partition(name, low, up) for name, low, up in rows if up is not None and up <= cutoff]
    return sorted(expired, key=lambda partition: partition.upper)


def _quoted(conn: Connection, name: str) -> str:
    # DDL has no bound parameters for names: SQLAlchemy's own quoting makes each one a single identifier.
    return conn.dialect.identifier_preparer.quote(name)


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    return work(), time.perf_counter() - started


@dataclass
class _Cleared:
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
) -> _Cleared:
    """Queue the files of `rows` and remove what hangs off them, a chunk of their ids per transaction,
    chunks sized like batches (to the transaction target)."""
    entry = expiry.registry[target.table]
    media = entry.media(delete_images)
    cleared, after_id = _Cleared(), 0
    queued_at = datetime.now(UTC)
    while True:
        started = time.perf_counter()
        with write_transaction(engine) as conn:
            end = partition_drop.next_chunk_end(expiry, target.table, rows, after_id, sizer.size)
            last_id = conn.execute(end).scalar()
            chunk = partition_drop.chunk(expiry, target.table, rows, after_id, last_id)
            if media:
                queue = partition_drop.queue_files_of_rows(expiry, target.table, media, chunk, queued_at)
                cleared.queued += conn.execute(queue).scalar_one()
            for child in entry.children:
                gone = conn.execute(
                    partition_drop.delete_children_of_rows(expiry, target.table, child, chunk)
                )
                cleared.children += gone.rowcount if child.counted else 0
            for key in target.foreign_keys:
                conn.execute(partition_drop.apply_on_delete(expiry, target.table, key, chunk))
        seconds = time.perf_counter() - started
        cleared.longest_s = max(cleared.longest_s, seconds)
        sizer.record(seconds)
        if last_id is None:
            return cleared
        after_id = last_id


def _detach(engine: Engine, table: str, partition: str) -> tuple[str | None, str, float]:
    """Detach `partition` under a short lock_timeout, renaming it ours: its new name (None when given up,
    with why), and the longest attempt's transaction."""
    ours = (_detached_prefix(table) + partition)[:63]
    longest, why = 0.0, ""
    for delay in (*DETACH_RETRY_DELAYS_S, None):
        started = time.perf_counter()
        try:
            with write_transaction(engine) as conn:
                conn.execute(_SET_LOCK_TIMEOUT, {"timeout": f"{DETACH_LOCK_TIMEOUT_MS}ms"})
                parent, child = _quoted(conn, table), _quoted(conn, partition)
                conn.execute(text(f"ALTER TABLE {parent} DETACH PARTITION {child}"))
                conn.execute(text(f"ALTER TABLE {child} RENAME TO {_quoted(conn, ours)}"))
            return ours, "", max(longest, time.perf_counter() - started)
        except DBAPIError as exc:
            why = _GIVEN_UP.get(getattr(exc.orig, "pgcode", None) or "", "")
            if not why:
                raise
            longest = max(longest, time.perf_counter() - started)
            if delay is None or why != _GIVEN_UP["55P03"]:
                return None, why, longest
            time.sleep(delay)
    return None, why, longest


def _detached_prefix(table: str) -> str:
    return f"{DETACHED_PREFIX}{table}__"


def _count_and_drop(engine: Engine, detached: str) -> int:
    """Count a detached partition's rows (nothing writes to it any more), then drop it."""
    partition = Table(detached, MetaData())
    with write_transaction(engine) as conn:
        rows = int(conn.execute(select(func.count()).select_from(partition)).scalar_one())
        conn.execute(DropTable(partition))
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
) -> Dropped:
    """Drop the table's wholly expired partitions, and any a killed run detached but did not drop."""
    table = target.table
    pattern = _detached_prefix(table).replace("_", "\\_") + "%"
    with engine.connect() as conn:
        left_behind = list(conn.execute(_LEFT_BEHIND, {"prefix": pattern}).scalars())
    rows, dropped, given_up, longest = 0, 0, 0, 0.0
    children, queued = 0, 0
    for name in left_behind:
        held, seconds = _timed(functools.partial(_count_and_drop, engine, name))
        rows, dropped, longest = rows + held, dropped + 1, max(longest, seconds)
    for partition in expired_partitions(engine, table, target.cutoff):
        in_partition = partition_drop.rows_of_partition(
            expiry, table, target.key, partition.lower, partition.upper
        )
        if _protected(engine, expiry, table, in_partition):
            given_up += 1
            progress(f"{table}: {partition.name} holds rows the keep rule protects; they go through batches")
            continue
        cleared = _clear_the_way(engine, expiry, target, in_partition, delete_images, sizer)
        children, queued = children + cleared.children, queued + cleared.queued
        detached, why, seconds = _detach(engine, table, partition.name)
        longest = max(longest, cleared.longest_s, seconds)
        if detached is None:
            given_up += 1
            progress(f"{table}: {partition.name} {why}; its rows go through the batched delete")
            continue
        held, seconds = _timed(functools.partial(_count_and_drop, engine, detached))
        rows, dropped, longest = rows + held, dropped + 1, max(longest, seconds)
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
