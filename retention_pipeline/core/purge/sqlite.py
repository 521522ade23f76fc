"""SQLite's purge batches: the database has one write lock (taken at BEGIN IMMEDIATE, see db.py), so a
batch finds its end in a read transaction and then deletes under that lock; between batches, writers get
their turns.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from ..db import write_transaction
from ..queries import purge_batch
from ..tables import Expiry
from .batch import Batch, Children, Step, batch_end


class WriterTurns:
    """Between SQLite batches, now and then leave the write lock free for longer than a waiting writer
    sleeps, so every writer gets its turn within about a second.

    A writer blocked by SQLite's busy handler sleeps 1-100 ms between attempts; a batch that begins
    right after the previous commit can win the lock again and again while it sleeps. PostgreSQL locks
    rows, not the database, and needs no turns.
    """

    EVERY_S = 0.4
    TURN_S = 0.12  # longer than the busy handler's longest sleep (100 ms)

    def __init__(self, engine: Engine) -> None:
        self._enabled = engine.dialect.name == "sqlite"
        self._since = time.monotonic()

    def after_commit(self) -> None:
        """Call after each write batch."""
        if self._enabled and time.monotonic() - self._since >= self.EVERY_S:
            time.sleep(self.TURN_S)
            self._since = time.monotonic()


def rows_with_files(
    engine: Engine, batch_end_at: Any, queue: Any, delete: Any, children: Children | None = None
) -> Step:
    """Find where the next batch ends in a read transaction, then in one write transaction delete its
    children, queue its files and delete its rows. The write lock is the database's: nothing changes
    between the queueing INSERT's read and the DELETE."""

    def step(after_id: int, until_id: int, limit: int) -> Batch:
        last_id = batch_end(engine, batch_end_at, purge_batch.span(after_id, until_id, limit))
        if last_id is None:
            return Batch(None)
        now = datetime.now(UTC)
        started = time.perf_counter()
        batch = purge_batch.id_range(after_id, last_id, now)
        with write_transaction(engine) as conn:
            deleted_children, queued = children(conn.execute, batch) if children else (0, 0)
            queued += conn.execute(queue, batch).rowcount if queue is not None else 0
            deleted = conn.execute(delete, batch).rowcount
        seconds = time.perf_counter() - started
        return Batch(last_id, deleted=deleted, children=deleted_children, queued=queued, seconds=seconds)

    return step


def plain_rows(engine: Engine, expiry: Expiry, table: str) -> Step:
    """A table without files or children: find the batch's end, then delete it."""
    batch_end_at = purge_batch.select_batch_end(expiry, table)
    delete = purge_batch.delete_expired(expiry, table)

    def step(after_id: int, until_id: int, limit: int) -> Batch:
        last_id = batch_end(engine, batch_end_at, purge_batch.span(after_id, until_id, limit))
        if last_id is None:
            return Batch(None)
        started = time.perf_counter()
        with write_transaction(engine) as conn:
            deleted = conn.execute(delete, purge_batch.id_range(after_id, last_id)).rowcount
        return Batch(last_id, deleted=deleted, seconds=time.perf_counter() - started)

    return step
