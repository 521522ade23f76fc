"""How much each table holds and how old its oldest row is, cheaply enough to run after every cleanup;
and whether retention is being enforced.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, column, func, select, table
from sqlalchemy.engine import Connection, Engine

from .instants import older
from .schema import detections, events, gpu_stats, logs

# asset name -> (table, timestamp column, which retention applies)
TABLES: dict[str, tuple[Table, str, str]] = {
    "events": (events, "started_at", "data"),
    "detections": (detections, "detected_at", "data"),
    "gpu_stats": (gpu_stats, "recorded_at", "data"),
    "logs": (logs, "timestamp", "log"),
}
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


def table_inventory(engine: Engine, name: str) -> TableInventory:
    """Rows and oldest timestamp of one camera table (min() uses the timestamp index)."""
    target, ts, _retention = TABLES[name]
    with engine.connect() as conn:
        rows, estimated = _row_count(conn, target)
        oldest = conn.execute(select(func.min(target.c[ts]))).scalar()
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


def retention_health(engine: Engine, name: str, retention_days: int, now: datetime) -> RetentionHealth:
    """Rows older than retention + 1 day mean one missed daily run (WARN); + 2 days, two (ERROR).

    Just before each daily run the oldest row is up to retention + 1 day old: that is healthy.
    """
    target, ts, _retention = TABLES[name]
    warn_cutoff = now - timedelta(days=retention_days + 1)
    error_cutoff = now - timedelta(days=retention_days + 2)
    with engine.connect() as conn:
        overdue = int(
            conn.execute(
                select(func.count()).select_from(target).where(older(target.c[ts], warn_cutoff))
            ).scalar_one()
        )
        oldest = conn.execute(select(func.min(target.c[ts]))).scalar()
    severity = "OK"
    if overdue and oldest is not None:
        severity = "ERROR" if oldest < error_cutoff else "WARN"
    return RetentionHealth(severity == "OK", severity, overdue, oldest, retention_days + 1.0)
