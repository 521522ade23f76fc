"""The durable file queue: paths queued in a purge batch's transaction, read and forgotten by the drain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Delete,
    Insert,
    LargeBinary,
    Select,
    String,
    bindparam,
    cast,
    func,
    insert,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningInsert

from ..schema import retention_file_queue


def distinct_paths(files: list[Select[Any]], *also: Any) -> Select[Any]:
    """Each path of `files` once, with its smallest kind (and the columns in `also`)."""
    every = union_all(*files).subquery()
    # On SQLite the WHERE also keeps ON CONFLICT from being read as a join constraint of INSERT ... SELECT.
    return (
        select(every.c.path, func.min(every.c.kind).label("kind"), *also)
        .where(every.c.path.is_not(None))
        .group_by(every.c.path)
    )


def insert_queued_file(dialect_name: str) -> Insert | ReturningInsert[Any]:
    """Queue one file path for deletion (executed with many rows)."""
    if dialect_name == "postgresql":
        # RETURNING makes SQLAlchemy batch the rows into multi-row VALUES ("insertmanyvalues");
        # without it psycopg2 sends one statement per row, ten times slower.
        return queue_upsert(dialect_name).returning(retention_file_queue.c.id)
    return queue_upsert(dialect_name)


def text_from_bytes(name: str) -> ColumnElement[str]:
    """SQLite: a text value bound as its bytes (parameter `name`, see db.text_bytes), for a path that is
    not UTF-8; the CAST keeps the bytes as they are, so the value equals the text a writer stored."""
    return cast(bindparam(name, type_=LargeBinary), String)


def insert_queued_file_from_bytes() -> Insert:
    """SQLite: `insert_queued_file` for a path that is not UTF-8, given as its bytes (`raw`)."""
    q = retention_file_queue.c
    values = {
        "path": text_from_bytes("raw"),
        "kind": bindparam("kind", type_=q.kind.type),
        "queued_at": bindparam("queued_at", type_=q.queued_at.type),
    }
    return queue_upsert("sqlite").values(values)


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


def queueing_new_paths(files: list[Select[Any]], queued_at: Any) -> tuple[CTE, CTE, CTE]:
    """PostgreSQL: the CTEs that queue the distinct paths of `files` (matched, inserted, rekinded); a
    statement selecting from `matched` and adding the other two queues them.

    Not INSERT ... ON CONFLICT: its speculative insertion made the queue ~40 % of a detection batch.
    One outer join to the queue's path index sorts the paths into new ones (plain INSERT) and ones already
    queued (UPDATE to the smaller kind, rarely any row). No other writer queues while the run holds its
    lock, and the unique index still refuses a duplicate if one ever did.
    """
    q = retention_file_queue
    paths = distinct_paths(files).cte("paths")
    matched = (
        select(paths.c.path, paths.c.kind, q.c.id.label("queued_id"), q.c.kind.label("queued_kind"))
        .select_from(paths.outerjoin(q, q.c.path == paths.c.path))
        .cte("matched")
    )
    new = select(matched.c.path, matched.c.kind, queued_at).where(matched.c.queued_id.is_(None))
    inserted = insert(q).from_select(["path", "kind", "queued_at"], new).returning(q.c.id).cte("inserted")
    rekinded = (
        update(q)
        .where(q.c.id == matched.c.queued_id, matched.c.kind < matched.c.queued_kind)
        .values(kind=matched.c.kind)
        .returning(q.c.id)
        .cte("rekinded")
    )
    return matched, inserted, rekinded


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
