"""How much each table holds and how old its oldest row is, cheaply enough to run after every cleanup;
and whether retention is being enforced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, func, inspect, literal, not_, or_, select, type_coerce
from sqlalchemy.engine import Connection, Engine

from .estimates import row_count
from .index_advice import index_kinds
from .instants import older, sqlite_instant
from .queries import expiring
from .schema import UTCDateTime
from .tables import DATA, Expiry, Registry, RetentionTable, column_of, table_of


@dataclass(frozen=True)
class TableInventory:
    """Rows in a table (exact, or PostgreSQL's planner estimate) and its oldest timestamp."""

    rows: int
    rows_estimated: bool
    oldest: datetime | None

    def age_days(self, now: datetime) -> float | None:
        """Age of the oldest row in days."""
        return None if self.oldest is None else (now - self.oldest).total_seconds() / 86400


# Windows above the horizon widen from a day, doubling, at most this many before one last open search.
_WINDOWS = 16


def _oldest(conn: Connection, entry: RetentionTable, horizon: datetime | None = None) -> datetime | None:
    """The oldest time in the table's first rule's column (`horizon`: about where it is, e.g. the rule's
    cutoff, which lets PostgreSQL read only the block ranges around it)."""
    # The first rule's column: for the built-in tables the one with the time index.
    ts = column_of(entry, entry.rules[0].column)
    if conn.dialect.name != "sqlite":
        if horizon is not None and _brin_only(conn, entry.name, entry.rules[0].column):
            return _as_utc(_oldest_near(conn, ts, horizon))
        return _as_utc(conn.execute(select(func.min(ts))).scalar())
    # Read as stored (one entry of the time index): an ISO text is the oldest day, give or take the
    # spellings of one day. A number (unix time) or text that reads as no instant sorts first and would
    # not parse: then every row is read as an instant, as the purge reads it.
    first = conn.execute(select(type_coerce(func.min(ts), String()))).scalar()
    if first is None:
        return None
    if isinstance(first, str):
        with contextlib.suppress(ValueError):
            return _as_utc(first)
    instant = sqlite_instant(ts)
    oldest = conn.execute(select(func.strftime("%Y-%m-%d %H:%M:%f", func.min(instant)))).scalar()
    return None if oldest is None else datetime.fromisoformat(oldest).replace(tzinfo=UTC)


def _brin_only(conn: Connection, table: str, column: str) -> bool:
    """Whether the indexes leading on `column` are all BRIN (or others that serve ranges, not order): then
    a bare min() reads the whole table and the windows read few block ranges. With a btree min() reads one
    entry; with no index at all each window would be one more full scan."""
    kinds = index_kinds(inspect(conn), table).get(column, set())
    return bool(kinds) and "btree" not in kinds


def _oldest_near(conn: Connection, ts: Any, horizon: datetime) -> Any:
    # A bare min() reads the whole table where the time column has only a BRIN index (the camera system's
    # gpu_stats): BRIN serves range predicates, not order. Rows older than the horizon are few after a
    # cleanup, and lie in few block ranges; when there are none, the oldest row is the first one found in
    # windows above it, each twice as wide as the last, then anything later (a clock set far ahead).
    oldest = conn.execute(select(func.min(ts)).where(older(ts, horizon))).scalar()
    low, width, now = horizon, timedelta(days=1), datetime.now(UTC)
    for _ in range(_WINDOWS):
        if oldest is not None or low > now:
            break
        high = low + width
        oldest = conn.execute(select(func.min(ts)).where(not_(older(ts, low)), older(ts, high))).scalar()
        low, width = high, width * 2
    if oldest is None:
        oldest = conn.execute(select(func.min(ts)).where(not_(older(ts, low)))).scalar()
    return oldest


def _as_utc(value: Any) -> datetime | None:
    if isinstance(value, str):  # a declared table's SQLite column, read without our type
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def oldest_kept(
    engine: Engine, registry: Registry, cutoff: datetime, skip: Iterable[str] = ()
) -> datetime | None:
    """The oldest timestamp, in the columns of the rules that follow RETENTION_DAYS, of a row those rules
    keep at `cutoff` (None: none); tables in `skip` (a run's own days) are left out.

    Emergency mode steps straight to it. Rows still there although older than the cutoff (a detection a
    retained event keeps) are left out: shortening retention past them deletes nothing by itself.
    """
    oldest: datetime | None = None
    with engine.connect() as conn:
        for entry in registry.tables:
            if entry.name in skip:
                continue
            for rule in entry.rules:
                if rule.retention == DATA:
                    found = _oldest_from(conn, column_of(entry, rule.column), cutoff)
                    if found is not None and (oldest is None or found < oldest):
                        oldest = found
    return oldest


def _oldest_from(conn: Connection, ts: Any, cutoff: datetime) -> datetime | None:
    if conn.dialect.name != "sqlite":
        # NOT (ts < cutoff) is planned as ts >= cutoff: min() reads one entry of the time index.
        return _as_utc(conn.execute(select(func.min(ts)).where(not_(older(ts, cutoff)))).scalar())
    # SQLite's text min() would misorder spellings of one day ('T' or ' ', offsets), and a step taken from
    # a row younger than the oldest would delete more than the oldest data: compared as one UTC spelling.
    # Every spelling of an instant at or after the cutoff sorts above the date two days before it (offsets
    # reach 14:59), or is a number (unix time), which sorts below all text: the time index narrows the
    # scan to the retained rows.
    since = literal((cutoff.astimezone(UTC).date() - timedelta(days=2)).isoformat(), String())
    instant = sqlite_instant(ts)
    first = conn.execute(
        select(func.strftime("%Y-%m-%d %H:%M:%f", func.min(instant))).where(
            or_(ts >= since, ts < literal("", String())),
            instant >= func.julianday(literal(cutoff, UTCDateTime())),
        )
    ).scalar()
    return None if first is None else datetime.fromisoformat(first).replace(tzinfo=UTC)


def table_inventory(
    engine: Engine,
    entry: RetentionTable,
    deleted: int = 0,
    since: datetime | None = None,
    horizon: datetime | None = None,
) -> TableInventory:
    """Rows and oldest timestamp of one retention table.

    `deleted`: rows a cleanup that started at `since` deleted, taken off a PostgreSQL estimate read before
    them (exact counts need nothing). `horizon`: the cutoff of the table's first rule, near which its
    oldest row is looked for first.
    """
    target = table_of(entry)
    with engine.connect() as conn:
        rows, estimated = row_count(conn, target, deleted, since)
        oldest = _oldest(conn, entry, horizon)
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
    engine: Engine, registry: Registry, table: str, data_days: int, log_days: int, now: datetime
) -> RetentionHealth:
    """Rows a run one day ago should have deleted mean one missed daily run (WARN); two days ago, two
    (ERROR). Just before each daily run the oldest row is up to retention + 1 day old: that is healthy.

    Counted with the purge's own predicate (every rule of the table, and for detections the keep rule),
    so a row kept on purpose (an old detection a retained event links) is never overdue.
    """
    entry = registry[table]
    one_run_ago = Expiry.at(registry, now - timedelta(days=1), data_days, log_days)
    two_runs_ago = Expiry.at(registry, now - timedelta(days=2), data_days, log_days)
    with engine.connect() as conn:
        overdue = _count_expired(conn, one_run_ago, table)
        severity = "OK"
        if overdue:
            severity = "ERROR" if _count_expired(conn, two_runs_ago, table) else "WARN"
        oldest = _oldest(conn, entry, one_run_ago.cutoff(table))
    allowed = (now - one_run_ago.cutoff(table)).total_seconds() / 86400
    return RetentionHealth(severity == "OK", severity, overdue, oldest, allowed)


