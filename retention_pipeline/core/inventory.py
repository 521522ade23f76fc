"""How much each table holds and how old its oldest row is, cheaply enough to run after every cleanup;
and whether retention is being enforced.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, column, func, select, table
from sqlalchemy.engine import Connection, Engine

from .instants import older
from .tables import RetentionTable, column_of, table_of

_pg_class = table("pg_class", column("relname"), column("reltuples"))


@dataclass(frozen=True)
class TableInventory:
    """Rows in a table (exact, or PostgreSQL's planner estimate) and its oldest timestamp."""

    rows: int
    rows_estimated: bool
    oldest: datetime | None

    def age_days(self, now: datetime) -> float | None:
        """Age of the oldest row in days."""
        return None if self.oldest is None else (now - self.oldest).total_seconds() / 86400


def _row_count(conn: Connection, target: Table) -> tuple[int, bool]:
    # An exact count(*) scans the whole table on PostgreSQL; the planner's estimate is free and is
    # refreshed by (auto)vacuum/analyze. A table never analyzed reports -1: then count.
    if conn.dialect.name == "postgresql":
        estimate = conn.execute(
            select(_pg_class.c.reltuples).where(_pg_class.c.relname == target.name)
        ).scalar()
        if estimate is not None and estimate >= 0:
            return int(estimate), True
    return int(conn.execute(select(func.count()).select_from(target)).scalar_one()), False


def _oldest(conn: Connection, entry: RetentionTable) -> datetime | None:
    # The first rule's column: for the built-in tables the one with the time index.
    value = conn.execute(select(func.min(column_of(entry, entry.rules[0].column)))).scalar()
    if isinstance(value, str):  # a declared table's SQLite column, read without our type
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def table_inventory(engine: Engine, entry: RetentionTable) -> TableInventory:
    """Rows and oldest timestamp of one retention table (min() uses the timestamp index)."""
    target = table_of(entry)
    with engine.connect() as conn:
        rows, estimated = _row_count(conn, target)
        oldest = _oldest(conn, entry)
    return TableInventory(rows, estimated, oldest)


@dataclass(frozen=True)
class RetentionHealth:
    """The verdict of the retention_enforced check for one table."""

    passed: bool
    severity: str  # "OK", "WARN" or "ERROR"
    overdue_rows: int
    oldest: datetime | None
    allowed_age_days: float

    def metadata(self) -> dict[str, Any]:
        """Numbers for the check's metadata."""
        return {
            "overdue_rows": self.overdue_rows,
            "oldest": self.oldest.isoformat() if self.oldest else "none",
            "allowed_age_days": self.allowed_age_days,
        }


def retention_health(
    engine: Engine, entry: RetentionTable, retention_days: int, now: datetime
) -> RetentionHealth:
    """Rows older than retention + 1 day mean one missed daily run (WARN); + 2 days, two (ERROR).

    Just before each daily run the oldest row is up to retention + 1 day old: that is healthy.
    """
    target, ts = table_of(entry), column_of(entry, entry.rules[0].column)
    warn_cutoff = now - timedelta(days=retention_days + 1)
    error_cutoff = now - timedelta(days=retention_days + 2)
    with engine.connect() as conn:
        overdue = int(
            conn.execute(select(func.count()).select_from(target).where(older(ts, warn_cutoff))).scalar_one()
        )
        oldest = _oldest(conn, entry)
    severity = "OK"
    if overdue and oldest is not None:
        severity = "ERROR" if oldest < error_cutoff else "WARN"
    return RetentionHealth(severity == "OK", severity, overdue, oldest, retention_days + 1.0)
