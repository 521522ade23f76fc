"""How many rows a table holds, cheaply: PostgreSQL's planner estimate for a big table (an exact count(*)
reads every row), an exact count otherwise and on SQLite."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, case, column, func, select, table
from sqlalchemy.engine import Connection

_pg_class = table("pg_class", column("oid"), column("reltuples"), column("relkind"))
_pg_stat_user_tables = table(
    "pg_stat_user_tables",
    column("relid"),
    column("last_vacuum"),
    column("last_autovacuum"),
    column("last_analyze"),
    column("last_autoanalyze"),
)
# Below this many rows (PostgreSQL's estimate) an exact count(*) costs a few milliseconds: count.
EXACT_COUNT_ROWS = 100_000


def row_count(conn: Connection, target: Table, deleted: int, since: datetime | None) -> tuple[int, bool]:
    """(rows, estimated): `deleted` rows a cleanup that started at `since` deleted are taken off an estimate
    that (auto)vacuum or analyze has not refreshed since."""
    # An exact count(*) scans the whole table on PostgreSQL; the planner's estimate is free and is
    # refreshed by (auto)vacuum/analyze. A table never analyzed reports -1: then count.
    if conn.dialect.name == "postgresql":
        # By oid, as the search path resolves the name: pg_class holds one row per schema with that name.
        relation = func.to_regclass(conn.dialect.identifier_preparer.quote(target.name))
        found = conn.execute(
            select(_pg_class.c.reltuples, _pg_class.c.relkind).where(_pg_class.c.oid == relation)
        ).one_or_none()
        estimate, relids = None, select(relation)
        if found is not None and found.relkind == "p":
            # A partitioned table's own reltuples stays -1 (autovacuum analyzes its partitions only): the
            # sum of its leaf partitions', once every one of them has been analyzed.
            leaves = (
                func.pg_partition_tree(relation)
                .table_valued("relid", "parentrelid", "isleaf", "level")
                .render_derived()
            )
            relids = select(leaves.c.relid).where(leaves.c.isleaf)
            # A leaf never analyzed whose file is empty (a pre-created future partition, an empty DEFAULT
            # one) holds nothing, and autovacuum never analyzes it: 0, not a reason to count(*) every time.
            # Its file size, not relpages: relpages stays 0 until the first vacuum/analyze even with rows.
            empty = func.pg_relation_size(_pg_class.c.oid) == 0
            leaf_rows = case(((_pg_class.c.reltuples < 0) & empty, 0), else_=_pg_class.c.reltuples)
            total, lowest = conn.execute(
                select(func.sum(leaf_rows), func.min(leaf_rows)).where(_pg_class.c.oid.in_(relids))
            ).one()
            estimate = total if lowest is not None and lowest >= 0 else None
        elif found is not None:
            estimate = found.reltuples
        if estimate is not None and estimate > EXACT_COUNT_ROWS:
            # The estimate predates a cleanup's deletes until (auto)vacuum or analyze refreshes it. Not on a
            # partitioned table: the rows of partitions the cleanup dropped are already gone from the sum, and
            # the run's count does not tell them from rows deleted in surviving partitions, so subtracting
            # could read ~0; the estimate may run high there until autovacuum analyzes the leaves.
            partitioned = found is not None and found.relkind == "p"
            if (
                deleted
                and since is not None
                and not partitioned
                and not _refreshed_since(conn, relids, since)
            ):
                estimate = max(0, estimate - deleted)
            return int(estimate), True
    return int(conn.execute(select(func.count()).select_from(target)).scalar_one()), False


def _refreshed_since(conn: Connection, relids: Any, since: datetime) -> bool:
    """Whether every relation of `relids` was vacuumed or analyzed at or after `since`."""
    t = _pg_stat_user_tables.c
    last = func.greatest(t.last_vacuum, t.last_autovacuum, t.last_analyze, t.last_autoanalyze)
    refreshed = conn.execute(
        select(func.bool_and(func.coalesce(last >= since, False)), func.count()).where(t.relid.in_(relids))
    ).one()
    return bool(refreshed[0]) and refreshed[1] > 0
