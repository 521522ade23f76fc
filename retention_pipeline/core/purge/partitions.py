"""PostgreSQL: a range-partitioned table without files, children or keep rule loses its wholly expired
partitions whole (detach, count, drop), as TimescaleDB's drop_chunks and pg_partman's retention do:
a catalogue change instead of a delete per row, and no dead tuples for vacuum.

Only plain tables qualify (the camera system's `logs` and `gpu_stats`, and policy tables without `files:`)
and only when nothing references them by foreign key; a partition qualifies when it is a leaf whose upper
bound is at or before the cutoff. The default partition, sub-partitioned partitions and the partition the
cutoff falls in are left to the batched delete.

The detach needs a brief ACCESS EXCLUSIVE lock on the parent: it asks with a short lock_timeout, so a
camera writer queued behind the request waits at most that long, and retries with backoff; a partition
whose detach keeps timing out is left to the batched delete. In the detach's transaction the partition is
renamed with a prefix of ours, so a run killed before the drop leaves a table the next run recognises,
counts and drops.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import MetaData, Table, func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import DropTable

from ..db import write_transaction
from ..tables import Expiry

T = TypeVar("T")
DETACHED_PREFIX = "retention_detached_"
DETACH_LOCK_TIMEOUT_MS = 50
DETACH_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)

_PARTITION_KEY = text(
    "SELECT p.partstrat, array_length(p.partattrs::int2[], 1), a.attname"
    " FROM pg_partitioned_table p"
    " JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]"
    " WHERE p.partrelid = to_regclass(:parent)"
)
# Each leaf partition with its upper bound as a timestamp (NULL for DEFAULT, MAXVALUE or a sub-partitioned
# partition, none of which is dropped whole).
_PARTITIONS = text(
    "SELECT c.relname,"
    " CASE WHEN c.relkind = 'r' THEN"
    "  CAST((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']*)''\\)'))[1] AS timestamptz)"
    " END AS upper_bound"
    " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = to_regclass(:parent) AND pg_table_is_visible(c.oid)"
)
_REFERENCED = text(
    "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid = to_regclass(:parent)"
)
_LEFT_BEHIND = text(
    "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE :prefix AND pg_table_is_visible(oid)"
)
_SET_LOCK_TIMEOUT = text("SELECT set_config('lock_timeout', :timeout, true)")


@dataclass(frozen=True)
class Dropped:
    """What dropping partitions did: rows they held, partitions dropped, detaches given up, and the
    longest of its transactions."""

    rows: int = 0
    partitions: int = 0
    left_to_batches: int = 0
    longest_s: float = 0.0


def droppable(engine: Engine, expiry: Expiry, table: str, delete_images: bool) -> bool:
    """Whether `table` may lose whole partitions: PostgreSQL, one rule, no files, children or keep rule,
    range-partitioned on that rule's column, and referenced by no foreign key."""
    entry = expiry.registry[table]
    rules = expiry.rules_of(table)
    if engine.dialect.name != "postgresql" or len(rules) != 1 or entry.media(delete_images) or entry.children:
        return False
    if entry.keep_rule or len(_detached_prefix(table)) > 50:  # our name for a detached one must fit in 63
        return False
    with engine.connect() as conn:
        key = conn.execute(_PARTITION_KEY, {"parent": table}).first()
        referenced = conn.execute(_REFERENCED, {"parent": table}).scalar_one()
    return key is not None and key[0] == "r" and key[1] == 1 and key[2] == rules[0][0] and not referenced


def expired_partitions(engine: Engine, table: str, cutoff: datetime) -> list[str]:
    """The leaf partitions of `table` whose whole range lies before `cutoff`, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(_PARTITIONS, {"parent": table}).all()
    expired = [(upper, name) for name, upper in rows if upper is not None and upper <= cutoff]
    return [name for _upper, name in sorted(expired)]


def _quoted(conn: Connection, name: str) -> str:
    # DDL has no bound parameters for names: SQLAlchemy's own quoting makes each one a single identifier.
    return conn.dialect.identifier_preparer.quote(name)


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    return work(), time.perf_counter() - started


def _detach(engine: Engine, table: str, partition: str) -> tuple[str | None, float]:
    """Detach `partition` under a short lock_timeout, renaming it ours: its new name (None when the parent
    stayed busy through every retry), and the longest attempt's transaction."""
    ours = (_detached_prefix(table) + partition)[:63]
    longest = 0.0
    for delay in (*DETACH_RETRY_DELAYS_S, None):
        started = time.perf_counter()
        try:
            with write_transaction(engine) as conn:
                conn.execute(_SET_LOCK_TIMEOUT, {"timeout": f"{DETACH_LOCK_TIMEOUT_MS}ms"})
                parent, child = _quoted(conn, table), _quoted(conn, partition)
                conn.execute(text(f"ALTER TABLE {parent} DETACH PARTITION {child}"))
                conn.execute(text(f"ALTER TABLE {child} RENAME TO {_quoted(conn, ours)}"))
            return ours, max(longest, time.perf_counter() - started)
        except DBAPIError as exc:
            if getattr(exc.orig, "pgcode", None) != "55P03":  # anything but lock_not_available
                raise
            longest = max(longest, time.perf_counter() - started)
            if delay is None:
                return None, longest
            time.sleep(delay)
    return None, longest


def _detached_prefix(table: str) -> str:
    return f"{DETACHED_PREFIX}{table}__"


def _count_and_drop(engine: Engine, detached: str) -> int:
    """Count a detached partition's rows (nothing writes to it any more), then drop it."""
    partition = Table(detached, MetaData())
    with write_transaction(engine) as conn:
        rows = int(conn.execute(select(func.count()).select_from(partition)).scalar_one())
        conn.execute(DropTable(partition))
    return rows


def drop_expired_partitions(
    engine: Engine, expiry: Expiry, table: str, progress: Callable[[str], None]
) -> Dropped:
    """Drop `table`'s wholly expired partitions, and any a killed run detached but did not drop."""
    pattern = _detached_prefix(table).replace("_", "\\_") + "%"
    with engine.connect() as conn:
        left_behind = list(conn.execute(_LEFT_BEHIND, {"prefix": pattern}).scalars())
    rows, dropped, given_up, longest = 0, 0, 0, 0.0
    for name in left_behind:
        held, seconds = _timed(functools.partial(_count_and_drop, engine, name))
        rows, dropped, longest = rows + held, dropped + 1, max(longest, seconds)
    for partition in expired_partitions(engine, table, expiry.cutoff(table)):
        detached, seconds = _detach(engine, table, partition)
        longest = max(longest, seconds)
        if detached is None:
            given_up += 1
            progress(f"{table}: {partition} stayed busy; its rows go through the batched delete")
            continue
        held, seconds = _timed(functools.partial(_count_and_drop, engine, detached))
        rows, dropped, longest = rows + held, dropped + 1, max(longest, seconds)
    if dropped:
        progress(f"{table}: dropped {dropped} expired partitions holding {rows} rows")
    return Dropped(rows, dropped, given_up, longest)
