"""Which declared column types can hold a policy rule's time on SQLite, read from the declaration itself.

SQLite keeps whatever a writer stores, and the time comparison (instants.sqlite_instant) reads a number as a
Julian day: a priority of 3 is a day in 4713 BC, older than any cutoff, so a rule naming a numeric column
by mistake would expire every row. A column declared numeric holds numbers; one declared as text, as a
date or time stamp, or with no type holds the camera system's ISO 8601 text.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

ACCEPTED = "TEXT, VARCHAR, CHAR, CLOB, DATE, DATETIME, TIMESTAMP, timestamptz or TIMESTAMP WITH TIME ZONE"


def declared_types(engine: Engine, table: str) -> dict[str, str]:
    """SQLite: column -> its type as written in CREATE TABLE ('' for none). SQLAlchemy's reflection
    cannot tell them apart: it reflects timestamptz and NUMERIC alike, as NUMERIC."""
    columns = func.pragma_table_info(table).table_valued("name", "type")
    with engine.connect() as conn:
        return {name: kind or "" for name, kind in conn.execute(select(columns.c.name, columns.c.type))}


def holds_no_time(declared: str) -> bool:
    """True for a SQLite declaration whose values are numbers or no time at all; in the order SQLite
    itself gives a declaration its affinity (https://www.sqlite.org/datatype3.html, 3.1)."""
    spelled = declared.upper()
    if "INT" in spelled:
        return True  # INTEGER, BIGINT, ...: whole numbers
    if any(word in spelled for word in ("CHAR", "CLOB", "TEXT")) or not spelled:
        return False  # text, or anything the writer gives
    if any(word in spelled for word in ("BLOB", "REAL", "FLOA", "DOUB")):
        return True
    # NUMERIC affinity: the time declarations, or NUMERIC, DECIMAL, BOOLEAN, JSON, TIME (a time of day)...
    return "DATE" not in spelled and "TIMESTAMP" not in spelled


def refusal(declared: str) -> str:
    """Why a column declared `declared` cannot be a time column on SQLite."""
    return (
        f"is declared {declared}, which holds numbers or no point in time: SQLite would read a small"
        " number (a priority, a score) as a Julian day thousands of years ago and expire every row. Name"
        f" the column that holds the row's time; on SQLite declare it {ACCEPTED} (or give no type),"
        " holding ISO 8601 text as the camera system writes it"
    )
