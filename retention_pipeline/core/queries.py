"""Named statement builders, one per query. Every cutoff arrives as a bound, timezone-aware parameter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Delete,
    Insert,
    MetaData,
    Select,
    String,
    Table,
    and_,
    exists,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    union,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.dml import ReturningInsert

from .instants import older
from .schema import (
    alerts,
    detections,
    event_detections,
    events,
    retention_file_queue,
)
from .tables import Expiry, Registry, RetentionTable, column_of, table_of


def by_rules(expiry: Expiry, table: str) -> ColumnElement[bool]:
    """The row is before the cutoff of one of its table's rules (a NULL time column: that rule does not
    apply); without the keep rule."""
    entry = expiry.registry[table]
    terms = []
    for name, cutoff in expiry.rules_of(table):
        column = column_of(entry, name)
        # A built-in time column is NOT NULL. A declared one may hold NULL, which must read as "not
        # expired" (false), not unknown: NOT (unknown) is unknown too, and would hide a retained event.
        nullable = name not in {r.column for r in entry.rules if r.origin == "built-in"}
        terms.append(and_(column.is_not(None), older(column, cutoff)) if nullable else older(column, cutoff))
    return or_(*terms)


def _linked_to(events_where: ColumnElement[bool]) -> ColumnElement[bool]:
    """The detection is linked to an event matching `events_where`."""
    # OFFSET 0 keeps PostgreSQL from turning a NOT EXISTS into a merge anti-join, which walks the
    # link index from its start on every batch (quadratic over a run); as a correlated sub-plan it is
    # one index look-up per detection of the batch.
    linked_to = (
        select(event_detections.c.event_id)
        .join(events, events.c.id == event_detections.c.event_id)
        .where(event_detections.c.detection_id == detections.c.id, events_where)
        .offset(0)
    )
    return exists(linked_to)


def detection_may_expire(expiry: Expiry) -> ColumnElement[bool]:
    """Old or linked to an expired event: expired unless also linked to a retained event."""
    return or_(by_rules(expiry, "detections"), _linked_to(by_rules(expiry, "events")))


def detection_expired(expiry: Expiry) -> ColumnElement[bool]:
    """Old or linked to an expired event, and not linked to any retained event."""
    return and_(detection_may_expire(expiry), not_(_linked_to(not_(by_rules(expiry, "events")))))


def expired(expiry: Expiry, table: str) -> ColumnElement[bool]:
    """The row of `table` goes in a run with this expiry: its rules, and for detections the keep rule."""
    return detection_expired(expiry) if table == "detections" else by_rules(expiry, table)


def select_expired_detection_id_span(expiry: Expiry) -> Select[Any]:
    """The lowest and highest id a detection expired at this cutoff can have (None, None: none expired).

    Found through the time indexes, so a run with nothing expired reads almost nothing, and batches
    never scan the retained rows past the last expired one.
    """
    linked = (
        select(event_detections.c.detection_id.label("id"))
        .join(events, events.c.id == event_detections.c.event_id)
        .where(by_rules(expiry, "events"))
    )
    candidates = union_all(select(detections.c.id).where(by_rules(expiry, "detections")), linked)
    every = candidates.subquery()
    return select(func.min(every.c.id), func.max(every.c.id))


def select_expired_id_span(expiry: Expiry, table: str) -> Select[Any]:
    """The lowest and highest id among a table's rows expired by its rules (None, None: none)."""
    target = table_of(expiry.registry[table])
    return select(func.min(target.c.id), func.max(target.c.id)).where(by_rules(expiry, table))


def distinct_paths(files: list[Select[Any]], *also: Any) -> Select[Any]:
    """Each path of `files` once, with its smallest kind (and the columns in `also`)."""
    every = union_all(*files).subquery()
    # On SQLite the WHERE also keeps ON CONFLICT from being read as a join constraint of INSERT ... SELECT.
    return (
        select(every.c.path, func.min(every.c.kind).label("kind"), *also)
        .where(every.c.path.is_not(None))
        .group_by(every.c.path)
    )


def count_expired(expiry: Expiry, table: str) -> Select[Any]:
    """How many rows of a table a run with this expiry deletes."""
    target = table_of(expiry.registry[table])
    return select(func.count()).select_from(target).where(expired(expiry, table))


def count_alerts_of_expired_events(expiry: Expiry) -> Select[Any]:
    """How many alerts go with the expired events."""
    gone = select(events.c.id).where(by_rules(expiry, "events"))
    return select(func.count()).select_from(alerts).where(alerts.c.event_id.in_(gone.scalar_subquery()))


def insert_queued_file(dialect_name: str) -> Insert | ReturningInsert[Any]:
    """Queue one file path for deletion (executed with many rows)."""
    if dialect_name == "postgresql":
        # RETURNING makes SQLAlchemy batch the rows into multi-row VALUES ("insertmanyvalues");
        # without it psycopg2 sends one statement per row, ten times slower.
        return queue_upsert(dialect_name).returning(retention_file_queue.c.id)
    return queue_upsert(dialect_name)


