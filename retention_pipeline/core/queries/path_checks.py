"""Which paths rows still reference: the reference check's scratch table and look-up, the paths a run
would consider deleting, and the listings the orphan sweep checks against."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Delete,
    Index,
    Insert,
    MetaData,
    Select,
    String,
    Table,
    bindparam,
    case,
    cast,
    column,
    exists,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    table,
    union,
)
from sqlalchemy.schema import CreateIndex, CreateTable, ExecutableDDLElement

from ..schema import retention_file_queue
from ..tables import Expiry, Registry, RetentionTable, column_of, table_of
from .expiring import goes
from .queue import text_from_bytes

# Scratch for one reference check, private to the connection that runs it: every spelling of the paths
# being checked. Staged once per large chunk, so the check costs one pass over the referencing rows
# whether or not the camera system indexes its path columns (it does not), and binds no parameter list.
check_names = Table(
    "retention_check_names",
    MetaData(),
    Column("name", String, nullable=False),  # staged distinct
    prefixes=["TEMPORARY"],
    # Emptied by a truncate at each COMMIT: autovacuum never visits temporary tables, so rows deleted
    # one by one would pile up for the life of the pooled connection.
    postgresql_on_commit="DELETE ROWS",
)
# SQLite looks each referencing row's path up in this index. PostgreSQL hashes the staged names instead,
# and building the index cost it a third of the staging.
check_names_index = Index("retention_check_names_name", check_names.c.name, unique=True)


def create_check_names(dialect_name: str) -> list[ExecutableDDLElement]:
    """Create this connection's scratch table of names to check (indexed on SQLite), unless it has one."""
    statements: list[ExecutableDDLElement] = [CreateTable(check_names, if_not_exists=True)]
    if dialect_name != "postgresql":
        statements.append(CreateIndex(check_names_index, if_not_exists=True))
    return statements


def stage_check_names(dialect_name: str) -> Insert:
    """Stage every name to check in one statement, from one parameter `names` (see `check_names_param`)."""
    # One parameter instead of one row each: binding tens of thousands of rows one by one cost more than
    # the check's join itself. A JSON array, which both engines unpack in C (SQLite's JSON functions are
    # built in since 3.38); on PostgreSQL it also parses faster than a text array literal.
    names = bindparam("names", type_=String)
    if dialect_name == "postgresql":
        given = func.json_array_elements_text(cast(names, JSON)).table_valued("value")
        return insert(check_names).from_select(["name"], select(given.c.value))
    given = func.json_each(names).table_valued("value")
    # SQLite fills its unique index much faster with names in index order; it sorts them in C, off the GIL.
    return insert(check_names).from_select(["name"], select(given.c.value).order_by(given.c.value))


def stage_check_names_from_bytes() -> Insert:
    """SQLite: stage one name that is not UTF-8, given as its bytes (`raw`; executed with many rows)."""
    # JSON cannot carry bytes that are not UTF-8: such names (rare) go one parameter set each.
    return insert(check_names).values(name=text_from_bytes("raw"))


def probe_json_functions() -> Select[Any]:
    """SQLite: fails when the library lacks the JSON functions `stage_check_names` uses there."""
    return select(func.json_array_length(literal("[]")))


def check_names_param(names: Sequence[str]) -> dict[str, str]:
    """The parameters of `stage_check_names` for these names."""
    # Non-ASCII characters as they are: PostgreSQL cannot turn a \u escape into a character its database
    # encoding lacks, while the characters themselves arrive as the rows store them.
    return {"names": json.dumps(list(names), ensure_ascii=False)}


def clear_check_names() -> Delete:
    """Empty this connection's scratch table of names to check."""
    return check_names.delete()


def steer_reference_check_plan() -> Select[Any]:
    """PostgreSQL: for the rest of this transaction, cost a random page read like a cached one and join
    by hashing rather than by sorting."""
    # With the default random_page_cost (4) the planner answers a look-up of a few thousand paths with a
    # full scan of detections even where the path columns are indexed. The tables a cleanup touches are
    # hot in memory. Without indexes it chose merge joins, sorting every referencing row's path (on disk
    # past work_mem) on each check: a hash of the staged names took a third of the time.
    return select(
        func.set_config("random_page_cost", "1.1", True), func.set_config("enable_mergejoin", "off", True)
    )


def _media_paths(
    registry: Registry, where: Callable[[str], list[ColumnElement[bool]]], delete_images: bool = True
) -> list[Select[Any]]:
    """(path, kind) of every media column of every retention table, each filtered by `where(table)`."""
    sources = []
    for entry in registry.tables:
        for media in entry.media(delete_images):
            path = column_of(entry, media.column, String())
            condition = [path != "", *where(entry.name)]
            target = table_of(entry)
            sources.append(
                select(path.label("path"), literal(media.kind, String).label("kind"))
                .select_from(target)
                .where(*condition)
            )
    return sources


