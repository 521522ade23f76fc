"""Named statement builders, one per query. Every cutoff arrives as a bound, timezone-aware parameter."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    Boolean,
    ColumnElement,
    Delete,
    Insert,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    union,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.functions import FunctionElement

from .schema import (
    UTCDateTime,
    alerts,
    detections,
    event_detections,
    events,
    retention_file_queue,
)


class older_than(FunctionElement[bool]):  # lower case: it reads like the SQL function it stands for
    """`column < cutoff`, compared as instants on every engine."""

    type = Boolean()
    inherit_cache = True
    name = "older_than"


@compiles(older_than)
def _older_than_default(element: older_than, compiler: SQLCompiler, **kw: Any) -> str:
    column, cutoff = list(element.clauses)
    return "(" + compiler.process(column < cutoff, **kw) + ")"


@compiles(older_than, "sqlite")
def _older_than_sqlite(element: older_than, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite stores timestamps as text in whatever format the writer chose ('T' or ' ', with or without
    # fractional seconds or '+00:00'); comparing the strings would misorder them. julianday() parses all
    # of them, as UTC when naive. It rounds to whole milliseconds, which is monotonic, so a row at or
    # after the cutoff can never compare as older.
    column, cutoff = list(element.clauses)
    return "(" + compiler.process(func.julianday(column) < func.julianday(cutoff), **kw) + ")"


def older(column: Any, cutoff: datetime) -> ColumnElement[bool]:
    """True where the timestamp column is strictly before the cutoff."""
    return older_than(column, literal(cutoff, UTCDateTime()))


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


def select_detection_batch_end(cutoff: datetime, after_id: int, until_id: int, limit: int) -> Select[Any]:
    """The highest id among the next `limit` expired detections in (after_id, until_id] (None: none left)."""
    return _end_of_next_batch(detections, detection_expired(cutoff), after_id, until_id, limit)


def lock_next_detections_that_may_expire(
    cutoff: datetime, after_id: int, until_id: int, limit: int
) -> Select[Any]:
    """PostgreSQL: lock the next `limit` detections in (after_id, until_id] that may have expired; the
    highest id locked. Which of them have is for the DELETE to decide, once the locks are held."""
    candidates = detection_may_expire(cutoff)
    return _end_of_next_batch(detections, candidates, after_id, until_id, limit, lock=True)


def _end_of_next_batch(
    table: Table, expired: ColumnElement[bool], after_id: int, until_id: int, limit: int, lock: bool = False
) -> Select[Any]:
    batch = (
        select(table.c.id)
        .where(table.c.id > after_id, table.c.id <= until_id, expired)
        .order_by(table.c.id)
        .limit(limit)
    )
    if lock:
        batch = batch.with_for_update(of=table)
    return select(func.max(batch.subquery().c.id))


def _expired_detections_in_range(cutoff: datetime, after_id: int, last_id: int) -> ColumnElement[bool]:
    return and_(detections.c.id > after_id, detections.c.id <= last_id, detection_expired(cutoff))


def _detection_files(source: Any, delete_images: bool) -> list[Select[Any]]:
    """(path, kind) of each file of the detections in `source`: thumbnails, and images if deleted too."""
    files = [
        select(source.c.thumbnail_path.label("path"), literal("thumbnail", String).label("kind")).where(
            source.c.thumbnail_path != ""
        )
    ]
    if delete_images:
        files.append(
            select(source.c.file_path.label("path"), literal("image", String).label("kind")).where(
                source.c.file_path != ""
            )
        )
    return files


def _distinct_paths(files: list[Select[Any]], *also: Any) -> Select[Any]:
    """Each path of `files` once, with its smallest kind (and the columns in `also`)."""
    every = union_all(*files).subquery()
    # On SQLite the WHERE also keeps ON CONFLICT from being read as a join constraint of INSERT ... SELECT.
    return (
        select(every.c.path, func.min(every.c.kind).label("kind"), *also)
        .where(every.c.path.is_not(None))
        .group_by(every.c.path)
    )


def _queue_paths(files: list[Select[Any]], queued_at: datetime) -> Insert:
    """SQLite: INSERT the distinct paths of `files` into the queue (an upsert costs SQLite no more)."""
    return _queue_upsert("sqlite", _distinct_paths(files, literal(queued_at, UTCDateTime())))


def delete_expired_detections_queueing_files(
    cutoff: datetime, after_id: int, last_id: int, delete_images: bool, queued_at: datetime
) -> Select[Any]:
    """PostgreSQL: in one statement, delete the batch's still-expired detections and queue their files;
    returns (rows deleted, paths queued)."""
    deleted = (
        detections.delete()
        .where(_expired_detections_in_range(cutoff, after_id, last_id))
        .returning(detections.c.thumbnail_path, detections.c.file_path)
        .cte("deleted")
    )
    return _deleting_and_queueing(deleted, _detection_files(deleted, delete_images), queued_at)


def _deleting_and_queueing(deleted: CTE, files: list[Select[Any]], queued_at: datetime) -> Select[Any]:
    """PostgreSQL: (rows deleted, distinct paths queued) of one DELETE ... RETURNING whose files go into
    the queue in the same statement.

    Not INSERT ... ON CONFLICT: its speculative insertion made the queue ~40 % of a detection batch.
    One outer join to the queue's path index sorts the batch's paths into new ones (plain INSERT) and
    ones already queued (UPDATE to the smaller kind, rarely any row). No other writer queues while the
    run holds its lock, and the unique index still refuses a duplicate if one ever did.
    """
    q = retention_file_queue
    paths = _distinct_paths(files).cte("paths")
    matched = (
        select(paths.c.path, paths.c.kind, q.c.id.label("queued_id"), q.c.kind.label("queued_kind"))
        .select_from(paths.outerjoin(q, q.c.path == paths.c.path))
        .cte("matched")
    )
    new = select(matched.c.path, matched.c.kind, literal(queued_at, UTCDateTime())).where(
        matched.c.queued_id.is_(None)
    )
    inserted = insert(q).from_select(["path", "kind", "queued_at"], new).returning(q.c.id).cte("inserted")
    rekinded = (
        update(q)
        .where(q.c.id == matched.c.queued_id, matched.c.kind < matched.c.queued_kind)
        .values(kind=matched.c.kind)
        .returning(q.c.id)
        .cte("rekinded")
    )
    # Both writes are named so they run; PostgreSQL runs a data-modifying WITH to completion either way.
    return select(
        select(func.count()).select_from(deleted).scalar_subquery(),
        select(func.count()).select_from(matched).scalar_subquery(),
    ).add_cte(inserted, rekinded)


def queue_files_of_expired_detections(
    cutoff: datetime, after_id: int, last_id: int, delete_images: bool, queued_at: datetime
) -> Any:
    """SQLite: queue the files of the batch's expired detections (the DELETE follows in the same
    transaction, which holds the write lock, so both see the same rows)."""
    batch = select(detections).where(_expired_detections_in_range(cutoff, after_id, last_id)).subquery()
    return _queue_paths(_detection_files(batch, delete_images), queued_at)


def delete_expired_detections(cutoff: datetime, after_id: int, last_id: int) -> Delete:
    """Delete the batch's detections that are still expired."""
    return detections.delete().where(_expired_detections_in_range(cutoff, after_id, last_id))


