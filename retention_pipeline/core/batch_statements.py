"""Named builders of the statements one purge batch runs. A run builds each statement once: the batch's
ids, size and queueing time are bound parameters given at execution (`span`, `id_range`), so no batch pays
for building a statement again (about 8 ms a batch on PostgreSQL, measured).

Bound parameters: `after_id`, `until_id`, `limit` to find (or lock) the next batch, whose ids are
(after_id, last_id]; `after_id`, `last_id`, `queue_time` to delete it and queue its files; `time_cap` and
`lock_cap` (milliseconds) to cap a PostgreSQL batch's statements and lock waits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Delete,
    Insert,
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal,
    select,
    update,
)

from .db import PG_STATEMENT_TIMEOUT_MS
from .durability import commit_without_waiting
from .instants import older
from .queries import detection_expired, detection_may_expire, distinct_paths, queue_upsert
from .schema import UTCDateTime, alerts, detections, event_detections, events, retention_file_queue

AFTER_ID = bindparam("after_id", type_=Integer)
UNTIL_ID = bindparam("until_id", type_=Integer)
LAST_ID = bindparam("last_id", type_=Integer)
LIMIT = bindparam("limit", type_=Integer)
# Not "queued_at": a parameter named like a column would also be SET by the queue's UPDATE.
QUEUED_AT = bindparam("queue_time", type_=UTCDateTime())
TIME_CAP = bindparam("time_cap", type_=String)
LOCK_CAP = bindparam("lock_cap", type_=String)


def span(after_id: int, until_id: int, limit: int) -> dict[str, int]:
    """The parameters of a statement that finds or locks the next batch."""
    return {"after_id": after_id, "until_id": until_id, "limit": limit}


def caps(time_cap_ms: float, lock_cap_ms: float) -> dict[str, str]:
    """The parameters of `cap_batch`."""
    return {"time_cap": str(max(1, round(time_cap_ms))), "lock_cap": str(max(1, round(lock_cap_ms)))}


def id_range(after_id: int, last_id: int, queued_at: datetime | None = None) -> dict[str, Any]:
    """The parameters of a statement that deletes (and queues the files of) one batch."""
    values: dict[str, Any] = {"after_id": after_id, "last_id": last_id}
    if queued_at is not None:
        values["queue_time"] = queued_at
    return values


def _end_of_next_batch(table: Table, expired: ColumnElement[bool], lock: bool = False) -> Select[Any]:
    batch = (
        select(table.c.id)
        .where(table.c.id > AFTER_ID, table.c.id <= UNTIL_ID, expired)
        .order_by(table.c.id)
        .limit(LIMIT)
    )
    if lock:
        batch = batch.with_for_update(of=table)
    return select(func.max(batch.subquery().c.id))


def cap_batch() -> Select[Any]:
    """PostgreSQL: cut off the transaction's statements at `time_cap` ms and its lock waits at `lock_cap`
    ms; its COMMIT does not wait for the disk (see durability.py)."""
    # set_config(..., true) lasts until the transaction ends; a statement reads statement_timeout when it
    # starts, so this must run before the batch's first lock is taken.
    return select(
        func.set_config("statement_timeout", TIME_CAP, True),
        func.set_config("lock_timeout", LOCK_CAP, True),
        commit_without_waiting(),
    )


def cap_following_statements() -> Select[Any]:
    """PostgreSQL: cut off the transaction's following statements at `time_cap` ms."""
    return select(func.set_config("statement_timeout", TIME_CAP, True))


def _in_batch(table: Table) -> ColumnElement[bool]:
    return and_(table.c.id > AFTER_ID, table.c.id <= LAST_ID)


def select_detection_batch_end(cutoff: datetime) -> Select[Any]:
    """The highest id among the next `limit` expired detections in (after_id, until_id] (None: none left)."""
    return _end_of_next_batch(detections, detection_expired(cutoff))


def lock_next_detections_that_may_expire(cutoff: datetime) -> Select[Any]:
    """PostgreSQL: lock the next `limit` detections in (after_id, until_id] that may have expired; the
    highest id locked. Which of them have expired is for the DELETE to decide, once the locks are held."""
    return _end_of_next_batch(detections, detection_may_expire(cutoff), lock=True)


def _expired_detections_in_batch(cutoff: datetime) -> ColumnElement[bool]:
    return and_(_in_batch(detections), detection_expired(cutoff))


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


def _queue_paths(files: list[Select[Any]]) -> Insert:
    """SQLite: INSERT the distinct paths of `files` into the queue (an upsert costs SQLite no more)."""
    return queue_upsert("sqlite", distinct_paths(files, QUEUED_AT))


def delete_expired_detections_queueing_files(cutoff: datetime, delete_images: bool) -> Select[Any]:
    """PostgreSQL: in one statement, delete the batch's still-expired detections and queue their files;
    returns (rows deleted, paths queued)."""
    deleted = (
        detections.delete()
        .where(_expired_detections_in_batch(cutoff))
        .returning(detections.c.thumbnail_path, detections.c.file_path)
        .cte("deleted")
    )
    return _deleting_and_queueing(deleted, _detection_files(deleted, delete_images))


