"""Named builders of the statements one purge batch runs. A run builds each statement once: the batch's
ids, size and queueing time are bound parameters given at execution (`span`, `id_range`), so no batch pays
for building a statement again (about 8 ms a batch on PostgreSQL, measured).

Bound parameters: `after_id`, `until_id`, `limit` to find (or lock) the next batch, whose ids are
(after_id, last_id]; `after_id`, `last_id`, `queue_time` (and on PostgreSQL `locked`, the ids its lock
returned) to delete it and queue its files; `time_cap` and
`lock_cap` (milliseconds) to cap a PostgreSQL batch's statements and lock waits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    CTE,
    BigInteger,
    ColumnElement,
    Delete,
    Insert,
    Integer,
    Select,
    String,
    Subquery,
    Table,
    and_,
    any_,
    bindparam,
    func,
    literal,
    select,
)

from ..db import PG_STATEMENT_TIMEOUT_MS
from ..schema import UTCDateTime, alerts, event_detections
from ..tables import Child, Expiry, MediaColumn, column_of, table_of
from .expiring import and_what_cascades, detection_may_expire, expired
from .queue import distinct_paths, queue_upsert, queueing_new_paths

CHILD_TABLES = {t.name: t for t in (alerts, event_detections)}

AFTER_ID = bindparam("after_id", type_=Integer)
UNTIL_ID = bindparam("until_id", type_=Integer)
LAST_ID = bindparam("last_id", type_=Integer)
LIMIT = bindparam("limit", type_=Integer)
# bigint: a policy table's ids may pass 2^31 (bigserial); an int column compares with it all the same.
LOCKED = bindparam("locked", type_=ARRAY(BigInteger))
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


def id_range(
    after_id: int, last_id: int, queued_at: datetime | None = None, locked: list[int] | None = None
) -> dict[str, Any]:
    """The parameters of a statement that deletes (and queues the files of) one batch (`locked`: the ids
    its lock statement returned, on PostgreSQL)."""
    values: dict[str, Any] = {"after_id": after_id, "last_id": last_id}
    if queued_at is not None:
        values["queue_time"] = queued_at
    if locked is not None:
        values["locked"] = locked
    return values


def commit_without_waiting() -> ColumnElement[Any]:
    """PostgreSQL: a column that lets the rest of its transaction COMMIT before its WAL is on disk (see
    purge/durability.py for why that is safe)."""
    return func.set_config("synchronous_commit", "off", True)


def _next_batch(table: Table, expired: ColumnElement[bool], lock: bool = False) -> Subquery:
    """The ids of the next `limit` rows of `table` in (after_id, until_id] matching `expired` (locked)."""
    batch = (
        select(table.c.id)
        .where(table.c.id > AFTER_ID, table.c.id <= UNTIL_ID, expired)
        .order_by(table.c.id)
        .limit(LIMIT)
    )
    return (batch.with_for_update(of=table) if lock else batch).subquery()


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


def select_batch_end(expiry: Expiry, table: str) -> Select[Any]:
    """The highest id among the next `limit` expired rows of `table` in (after_id, until_id] (None: none
    left)."""
    return select(func.max(_next_batch(_table(expiry, table), expired(expiry, table)).c.id))


def lock_next_batch(expiry: Expiry, table: str) -> Select[Any, Any]:
    """PostgreSQL: lock the next `limit` rows of `table` in (after_id, until_id] that may have expired; the
    highest id locked and every id locked. For detections, which of them have expired is for the DELETE to
    decide, once the locks are held, among the locked rows only."""
    may_expire = detection_may_expire(expiry) if table == "detections" else expired(expiry, table)
    locked = _next_batch(_table(expiry, table), may_expire, lock=True)
    return select(func.max(locked.c.id), func.array_agg(locked.c.id))


def _table(expiry: Expiry, table: str) -> Table:
    return table_of(expiry.registry[table])


def _expired_in_batch(expiry: Expiry, table: str) -> ColumnElement[bool]:
    return and_(_in_batch(_table(expiry, table)), expired(expiry, table))


def _expired_and_locked(expiry: Expiry, table: str) -> ColumnElement[bool]:
    # A row of the id range the batch did not lock (young when it locked) may expire meanwhile through a
    # link committed since, and may gain a retained event's link that this statement's snapshot misses:
    # only locked rows, which no link can reach until the batch ends, are safe to judge now.
    return and_(_expired_in_batch(expiry, table), _table(expiry, table).c.id == any_(LOCKED))


def _files(source: Any, media: tuple[MediaColumn, ...]) -> list[Select[Any]]:
    """(path, kind) of each file named by the rows in `source` (NULL or '': none)."""
    return [
        select(source.c[m.column].label("path"), literal(m.kind, String).label("kind")).where(
            source.c[m.column] != ""
        )
        for m in media
    ]


def _media_columns(expiry: Expiry, table: str, media: tuple[MediaColumn, ...]) -> list[Any]:
    entry = expiry.registry[table]
    return [column_of(entry, m.column, String()).label(m.column) for m in media]


def _queue_paths(files: list[Select[Any]]) -> Insert:
    """SQLite: INSERT the distinct paths of `files` into the queue (an upsert costs SQLite no more)."""
    return queue_upsert("sqlite", distinct_paths(files, QUEUED_AT))


def delete_expired_queueing_files(expiry: Expiry, table: str, media: tuple[MediaColumn, ...]) -> Select[Any]:
    """PostgreSQL: in one statement, delete the batch's (still) expired rows and queue their files;
    returns (rows deleted, paths queued, _)."""
    target = _table(expiry, table)
    deleted = (
        target.delete()
        .where(_expired_and_locked(expiry, table))
        .returning(*(_media_columns(expiry, table, media) or [target.c.id]))
        .cte("deleted")
    )
    if not media:  # a table without files of its own whose CASCADE children have some
        return select(select(func.count()).select_from(deleted).scalar_subquery(), literal(0), _lift_cap())
    return _deleting_and_queueing(deleted, _files(deleted, media))


def _deleting_and_queueing(deleted: CTE, files: list[Select[Any]]) -> Select[Any]:
    """PostgreSQL: (rows deleted, distinct paths queued, _) of one DELETE ... RETURNING whose files go into
    the queue in the same statement."""
    matched, inserted, rekinded = queueing_new_paths(files, QUEUED_AT)
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


def queue_files_of_expired(expiry: Expiry, table: str, media: tuple[MediaColumn, ...]) -> Insert | None:
    """SQLite: queue the files of the batch's expired rows (the DELETE follows in the same transaction,
    which holds the write lock, so both see the same rows); None without media."""
    if not media:
        return None
    target = _table(expiry, table)
    batch = (
        select(*_media_columns(expiry, table, media))
        .select_from(target)
        .where(_expired_in_batch(expiry, table))
        .subquery()
    )
    return _queue_paths(_files(batch, media))


def delete_expired(expiry: Expiry, table: str) -> Delete:
    """Delete the batch's rows of `table` that are (still) expired."""
    return _table(expiry, table).delete().where(_expired_in_batch(expiry, table))


