"""Comparing stored timestamps as instants on every engine, in a form the time indexes can serve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Float, String, and_, case, func, literal, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .schema import UTCDateTime

# 1970-01-01 as a Julian day. No camera system wrote a time before it: a policy time column holding one holds
# something else (a priority, a score), which a run would take for long expired.
EPOCH_JULIAN_DAY = 2440587.5


class older_than(FunctionElement[bool]):  # lower case: it reads like the SQL function it stands for
    """`column < cutoff`, compared as instants on every engine. The third clause, text no stored spelling
    of an instant before the cutoff can reach, lets SQLite's time indexes narrow the scan."""

    type = Boolean()
    inherit_cache = True
    name = "older_than"
    # A comparison already: without this, SQLite (no native boolean) gets "(...) = 1", which no index
    # can serve.
    _is_implicitly_boolean = True


@compiles(older_than)
def _older_than_default(element: older_than, compiler: SQLCompiler, **kw: Any) -> str:
    column, cutoff, _text_bound = list(element.clauses)
    return "(" + compiler.process(column < cutoff, **kw) + ")"


@compiles(older_than, "sqlite")
def _older_than_sqlite(element: older_than, compiler: SQLCompiler, **kw: Any) -> str:
    # julianday() of a column cannot use its index, so on its own "nothing expired" read a whole time
    # index (0.33 s for detections at 1M); the plain text comparison in front of it can, and only ever
    # drops rows the instant comparison would keep (_text_bound).
    # A value read as no instant at all ('', '2026-05-17 03:00:00 UTC') gives NULL, and must compare as
    # "not older" (false), never unknown: NOT (unknown) is unknown too, so a retained event whose time
    # cannot be read would stop protecting the detections it links, and they would be deleted. Such a
    # row is never deleted by its own rule either; doctor counts them (unreadable()).
    column, cutoff, text_bound = list(element.clauses)
    exact = (sqlite_instant(column) < func.julianday(cutoff)).is_(true())
    return "(" + compiler.process(and_(column < text_bound, exact), **kw) + ")"


def sqlite_instant(column: Any) -> ColumnElement[float]:
    """SQLite: the Julian day of a stored time, whatever spelling its writer chose; NULL where the value
    reads as no instant.

    SQLite keeps times as text in whatever format the writer chose ('T' or ' ', with or without fractional
    seconds or '+00:00'); comparing the strings would misorder them. julianday() parses all of them, as
    UTC when naive, and reads a number as a Julian day (SQLite's own REAL format). It rounds to whole
    milliseconds, which is monotonic, so a row at or after the cutoff can never compare as older. Where it
    reads nothing, two spellings other writers produce are read as well (coalesce() goes on only past a
    NULL, so the common spellings still cost one julianday()):
    - a number past the Julian days (the year 9999) is unix time in seconds, as SQLite's 'auto' modifier
      reads it: every unix time after 1970-03-04 is one; one in milliseconds is past 9999 even as seconds,
      so it reads as no instant;
    - an offset without its colon ('+0000', what strftime's %z and many loggers write) gets its colon.
    """
    as_text = func.substr(column, 1, func.length(column) - 2, type_=String()) + ":" + func.substr(column, -2)
    return func.coalesce(
        func.julianday(column),
        case(
            (
                func.typeof(column).in_([literal("integer"), literal("real")]),
                func.julianday(column, "unixepoch"),
            ),
            (func.glob("*[0-9][+-][0-9][0-9][0-9][0-9]", column), func.julianday(as_text)),
        ),
        type_=Float(),
    )


def unreadable(column: Any) -> ColumnElement[bool]:
    """SQLite: the row has a time in `column` that reads as no instant, so no rule on it ever expires it."""
    return and_(column.is_not(None), sqlite_instant(column).is_(None))


def _text_bound(cutoff: datetime) -> str:
    """The date two days after the cutoff's, as text. Every ISO spelling of an instant before the cutoff
    ('YYYY-MM-DD' first, then any time, separator and UTC offset, with or without its colon: SQLite reads
    up to +14:59) sorts below it, and SQLite sorts numbers below all text; so only rows the instant
    comparison would keep sort at or above it."""
    return (cutoff.astimezone(UTC).date() + timedelta(days=2)).isoformat()


def older(column: Any, cutoff: datetime) -> ColumnElement[bool]:
    """True where the timestamp column is strictly before the cutoff; false (never NULL) on SQLite where
    it reads as no instant."""
    return older_than(column, literal(cutoff, UTCDateTime()), literal(_text_bound(cutoff), String()))
