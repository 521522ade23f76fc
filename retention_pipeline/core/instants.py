"""Comparing stored timestamps as instants on every engine, in a form the time indexes can serve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, ColumnElement, String, and_, func, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .schema import UTCDateTime


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
    # SQLite stores timestamps as text in whatever format the writer chose ('T' or ' ', with or without
    # fractional seconds or '+00:00'); comparing the strings would misorder them. julianday() parses all
    # of them, as UTC when naive. It rounds to whole milliseconds, which is monotonic, so a row at or
    # after the cutoff can never compare as older. julianday() of a column cannot use its index, so on
    # its own "nothing expired" read a whole time index (0.33 s for detections at 1M); the plain text
    # comparison in front of it can, and only ever drops rows julianday() would keep (_text_bound).
    column, cutoff, text_bound = list(element.clauses)
    exact = func.julianday(column) < func.julianday(cutoff)
    return "(" + compiler.process(and_(column < text_bound, exact), **kw) + ")"


def _text_bound(cutoff: datetime) -> str:
    """The date two days after the cutoff's, as text. Every ISO spelling of an instant before the cutoff
    ('YYYY-MM-DD' first, then any time, separator and UTC offset: SQLite reads up to +14:59) sorts below
    it, and SQLite sorts numbers below all text; so only rows julianday() would keep sort at or above it."""
    return (cutoff.astimezone(UTC).date() + timedelta(days=2)).isoformat()


def older(column: Any, cutoff: datetime) -> ColumnElement[bool]:
    """True where the timestamp column is strictly before the cutoff."""
    return older_than(column, literal(cutoff, UTCDateTime()), literal(_text_bound(cutoff), String()))
