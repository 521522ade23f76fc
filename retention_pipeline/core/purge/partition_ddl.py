"""PostgreSQL: the statements that take a partition out of its table, and the detached table's count and
drop. Each is its own short transaction; only the DETACH asks for the parent, under a short lock_timeout,
retried with backoff.

A detached partition is renamed with a prefix of ours in the detach's transaction: a run killed before
the drop leaves a table the next run recognises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Column, Integer, MetaData, Table, func, inspect, select, text, true
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import DropTable

from ..db import write_transaction
from ..queries import partition_drop
from ..queries.purge_batch import commit_without_waiting
from ..tables import MediaColumn, Registry
from .partition_catalog import Partition, detached_prefix

DETACH_LOCK_TIMEOUT_MS = 30
DETACH_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)
# The DETACH statement, its wait for the parent and its own foreign-key check included, must end within
# this, or the partition is left to the batches: a camera insert queued behind it waits about as long.
DETACH_STATEMENT_TIMEOUT_MS = 60
# Why a detach is given up, by pgcode: the parent or the partition stayed locked (lock_not_available, or a
# deadlock with a writer), the detach's foreign-key check ran too long (query_canceled), a writer made a
# row reference the partition after it was cleared (foreign_key_violation, raised by the detach itself),
# or our name for it is taken (duplicate_table); or it is gone (undefined_table, also raised for "is not a
# partition of"): the camera's own partition manager dropped or detached it since it was listed.
BUSY = "stayed busy"
GONE = "is no longer a partition of the table (dropped or detached by someone else)"
_GIVEN_UP = {
    "55P03": BUSY,
    "40P01": BUSY,
    "57014": BUSY,
    "23503": "is referenced again",
    "42P07": "cannot take our name for it, which another table has",
    "42P01": GONE,
}
# Not one attached again (by hand, under the name we gave it): that is an ordinary partition once more.
_LEFT_BEHIND = text(
    "SELECT relname FROM pg_class WHERE relkind = 'r' AND NOT relispartition AND relname LIKE :prefix"
    " AND pg_table_is_visible(oid)"
)
_OWN_FOREIGN_KEYS = text(
    "SELECT c.conname FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid"
    " WHERE r.relname = :name AND pg_table_is_visible(r.oid) AND c.contype = 'f'"
)
_SET_LOCK_TIMEOUT = text("SELECT set_config('lock_timeout', :timeout, true)")
_SET_STATEMENT_TIMEOUT = text("SELECT set_config('statement_timeout', :timeout, true)")


def _identifier(name: str) -> str:
    """`name` as one quoted identifier inside text(): DDL takes no bound parameter for a name. Quotes are
    doubled, and a colon is escaped so that text() does not read a bound parameter in it (text() itself
    doubles a percent sign for psycopg2)."""
    return '"' + name.replace('"', '""').replace(":", "\\:") + '"'


def _why_given_up(exc: DBAPIError) -> str:
    """Why the statement failed, when that is a reason to leave the partition to the batches ("" if not)."""
    return _GIVEN_UP.get(getattr(exc.orig, "pgcode", None) or "", "")


def left_behind(engine: Engine, table: str, tables: Iterable[str] = ()) -> list[str]:
    """The partitions of `table` a killed run detached and did not drop (not those of another of
    `tables` whose name starts like ours: `logs__x`'s would otherwise pass for `logs`')."""
    ours = detached_prefix(table)
    theirs = [detached_prefix(other) for other in tables if other != table]
    theirs = [prefix for prefix in theirs if prefix.startswith(ours)]
    with engine.connect() as conn:
        names = conn.execute(_LEFT_BEHIND, {"prefix": ours.replace("_", "\\_") + "%"}).scalars()
        return [name for name in names if not any(name.startswith(prefix) for prefix in theirs)]


def detached_media_columns(engine: Engine, registry: Registry) -> list[tuple[str, str]]:
    """(table, column) of each media column of each partition a killed run detached and did not drop.

    Its rows are out of their table but kept whole until someone attaches or drops it; its files, which
    the killed run had queued before the detach, must stay as long as its rows do.
    """
    found = []
    for entry in registry.tables:
        for name in left_behind(engine, entry.name, registry.names) if entry.files else ():
            found += [(name, media.column) for media in its_media(engine, name, entry.files)]
    return found


def its_media(engine: Engine, name: str, media: tuple[MediaColumn, ...]) -> tuple[MediaColumn, ...]:
    """The media columns a detached partition has: a column the parent gained, or a policy named, after
    the detach is not among them."""
    has = {column["name"] for column in inspect(engine).get_columns(name)}
    return tuple(m for m in media if m.column in has)


@contextmanager
def _short_ddl(engine: Engine) -> Iterator[Connection]:
    """A DDL transaction that asks for its locks under DETACH_LOCK_TIMEOUT_MS and whose COMMIT does not
    wait for the disk (the parent goes sooner; see durability.py)."""
    with write_transaction(engine) as conn:
        conn.execute(select(commit_without_waiting()))
        conn.execute(_SET_LOCK_TIMEOUT, {"timeout": f"{DETACH_LOCK_TIMEOUT_MS}ms"})
        yield conn


def _name_for(table: str, partition: str) -> str:
    """Our name for a detached partition, cut to PostgreSQL's 63 bytes (not characters)."""
    return (detached_prefix(table) + partition).encode()[:63].decode(errors="ignore")