def delete_children(expiry: Expiry, table: str, child: Child, locked: bool = False) -> Delete:
    """Delete the rows of `child` that belong to the batch's expired rows of `table` (children first,
    cascade or not; `locked`: of its expired rows among the `locked` ids, on PostgreSQL)."""
    target = _table(expiry, table)
    child_table = CHILD_TABLES[child.table]
    parent_id = child_table.c[child.column]
    # The id range on the child's own column lets its index find the batch's children; with only the
    # IN (...) PostgreSQL read every alert per batch (hash join).
    rows = _expired_and_locked(expiry, table) if locked else _expired_in_batch(expiry, table)
    batch = select(target.c.id).where(rows)
    return child_table.delete().where(
        parent_id > AFTER_ID, parent_id <= LAST_ID, parent_id.in_(batch.scalar_subquery())
    )


def queue_files_of_cascaded(
    expiry: Expiry, table: str, dialect_name: str, locked: bool = False
) -> list[Insert]:
    """Queue the files of the rows ON DELETE CASCADE takes, at any depth, with the batch's expired rows of
    `table` (`locked`: of its expired rows among the `locked` ids, on PostgreSQL); one statement for each
    table with files."""
    target = _table(expiry, table)
    rows = _expired_and_locked(expiry, table) if locked else _expired_in_batch(expiry, table)
    batch = select(target.c.id).where(rows).scalar_subquery()
    statements = []
    for entry in expiry.registry.tables:
        for parent, column in entry.cascades_from:
            if parent != table:
                continue
            reference = column_of(entry, column, BigInteger())
            # The id range on the child's own column lets an index on it find the batch's children.
            children = and_(reference > AFTER_ID, reference <= LAST_ID, reference.in_(batch))
            for taken, taken_rows in and_what_cascades(expiry, entry, children):
                if taken.files:
                    named = (
                        select(*_media_columns(expiry, taken.name, taken.files))
                        .select_from(table_of(taken))
                        .where(taken_rows)
                        .subquery()
                    )
                    statements.append(
                        queue_upsert(dialect_name, distinct_paths(_files(named, taken.files), QUEUED_AT))
                    )
    return statements


def delete_expired_lifting_cap(expiry: Expiry, table: str) -> Select[Any]:
    """PostgreSQL: delete the batch's expired rows of a table without files or children and lift the
    batch's time cap; returns the rows deleted."""
    deleted = delete_expired(expiry, table).returning(_table(expiry, table).c.id).cte("deleted")
    return select(select(func.count()).select_from(deleted).scalar_subquery(), _lift_cap())