def _count_expired(conn: Connection, expiry: Expiry, table: str) -> int:
    if conn.dialect.name != "sqlite" and not _any_older(conn, expiry, table):
        return 0
    # Within the id span the purge would walk, found through the time indexes: the keep rule's look-ups
    # then run on the few candidate rows, not on every row of a big table.
    span = (
        expiring.select_expired_detection_id_span(expiry)
        if table == "detections"
        else expiring.select_expired_id_span(expiry, table)
    )
    low, high = conn.execute(span).one()
    if low is None:
        return 0
    target = table_of(expiry.registry[table])
    in_span = target.c.id.between(low, high)
    statement = select(func.count()).select_from(target).where(in_span, expiring.expired(expiry, table))
    return int(conn.execute(statement).scalar_one())


def _any_older(conn: Connection, expiry: Expiry, table: str) -> bool:
    """Whether a row of `table` is before one of its rules' cutoffs (for detections, or of events, whose
    expired rows take their detections): without one nothing is expired. Asked one rule at a time with a
    range predicate, which a BRIN index serves (the camera system's gpu_stats has only that); the id span
    would walk the primary key through every retained row to find that none is older."""
    for name in (table, "events") if table == "detections" else (table,):
        entry = expiry.registry[name]
        for column_name, cutoff in expiry.rules_of(name):
            ts = column_of(entry, column_name)
            if conn.execute(select(func.min(ts)).where(older(ts, cutoff))).scalar() is not None:
                return True
    return False