def queue_upsert(dialect_name: str, rows: Select[Any] | None = None) -> Insert:
    """INSERT into the queue, from `rows` or from parameters; a path queued already keeps the smaller kind
    ('image' before 'thumbnail'), which is what the dry-run preview reports for it."""
    q = retention_file_queue.c
    columns = ["path", "kind", "queued_at"]
    if dialect_name == "postgresql":
        pg = postgresql.insert(retention_file_queue)
        pg = pg if rows is None else pg.from_select(columns, rows)
        return pg.on_conflict_do_update(
            index_elements=["path"], set_={"kind": func.least(q.kind, pg.excluded.kind)}
        )
    lite = sqlite.insert(retention_file_queue)
    lite = lite if rows is None else lite.from_select(columns, rows)
    # Two-argument min() is SQLite's scalar minimum, not the aggregate.
    return lite.on_conflict_do_update(
        index_elements=["path"], set_={"kind": func.min(q.kind, lite.excluded.kind)}
    )


def select_queued_files(after_id: int, limit: int, last_id: int | None = None) -> Select[Any]:
    """The next queued files after `after_id` (up to `last_id` if given), oldest first."""
    q = retention_file_queue.c
    statement = select(q.id, q.path, q.kind).where(q.id > after_id)
    if last_id is not None:
        statement = statement.where(q.id <= last_id)
    return statement.order_by(q.id).limit(limit)


def select_last_queued_id() -> Select[Any]:
    """The highest id in the file queue (None when it is empty)."""
    return select(func.max(retention_file_queue.c.id))


def select_queue_boundary(after_id: int, size: int) -> Select[Any]:
    """The id of the `size`-th queued file after `after_id` (None when fewer are left)."""
    q = retention_file_queue.c
    return select(q.id).where(q.id > after_id).order_by(q.id).limit(1).offset(size - 1)


def delete_queued_files(after_id: int, last_id: int) -> Delete:
    """Forget one id range of queued files once they are handled."""
    q = retention_file_queue.c
    return retention_file_queue.delete().where(q.id > after_id, q.id <= last_id)


def count_queued_files() -> Select[Any]:
    """How many files are waiting in the queue (left by an interrupted run)."""
    return select(func.count()).select_from(retention_file_queue)


# Scratch for one reference check, private to the connection that runs it: every spelling of the paths
# being checked. Staged once per large chunk, so the check costs one pass over the referencing rows
# whether or not the camera system indexes its path columns (it does not), and binds no parameter list.
check_names = Table(
    "retention_check_names",
    MetaData(),
    Column("name", String, primary_key=True),
    prefixes=["TEMPORARY"],
    # Emptied by a truncate at each COMMIT: autovacuum never visits temporary tables, so rows deleted
    # one by one would pile up for the life of the pooled connection.
    postgresql_on_commit="DELETE ROWS",
)


def create_check_names() -> CreateTable:
    """Create this connection's scratch table of names to check, unless it has one."""
    return CreateTable(check_names, if_not_exists=True)


def insert_check_name() -> Insert:
    """Stage one name to check (executed with many rows)."""
    return insert(check_names)


def clear_check_names() -> Delete:
    """Empty this connection's scratch table of names to check."""
    return check_names.delete()


def prefer_index_lookups() -> Select[Any]:
    """PostgreSQL: for the rest of this transaction, cost a random page read like a cached one."""
    # With the default random_page_cost (4) the planner answers a look-up of a few thousand paths with a
    # full scan of detections even where the path columns are indexed. The tables a cleanup touches are
    # hot in memory.
    return select(func.set_config("random_page_cost", "1.1", True))


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


def select_referenced_names(registry: Registry, surviving: Expiry | None = None) -> Select[Any]:
    """Which of the staged names (`check_names`) a row still references.

    With `surviving`, rows that a run with that expiry would delete do not count (dry-run preview).
    """
    names = check_names.c.name

    def referenced_by(entry: RetentionTable) -> list[Select[Any]]:
        live = [] if surviving is None else [not_(expired(surviving, entry.name))]
        return [
            select(path.label("path")).join(check_names, path == names).where(*live)
            for path in (column_of(entry, m.column, String()) for m in entry.files)
        ]

    return select(union(*(s for entry in registry.tables for s in referenced_by(entry))).subquery())


def select_stale_file_candidates(expiry: Expiry, delete_images: bool, queued: bool = True) -> Select[Any]:
    """Distinct paths a run with this expiry would consider deleting, with their kind, in path order
    (`queued` False: leave out the queue, in a database that has none yet)."""
    sources = _media_paths(expiry.registry, lambda table: [expired(expiry, table)], delete_images)
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
