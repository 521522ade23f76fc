"""PostgreSQL: what clears the way for dropping a wholly expired partition, in chunks of its ids: its rows'
files into the queue and their children out, as a batch's DELETE would have done; then nothing but the
partition's own rows is left to drop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Delete,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Update,
    and_,
    func,
    literal,
    select,
    tuple_,
)

from ..references import column_holding_id
from ..schema import UTCDateTime
from ..tables import Child, Expiry, MediaColumn, column_of, column_on, table_of
from .expiring import and_what_cascades
from .purge_batch import CHILD_TABLES
from .queue import queueing_new_paths


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key from a child table to the partitioned parent, with what a DELETE of the parent does."""

    table: str
    columns: tuple[str, ...]
    parent_columns: tuple[str, ...]
    on_delete: str  # CASCADE or SET NULL (anything else keeps the parent out of partition drops)
    schema: str | None = None


def rows_of_partition(
    expiry: Expiry, table: str, key: str, lower: datetime | None, upper: datetime
) -> ColumnElement[bool]:
    """The parent's rows whose key lies in one partition's range (the planner reads that partition only)."""
    column = column_of(expiry.registry[table], key)
    in_range = column < literal(upper, UTCDateTime())
    return in_range if lower is None else and_(column >= literal(lower, UTCDateTime()), in_range)


def detached_partition(name: str, key: str, media: tuple[MediaColumn, ...]) -> Table:
    """A partition detached under `name`, with the columns read from it: its ids, the time column it was
    partitioned on (`key`) and its media paths."""
    media_columns = (Column(m.column, String) for m in media if m.column != key)
    return Table(name, MetaData(), Column("id", Integer), Column(key, UTCDateTime()), *media_columns)


def newest(source: Table, key: str) -> Select[Any]:
    """The latest `key` time among the table's rows (None when it has none)."""
    return select(func.max(source.c[key]))


def next_chunk_end(source: Table, rows: ColumnElement[bool], after_id: int, size: int) -> Select[Any]:
    """The id of the `size`-th of `rows` after `after_id` (None when fewer are left)."""
    return (
        select(source.c.id)
        .where(rows, source.c.id > after_id)
        .order_by(source.c.id)
        .limit(1)
        .offset(size - 1)
    )


def count_rows(source: Table, rows: ColumnElement[bool]) -> Select[Any]:
    """How many of the table's rows `rows` selects, and the sum of their ids: a row deleted and another
    added leave the count alone, not the sum (ids are never reused)."""
    return select(func.count(), func.coalesce(func.sum(source.c.id), 0)).select_from(source).where(rows)


def chunk(
    source: Table, rows: ColumnElement[bool], after_id: int, last_id: int | None
) -> ColumnElement[bool]:
    """The rows of one chunk: (after_id, last_id] among `rows` (no end: every one after after_id)."""
    ids = source.c.id
    return and_(rows, ids > after_id) if last_id is None else and_(rows, ids > after_id, ids <= last_id)


def queue_files_of_rows(
    source: Table, media: tuple[MediaColumn, ...], rows: ColumnElement[bool], queued_at: datetime
) -> Select[Any]:
    """Queue the files the rows name (a path queued already keeps the smaller kind); returns the number of
    distinct paths."""
    files = []
    for m in media:
        path = column_on(source, m.column, String())
        files.append(
            select(path.label("path"), literal(m.kind, String).label("kind"))
            .select_from(source)
            .where(rows, path != "")
        )
    matched, inserted, rekinded = queueing_new_paths(files, literal(queued_at, UTCDateTime()))
    return select(select(func.count()).select_from(matched).scalar_subquery()).add_cte(inserted, rekinded)


def delete_children_of_rows(source: Table, child: Child, rows: ColumnElement[bool]) -> Delete:
    """Delete the rows of a child the purge empties itself that belong to `rows`."""
    child_table = CHILD_TABLES[child.table]
    return child_table.delete().where(
        child_table.c[child.column].in_(select(source.c.id).where(rows).scalar_subquery())
    )


def _referencing(
    expiry: Expiry, table: str, key: ForeignKey, rows: ColumnElement[bool]
) -> tuple[Table, ColumnElement[bool]]:
    """The child table of `key`, and its rows that reference `rows`."""
    entry = expiry.registry[table]
    child = Table(key.table, MetaData(), *(Column(name) for name in key.columns), schema=key.schema)
    referenced = select(*(column_of(entry, name) for name in key.parent_columns)).where(rows)
    return child, tuple_(*(child.c[name] for name in key.columns)).in_(referenced)


def queue_files_of_cascaded(
    expiry: Expiry, table: str, key: ForeignKey, rows: ColumnElement[bool], queued_at: datetime
) -> list[Select[Any]]:
    """Queue the files of the child's rows that `key`'s CASCADE takes with `rows`, and of the rows further
    cascades take with those, for retention tables with files (see references.with_cascades); each
    statement returns its number of distinct paths."""
    registry = expiry.registry
    if key.table not in registry:
        return []
    entry = registry[key.table]
    # As with_cascades recorded it.
    id_column = column_holding_id(key.columns, key.parent_columns)
    if id_column is None or (table, id_column) not in entry.cascades_from:
        return []
    parent = registry[table]
    referenced = select(*(column_of(parent, name) for name in key.parent_columns)).where(rows)
    child = table_of(entry)
    referencing = tuple_(*(column_on(child, name, BigInteger()) for name in key.columns)).in_(referenced)
    return [
        queue_files_of_rows(table_of(taken), taken.files, taken_rows, queued_at)
        for taken, taken_rows in and_what_cascades(expiry, entry, referencing)
        if taken.files
    ]


def apply_on_delete(
    expiry: Expiry, table: str, key: ForeignKey, rows: ColumnElement[bool]
) -> Delete | Update:
    """What the database would do to the child's rows referencing `rows` if they were deleted: delete them
    (CASCADE, whose own cascades then run) or set the reference to NULL (SET NULL)."""
    child, referencing = _referencing(expiry, table, key, rows)
    if key.on_delete == "CASCADE":
        return child.delete().where(referencing)
    return child.update().where(referencing).values({name: None for name in key.columns})