def _deleting_and_queueing(deleted: CTE, files: list[Select[Any]]) -> Select[Any]:
    """PostgreSQL: (rows deleted, distinct paths queued, _) of one DELETE ... RETURNING whose files go into
    the queue in the same statement.

    Not INSERT ... ON CONFLICT: its speculative insertion made the queue ~40 % of a detection batch.
    One outer join to the queue's path index sorts the batch's paths into new ones (plain INSERT) and
    ones already queued (UPDATE to the smaller kind, rarely any row). No other writer queues while the
    run holds its lock, and the unique index still refuses a duplicate if one ever did.
    """
    q = retention_file_queue
    paths = distinct_paths(files).cte("paths")
    matched = (
        select(paths.c.path, paths.c.kind, q.c.id.label("queued_id"), q.c.kind.label("queued_kind"))
        .select_from(paths.outerjoin(q, q.c.path == paths.c.path))
        .cte("matched")
    )
    new = select(matched.c.path, matched.c.kind, QUEUED_AT).where(matched.c.queued_id.is_(None))
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
        _lift_cap(),
    ).add_cte(inserted, rekinded)


def _lift_cap() -> ColumnElement[Any]:
    # The last statement of a capped batch lifts the cap before its COMMIT, which must never be cancelled
    # midway (a commit record already written stays committed, whatever the client is told).
    return func.set_config("statement_timeout", literal(str(PG_STATEMENT_TIMEOUT_MS)), True)


def queue_files_of_expired_detections(cutoff: datetime, delete_images: bool) -> Insert:
    """SQLite: queue the files of the batch's expired detections (the DELETE follows in the same
    transaction, which holds the write lock, so both see the same rows)."""
    batch = select(detections).where(_expired_detections_in_batch(cutoff)).subquery()
    return _queue_paths(_detection_files(batch, delete_images))


def delete_expired_detections(cutoff: datetime) -> Delete:
    """Delete the batch's detections that are still expired."""
    return detections.delete().where(_expired_detections_in_batch(cutoff))


def select_event_batch_end(cutoff: datetime) -> Select[Any]:
    """The highest id among the next `limit` expired events in (after_id, until_id] (None: none left)."""
    return select_last_id_of_expired_batch(events, "started_at", cutoff)


def lock_next_expired_events(cutoff: datetime) -> Select[Any]:
    """PostgreSQL: lock the next `limit` expired events in (after_id, until_id]; the highest id locked."""
    return _end_of_next_batch(events, older(events.c.started_at, cutoff), lock=True)


def _expired_events_in_batch(cutoff: datetime) -> ColumnElement[bool]:
    return and_(_in_batch(events), older(events.c.started_at, cutoff))


def delete_alerts_of_expired_events(cutoff: datetime) -> Delete:
    """Delete the alerts of the batch's expired events (children first, cascade or not)."""
    return alerts.delete().where(_of_expired_events(alerts.c.event_id, cutoff))


def delete_links_of_expired_events(cutoff: datetime) -> Delete:
    """Delete the event_detections rows of the batch's expired events."""
    return event_detections.delete().where(_of_expired_events(event_detections.c.event_id, cutoff))


def _of_expired_events(event_id: Any, cutoff: datetime) -> ColumnElement[bool]:
    # The id range on the child's own column lets its event_id index find the batch's children; with
    # only the IN (...) PostgreSQL read every alert per batch (hash join), 28 ms of a 2000-event batch.
    batch = select(events.c.id).where(_expired_events_in_batch(cutoff))
    return and_(event_id > AFTER_ID, event_id <= LAST_ID, event_id.in_(batch.scalar_subquery()))


def _event_clips(source: Any) -> list[Select[Any]]:
    return [
        select(source.c.clip_path.label("path"), literal("clip", String).label("kind")).where(
            source.c.clip_path != ""
        )
    ]


def delete_expired_events_queueing_clips(cutoff: datetime) -> Select[Any]:
    """PostgreSQL: in one statement, delete the batch's expired events and queue their clips;
    returns (rows deleted, paths queued)."""
    deleted = (
        events.delete().where(_expired_events_in_batch(cutoff)).returning(events.c.clip_path).cte("deleted")
    )
    return _deleting_and_queueing(deleted, _event_clips(deleted))


def queue_clips_of_expired_events(cutoff: datetime) -> Insert:
    """SQLite: queue the clips of the batch's expired events (their DELETE follows in the transaction)."""
    batch = select(events).where(_expired_events_in_batch(cutoff)).subquery()
    return _queue_paths(_event_clips(batch))


def delete_expired_events(cutoff: datetime) -> Delete:
    """Delete the batch's expired events."""
    return events.delete().where(_expired_events_in_batch(cutoff))


def select_last_id_of_expired_batch(table: Table, column: str, cutoff: datetime) -> Select[Any]:
    """The highest id among the next `limit` expired rows in (after_id, until_id] of a table."""
    return _end_of_next_batch(table, older(table.c[column], cutoff))


def delete_expired_rows(table: Table, column: str, cutoff: datetime) -> Delete:
    """Delete one id range of expired rows from a table without children."""
    return table.delete().where(_in_batch(table), older(table.c[column], cutoff))


def delete_expired_rows_lifting_cap(table: Table, column: str, cutoff: datetime) -> Select[Any]:
    """PostgreSQL: delete one id range of expired rows from a table without children and lift the batch's
    time cap; returns the rows deleted."""
    deleted = delete_expired_rows(table, column, cutoff).returning(table.c.id).cte("deleted")
    return select(select(func.count()).select_from(deleted).scalar_subquery(), _lift_cap())