def count_expired_detections(cutoff: datetime) -> Select[Any]:
    """How many detections a run at this cutoff deletes."""
    return select(func.count()).select_from(detections).where(detection_expired(cutoff))


def select_event_batch_end(cutoff: datetime, after_id: int, until_id: int, limit: int) -> Select[Any]:
    """The highest id among the next `limit` expired events in (after_id, until_id] (None: none left)."""
    return select_last_id_of_expired_batch(events, "started_at", cutoff, after_id, until_id, limit)


def lock_next_expired_events(cutoff: datetime, after_id: int, until_id: int, limit: int) -> Select[Any]:
    """PostgreSQL: lock the next `limit` expired events in (after_id, until_id]; the highest id locked."""
    expired = older(events.c.started_at, cutoff)
    return _end_of_next_batch(events, expired, after_id, until_id, limit, lock=True)


def _event_expired_in_range(cutoff: datetime, after_id: int, last_id: int) -> ColumnElement[bool]:
    return and_(events.c.id > after_id, events.c.id <= last_id, older(events.c.started_at, cutoff))


def _expired_events_in_range(cutoff: datetime, after_id: int, last_id: int) -> Select[Any]:
    return select(events.c.id).where(_event_expired_in_range(cutoff, after_id, last_id))


def delete_alerts_of_expired_events(cutoff: datetime, after_id: int, last_id: int) -> Delete:
    """Delete the alerts of the batch's expired events (children first, cascade or not)."""
    return alerts.delete().where(_of_expired_events(alerts.c.event_id, cutoff, after_id, last_id))