def as_checked(path: Any) -> Any:
    """A row's stored path as the reference check compares it: without the noise writers add (`//` from
    joining a folder that ends in `/`, `/./`, a leading `./`), which `spellings.Spellings` never stages."""
    collapsed = path
    for _ in range(3):  # up to eight slashes in a row
        collapsed = func.replace(collapsed, "//", "/")
    for _ in range(2):  # "/././" takes two
        collapsed = func.replace(collapsed, "/./", "/")
    bare = case((func.substr(collapsed, 1, 2) == "./", func.substr(collapsed, 3)), else_=collapsed)
    # Most paths hold neither: they are compared as stored, without building new text.
    return case(
        (or_(path.contains("//", autoescape=True), path.contains("./", autoescape=True)), bare), else_=path
    )


def as_checked_text(path: str) -> str:
    """What `as_checked` makes of a stored path, in Python: a row storing the very string a checked path is
    stored as must match it, whatever noise the SQL cannot take out (a `..`, nine slashes in a row)."""
    if "//" not in path and "./" not in path:
        return path
    for _ in range(3):
        path = path.replace("//", "/")
    for _ in range(2):
        path = path.replace("/./", "/")
    return path[2:] if path.startswith("./") else path


def _named_by(source: Any, path: Any, *columns: Any) -> Select[Any]:
    """`columns` of the rows of `source` whose `path` is a staged name, joined to that name."""
    return select(*columns).select_from(source).join(check_names, as_checked(path) == check_names.c.name)


def select_referenced_names(
    registry: Registry, surviving: Expiry | None = None, keeping: Sequence[tuple[str, str]] = ()
) -> Select[Any]:
    """Which of the staged names (`check_names`) a row still references (`keeping`: columns of tables
    retention never deletes from, whose rows always count).

    With `surviving`, rows that a run with that expiry would delete do not count (dry-run preview).
    """
    names = check_names.c.name

    def referenced_by(entry: RetentionTable) -> list[Select[Any]]:
        target = table_of(entry)
        paths = [(m.column, column_of(entry, m.column, String())) for m in entry.files]
        if surviving is None:
            return [_named_by(target, path, names.label("path")) for _, path in paths]
        # The rows naming a staged path are found first and only they are tested for expiry: left to
        # itself PostgreSQL tested every referencing row (the keep rule's two look-ups each) before the
        # join, which made a dry run's file preview take minutes per check on a large table.
        selects = []
        for column_name, path in paths:
            matched = (
                _named_by(target, path, target.c.id, names.label("path"))
                .cte(f"named_by_{entry.name}_{column_name}")
                # SQLite before 3.35 cannot parse MATERIALIZED, and the camera system's may be older.
                .prefix_with("MATERIALIZED", dialect="postgresql")
            )
            # OFFSET 0 keeps the test a look-up per matched row instead of a scan of the whole table.
            survives = (
                select(target.c.id)
                .where(target.c.id == matched.c.id, not_(goes(surviving, entry.name)))
                .offset(0)
            )
            selects.append(select(matched.c.path).where(exists(survives)))
        return selects

    kept_by = []
    for table_name, column_name in keeping:
        # As text: a column of a table that is not ours may be declared anything (no index is lost: the
        # camera system indexes none of its path columns, and the staged names are hashed or probed).
        keeping_table = table(table_name, column(column_name))
        path = cast(keeping_table.c[column_name], String)
        kept_by.append(_named_by(keeping_table, path, names.label("path")))
    every = [s for entry in registry.tables for s in referenced_by(entry)] + kept_by
    return select(union(*every).subquery())


def select_stale_file_candidates(expiry: Expiry, delete_images: bool, queued: bool = True) -> Select[Any]:
    """Distinct paths a run with this expiry would consider deleting, with their kind, in path order
    (`queued` False: leave out the queue, in a database that has none yet)."""
    sources = _media_paths(expiry.registry, lambda table: [goes(expiry, table)], delete_images)
    if queued:
        sources.append(select(retention_file_queue.c.path, retention_file_queue.c.kind))
    every = union(*sources).subquery()
    return (
        select(every.c.path, func.min(every.c.kind).label("kind"))
        .where(every.c.path != "")
        .group_by(every.c.path)
        .order_by(every.c.path)
    )


def count_referencing_rows(registry: Registry) -> Select[Any]:
    """How many rows reference a media file at all."""
    counts = []
    for entry in registry.tables:
        paths = [column_of(entry, m.column, String()) for m in entry.files]
        if paths:
            with_file = or_(*(p != "" for p in paths))
            counts.append(
                select(func.count()).select_from(table_of(entry)).where(with_file).scalar_subquery()
            )
    return select(sum(counts[1:], counts[0]))


def select_every_referenced_path(registry: Registry) -> Select[Any]:
    """Every distinct stored media path."""
    every = union(*_media_paths(registry, lambda _table: [])).subquery()
    return select(every.c.path)