def detach(
    engine: Engine, table: str, partition: Partition, check: Callable[[], str]
) -> tuple[str | None, str, float]:
    """Detach the partition and rename it ours: its new name (None when given up, with why) and the
    longest attempt's transaction. `check` runs before each attempt, right before its transaction: a
    reason it returns gives the partition up.

    The parent is held for the DETACH statement only, asked for under a short lock_timeout, and the
    detach's own foreign-key check must end within DETACH_STATEMENT_TIMEOUT_MS, so a camera writer waits
    at most about that long.
    """
    ours = _name_for(table, partition.name)
    longest = 0.0
    for delay in (*DETACH_RETRY_DELAYS_S, None):
        if why := check():
            return None, why, longest
        started = time.perf_counter()
        try:
            with _short_ddl(engine) as conn:
                conn.execute(_SET_STATEMENT_TIMEOUT, {"timeout": f"{DETACH_STATEMENT_TIMEOUT_MS}ms"})
                child = _identifier(partition.name)
                conn.execute(text(f"ALTER TABLE {_identifier(table)} DETACH PARTITION {child}"))
                conn.execute(text(f"ALTER TABLE {child} RENAME TO {_identifier(ours)}"))
            return ours, "", max(longest, time.perf_counter() - started)
        except DBAPIError as exc:
            why = _why_given_up(exc)
            if not why:
                raise
            longest = max(longest, time.perf_counter() - started)
            if delay is None or why != BUSY:
                return None, why, longest
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns")


def count(engine: Engine, name: str) -> int:
    """The rows of a detached partition (exact: nothing writes to it any more)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Table(name, MetaData()))).scalar_one())


def count_and_sum(engine: Engine, name: str) -> tuple[int, int]:
    """The rows of a detached partition and the sum of their ids."""
    detached = Table(name, MetaData(), Column("id", Integer))
    with engine.connect() as conn:
        rows, id_sum = conn.execute(partition_drop.count_rows(detached, true())).one()
    return int(rows), int(id_sum)


def _drop_table(name: str) -> DropTable:
    # IF EXISTS: repeated after a connection lost once its COMMIT was sent, the drop finds it done.
    return DropTable(Table(name, MetaData()), if_exists=True)


def drop(engine: Engine, name: str) -> tuple[bool, float]:
    """Drop a detached partition: whether it is gone (not when a table it references stayed busy: the
    next run drops it) and its longest transaction's seconds.

    Its foreign keys go first, in a transaction of their own: dropping one locks the table it references
    (ACCESS EXCLUSIVE, against readers and the camera's inserts alike) until the COMMIT, and the DROP
    TABLE's COMMIT waits for the disk and unlinks the partition's files. Without foreign keys (logs,
    gpu_stats) the table goes in the transaction that looked for them."""
    longest, started = 0.0, time.perf_counter()
    try:
        with _short_ddl(engine) as conn:
            keys = conn.execute(_OWN_FOREIGN_KEYS, {"name": name}).scalars().all()
            if keys:
                drops = ", ".join(f"DROP CONSTRAINT {_identifier(key)}" for key in keys)
                conn.execute(text(f"ALTER TABLE {_identifier(name)} {drops}"))
            else:
                conn.execute(_drop_table(name))
        longest = time.perf_counter() - started
        if keys:
            started = time.perf_counter()
            with _short_ddl(engine) as conn:
                conn.execute(_drop_table(name))
            longest = max(longest, time.perf_counter() - started)
        return True, longest
    except DBAPIError as exc:
        if _why_given_up(exc) == BUSY:
            return False, max(longest, time.perf_counter() - started)
        raise