def delete_links_of_expired_events(cutoff: datetime, after_id: int, last_id: int) -> Delete:
    """Delete the event_detections rows of the batch's expired events."""
    return event_detections.delete().where(
        _of_expired_events(event_detections.c.event_id, cutoff, after_id, last_id)
    )


def _of_expired_events(event_id: Any, cutoff: datetime, after_id: int, last_id: int) -> ColumnElement[bool]:
    # The id range on the child's own column lets its event_id index find the batch's children; with
    # only the IN (...) PostgreSQL read every alert per batch (hash join), 28 ms of a 2000-event batch.
    batch = _expired_events_in_range(cutoff, after_id, last_id)
    return and_(event_id > after_id, event_id <= last_id, event_id.in_(batch.scalar_subquery()))


def _event_clips(source: Any) -> list[Select[Any]]:
    return [
        select(source.c.clip_path.label("path"), literal("clip", String).label("kind")).where(
            source.c.clip_path != ""
        )
    ]


def delete_expired_events_queueing_clips(
    cutoff: datetime, after_id: int, last_id: int, queued_at: datetime
) -> Select[Any]:
    """PostgreSQL: in one statement, delete the batch's expired events and queue their clips;
    returns (rows deleted, paths queued)."""
    deleted = (
        events.delete()
        .where(_event_expired_in_range(cutoff, after_id, last_id))
        .returning(events.c.clip_path)
        .cte("deleted")
    )
    return _deleting_and_queueing(deleted, _event_clips(deleted), queued_at)


def queue_clips_of_expired_events(cutoff: datetime, after_id: int, last_id: int, queued_at: datetime) -> Any:
    """SQLite: queue the clips of the batch's expired events (their DELETE follows in the transaction)."""
    batch = select(events).where(_event_expired_in_range(cutoff, after_id, last_id)).subquery()
    return _queue_paths(_event_clips(batch), queued_at)


def delete_expired_events(cutoff: datetime, after_id: int, last_id: int) -> Delete:
    """Delete the batch's expired events."""
    return events.delete().where(_event_expired_in_range(cutoff, after_id, last_id))


def count_expired_events(cutoff: datetime) -> Select[Any]:
    """How many events a run at this cutoff deletes."""
    return select(func.count()).select_from(events).where(older(events.c.started_at, cutoff))


def count_alerts_of_expired_events(cutoff: datetime) -> Select[Any]:
    """How many alerts go with the expired events."""
    expired = select(events.c.id).where(older(events.c.started_at, cutoff))
    return select(func.count()).select_from(alerts).where(alerts.c.event_id.in_(expired.scalar_subquery()))


def select_last_id_of_expired_batch(
    table: Table, column: str, cutoff: datetime, after_id: int, until_id: int, limit: int
) -> Select[Any]:
    """The highest id among the next `limit` expired rows in (after_id, until_id] of a table."""
    return _end_of_next_batch(table, older(table.c[column], cutoff), after_id, until_id, limit)


