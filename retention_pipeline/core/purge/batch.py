"""One purge batch, whatever the engine: what it reports, and the parts both engines share (where the next
batch ends, deleting a batch's children). The engines' batches are in postgresql.py and sqlite.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from ..queries import purge_batch
from ..tables import Child, Expiry


@dataclass(frozen=True)
class Batch:
    """One committed batch: the id it reached (None when nothing was left), what it deleted, and how long
    its write transaction was open (from BEGIN to the end of COMMIT). `overran`: cut off at its time cap
    and rolled back, nothing deleted; the same ids are due again, in a smaller batch."""

    last_id: int | None
    deleted: int = 0
    children: int = 0
    queued: int = 0
    seconds: float = 0.0
    overran: bool = False


# One batch: (after_id, until_id, limit) -> what it committed.
Step = Callable[[int, int, int], Batch]
Execute = Callable[[Any, dict[str, Any]], Any]  # runs one statement of the batch; returns its result
# Deletes a batch's children (its id_range): how many counted children went, how many paths it queued.
Children = Callable[[Execute, dict[str, Any]], tuple[int, int]]


def batch_end(engine: Engine, statement: Any, parameters: dict[str, int]) -> int | None:
    """Where the next batch ends, found in a read transaction: scanning for it takes no write lock."""
    with engine.connect() as conn:
        value = conn.execute(statement, parameters).scalar()
    return None if value is None else int(value)


def children_deleter(
    expiry: Expiry,
    table: str,
    children: tuple[Child, ...],
    locked: bool = False,
    dialect_name: str = "sqlite",
) -> Children | None:
    """Delete a batch's children, each table in turn, and queue the files of the rows its CASCADE foreign
    keys will take with it; returns how many of the counted children went and how many paths were queued
    (`locked`: only children of the rows the batch locked, on PostgreSQL). None: the table has neither."""
    deletes = [
        (purge_batch.delete_children(expiry, table, child, locked), child.counted) for child in children
    ]
    queues = purge_batch.queue_files_of_cascaded(expiry, table, dialect_name, locked)
    if not deletes and not queues:
        return None

    def delete(execute: Execute, batch: dict[str, Any]) -> tuple[int, int]:
        # Before any child's DELETE, while every row the cascades will take is still there to be read.
        queued = sum(int(execute(statement, batch).rowcount) for statement in queues)
        counted = 0
        for statement, is_counted in deletes:
            rows = int(execute(statement, batch).rowcount)
            counted += rows if is_counted else 0
        return counted, queued

    return delete
