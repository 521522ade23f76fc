"""Named statement builders, one per query. Every cutoff arrives as a bound, timezone-aware parameter."""

from __future__ import annotations

from datetime import datetime
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


def detection_may_expire(cutoff: datetime) -> ColumnElement[bool]:
    """Old or linked to an expired event: expired unless also linked to a retained event."""
    return or_(older(detections.c.detected_at, cutoff), _linked_to(older(events.c.started_at, cutoff)))


def detection_expired(cutoff: datetime) -> ColumnElement[bool]:
    """Old or linked to an expired event, and not linked to any retained event."""
    return and_(detection_may_expire(cutoff), not_(_linked_to(not_(older(events.c.started_at, cutoff)))))


def select_expired_detection_id_span(cutoff: datetime) -> Select[Any]:
    """The lowest and highest id a detection expired at this cutoff can have (None, None: none expired).

    Found through the time indexes, so a run with nothing expired reads almost nothing, and batches
    never scan the retained rows past the last expired one.
    """
    linked = (
        select(event_detections.c.detection_id.label("id"))
        .join(events, events.c.id == event_detections.c.event_id)
        .where(older(events.c.started_at, cutoff))
    )
    candidates = union_all(select(detections.c.id).where(older(detections.c.detected_at, cutoff)), linked)
    every = candidates.subquery()
    return select(func.min(every.c.id), func.max(every.c.id))


def select_expired_id_span(table: Table, column: str, cutoff: datetime) -> Select[Any]:
    """The lowest and highest id among a table's rows expired at this cutoff (None, None: none)."""
    return select(func.min(table.c.id), func.max(table.c.id)).where(older(table.c[column], cutoff))


def distinct_paths(files: list[Select[Any]], *also: Any) -> Select[Any]:
    """Each path of `files` once, with its smallest kind (and the columns in `also`)."""
    every = union_all(*files).subquery()
    # On SQLite the WHERE also keeps ON CONFLICT from being read as a join constraint of INSERT ... SELECT.
    return (
        select(every.c.path, func.min(every.c.kind).label("kind"), *also)
        .where(every.c.path.is_not(None))
        .group_by(every.c.path)
    )


def count_expired_detections(cutoff: datetime) -> Select[Any]:
    """How many detections a run at this cutoff deletes."""
    return select(func.count()).select_from(detections).where(detection_expired(cutoff))


def count_expired_events(cutoff: datetime) -> Select[Any]:
    """How many events a run at this cutoff deletes."""
    return select(func.count()).select_from(events).where(older(events.c.started_at, cutoff))


def count_alerts_of_expired_events(cutoff: datetime) -> Select[Any]:
    """How many alerts go with the expired events."""
    expired = select(events.c.id).where(older(events.c.started_at, cutoff))
    return select(func.count()).select_from(alerts).where(alerts.c.event_id.in_(expired.scalar_subquery()))


def count_expired_rows(table: Table, column: str, cutoff: datetime) -> Select[Any]:
    """How many rows of a table without children a run at this cutoff deletes."""
    return select(func.count()).select_from(table).where(older(table.c[column], cutoff))


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


def select_referenced_names(surviving_at: datetime | None = None) -> Select[Any]:
    """Which of the staged names (`check_names`) a row still references.

    With `surviving_at`, rows that a run at that cutoff would delete do not count (dry-run preview).
    """
    d_live: list[ColumnElement[bool]] = []
    e_live: list[ColumnElement[bool]] = []
    if surviving_at is not None:
        d_live.append(not_(detection_expired(surviving_at)))
        e_live.append(not_(older(events.c.started_at, surviving_at)))
    names = check_names.c.name

    def referenced_by(column: Any, live: list[ColumnElement[bool]]) -> Select[Any]:
        return select(column.label("path")).join(check_names, column == names).where(*live)

    return select(
        union(
            referenced_by(detections.c.thumbnail_path, d_live),
            referenced_by(detections.c.file_path, d_live),
            referenced_by(events.c.clip_path, e_live),
        ).subquery()
    )


def select_stale_file_candidates(cutoff: datetime, delete_images: bool, queued: bool = True) -> Select[Any]:
    """Distinct paths a run at this cutoff would consider deleting, with their kind, in path order
    (`queued` False: leave out the queue, in a database that has none yet)."""
    expired = detection_expired(cutoff)
    sources = [
        select(detections.c.thumbnail_path.label("path"), literal("thumbnail").label("kind")).where(
            expired, detections.c.thumbnail_path.is_not(None)
        ),
        select(events.c.clip_path.label("path"), literal("clip").label("kind")).where(
            older(events.c.started_at, cutoff), events.c.clip_path.is_not(None)
        ),
    ]
    if queued:
        sources.append(select(retention_file_queue.c.path, retention_file_queue.c.kind))
    if delete_images:
        sources.append(
            select(detections.c.file_path.label("path"), literal("image").label("kind")).where(expired)
        )
    every = union(*sources).subquery()
    return (
        select(every.c.path, func.min(every.c.kind).label("kind"))
        .where(every.c.path != "")
        .group_by(every.c.path)
        .order_by(every.c.path)
    )


def count_referencing_rows() -> Select[Any]:
    """How many rows reference a media file at all (detections, and events with a clip)."""
    with_clip = select(func.count()).select_from(events).where(events.c.clip_path.is_not(None))
    return select(
        select(func.count()).select_from(detections).scalar_subquery() + with_clip.scalar_subquery()
    )


def select_every_referenced_path() -> Select[Any]:
    """Every distinct stored media path (thumbnails, images, clips)."""
    every = union(
        select(detections.c.thumbnail_path.label("path")).where(detections.c.thumbnail_path.is_not(None)),
        select(detections.c.file_path.label("path")),
        select(events.c.clip_path.label("path")).where(events.c.clip_path.is_not(None)),
    ).subquery()
    return select(every.c.path)
