"""Which declared column types can hold a policy rule's time on SQLite, read from the declaration itself,
and, for a numeric one, whether its values do.

SQLite keeps whatever a writer stores, and the time comparison (instants.sqlite_instant) reads a number as a
Julian day, or as unix seconds past the Julian days. A column declared as text, as a date or time stamp,
or with no type holds the camera system's ISO 8601 text; one declared numeric (INTEGER, REAL, NUMERIC...)
may hold unix seconds or Julian days, or something else: a priority of 3 reads as a day in 4713 BC, older
than any cutoff, so a rule naming such a column by mistake would expire every row. A number in it below
1970's Julian day tells them apart (one range query, served by an index on the column where there is one).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import column, func, select, table
from sqlalchemy.engine import Engine
from sqlalchemy.sql.expression import ColumnClause

from .instants import EPOCH_JULIAN_DAY

ACCEPTED = (
    "TEXT, VARCHAR, CHAR, CLOB, DATE, DATETIME, TIMESTAMP, timestamptz or TIMESTAMP WITH TIME ZONE"
    " (ISO 8601 text), or INTEGER, REAL or NUMERIC (unix seconds or Julian days)"
)


def declared_types(engine: Engine, table_name: str) -> dict[str, str]:
    """SQLite: column -> its type as written in CREATE TABLE ('' for none). SQLAlchemy's reflection
    cannot tell them apart: it reflects timestamptz and NUMERIC alike, as NUMERIC."""
    columns = func.pragma_table_info(table_name).table_valued("name", "type")
    with engine.connect() as conn:
        return {name: kind or "" for name, kind in conn.execute(select(columns.c.name, columns.c.type))}


def holds_no_time(declared: str) -> bool:
    """True for a SQLite declaration whose values are no point in time (a blob, a truth value, JSON, a
    time of day); in the order SQLite itself gives a declaration its affinity
    (https://www.sqlite.org/datatype3.html, 3.1)."""
    spelled = declared.upper()
    if "INT" in spelled or any(word in spelled for word in ("CHAR", "CLOB", "TEXT")) or not spelled:
        return False
    if "BLOB" in spelled:
        return True
    if any(word in spelled for word in ("REAL", "FLOA", "DOUB", "DATE", "TIMESTAMP")):
        return False
    return any(word in spelled for word in ("BOOL", "JSON", "TIME"))


def numeric(declared: str) -> bool:
    """A declaration whose values SQLite stores as numbers: times only if they read as such."""
    spelled = declared.upper()
    text_or_date = ("CHAR", "CLOB", "TEXT", "DATE", "TIMESTAMP")
    return bool(spelled) and not holds_no_time(declared) and not any(w in spelled for w in text_or_date)


def refusal(declared: str) -> str:
    """Why a column declared `declared` cannot be a time column on SQLite."""
    return (
        f"is declared {declared}, which holds no point in time. Name the column that holds the row's"
        f" time; on SQLite declare it {ACCEPTED} (or give no type)"
    )


def problem(engine: Engine, table_name: str, column_name: str) -> str | None:
    """SQLite: why this column cannot be a rule's time column, or None: its declaration, or, declared
    numeric, a number in it reading as a time before 1970 (a run would take every such row for long
    expired)."""
    declared = declared_types(engine, table_name).get(column_name, "")
    if holds_no_time(declared):
        return refusal(declared)
    if not numeric(declared):
        return None
    time: ColumnClause[Any] = column(column_name)
    # Not min() read as a time: a sentinel too far back to read as any date (INT64_MIN, -1e300) reads as
    # none, and would hide the small numbers above it. SQLite orders every number below every text, so an
    # index on the column serves this range, and text values never fall in it.
    early = (
        select(time)
        .select_from(table(table_name, time))
        .where(time < EPOCH_JULIAN_DAY, func.typeof(time).in_(["integer", "real"]))
        .order_by(time)
        .limit(1)
    )
    with engine.connect() as conn:
        smallest = conn.execute(early).scalar()
    if smallest is None:
        return None
    return (
        f"is declared {declared} and its smallest value, {smallest}, reads as a time before 1970 or as none"
        " (a number"
        " such as a priority or a score reads as a Julian day: 3 is in 4713 BC), so a run would delete"
        " every such row. Name the column that holds the row's time (unix seconds, Julian days or ISO"
        " 8601 text), or rewrite those values"
    )