def delete_expired_rows(table: Table, column: str, cutoff: datetime, after_id: int, last_id: int) -> Delete:
    """Delete one id range of expired rows from a table without children."""
    return table.delete().where(table.c.id > after_id, table.c.id <= last_id, older(table.c[column], cutoff))


def count_expired_rows(table: Table, column: str, cutoff: datetime) -> Select[Any]:
    """How many rows of a table without children a run at this cutoff deletes."""
    return select(func.count()).select_from(table).where(older(table.c[column], cutoff))


def insert_queued_file(dialect_name: str) -> Insert | ReturningInsert[Any]:
    """Queue one file path for deletion (executed with many rows)."""
    if dialect_name == "postgresql":
        # RETURNING makes SQLAlchemy batch the rows into multi-row VALUES ("insertmanyvalues");
        # without it psycopg2 sends one statement per row, ten times slower.
        return _queue_upsert(dialect_name).returning(retention_file_queue.c.id)
    return _queue_upsert(dialect_name)


def _queue_upsert(dialect_name: str, rows: Select[Any] | None = None) -> Insert:
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


def _one_of(column: ColumnElement[Any], names: Sequence[str], dialect_name: str) -> ColumnElement[bool]:
    """`column IN names` with the whole list as one bound value, not one parameter per name.

    Thousands of expanded parameters per statement cost more to bind than the look-ups themselves.
    """
    if dialect_name == "postgresql":
        return column == any_(bindparam("names", list(names), type_=ARRAY(String)))
    values = func.json_each(bindparam("names", json.dumps(list(names)), type_=String)).table_valued("value")
    return column.in_(select(values.c.value))


def prefer_index_lookups() -> Select[Any]:
    """PostgreSQL: for the rest of this transaction, cost a random page read like a cached one."""
    # With the default random_page_cost (4) the planner answers a look-up of a few thousand paths with a
    # full scan of detections, once per chunk: 328 ms against 69 ms by the path indexes for 2000 paths at
    # 1M detections, and growing with the table. The tables a cleanup touches are hot in memory.
    return select(func.set_config("random_page_cost", "1.1", True))


def select_referenced_paths(
    candidates: Sequence[str], dialect_name: str, surviving_at: datetime | None = None
) -> Select[Any]:
    """Which of these stored path strings a row still references.

    With `surviving_at`, rows that a run at that cutoff would delete do not count (dry-run preview).
    """
    d_live: list[ColumnElement[bool]] = []
    e_live: list[ColumnElement[bool]] = []
    if surviving_at is not None:
        d_live.append(not_(detection_expired(surviving_at)))
        e_live.append(not_(older(events.c.started_at, surviving_at)))
    return select(
        union(
            select(detections.c.thumbnail_path.label("path")).where(
                _one_of(detections.c.thumbnail_path, candidates, dialect_name), *d_live
            ),
            select(detections.c.file_path.label("path")).where(
                _one_of(detections.c.file_path, candidates, dialect_name), *d_live
            ),
            select(events.c.clip_path.label("path")).where(
                _one_of(events.c.clip_path, candidates, dialect_name), *e_live
            ),
        ).subquery()
    )


def select_stale_file_candidates(cutoff: datetime, delete_images: bool) -> Select[Any]:
    """Distinct paths a run at this cutoff would consider deleting, with their kind, in path order."""
    expired = detection_expired(cutoff)
    sources = [
        select(detections.c.thumbnail_path.label("path"), literal("thumbnail").label("kind")).where(
            expired, detections.c.thumbnail_path.is_not(None)
        ),
        select(events.c.clip_path.label("path"), literal("clip").label("kind")).where(
            older(events.c.started_at, cutoff), events.c.clip_path.is_not(None)
        ),
        select(retention_file_queue.c.path, retention_file_queue.c.kind),
    ]
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
