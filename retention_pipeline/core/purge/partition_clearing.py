"""PostgreSQL: clearing the way for a wholly expired partition's drop. What a batch's DELETE would have
done to its rows is done set-based, in chunks of their ids, each its own transaction held to the batches'
time cap: their files go into the durable queue, the children the purge empties itself are deleted, and
each foreign key's ON DELETE is applied to the rows referencing them. The partition's own rows stay until
its drop.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from ..db import write_transaction
from ..queries import partition_drop
from ..queries.partition_drop import ForeignKey
from ..tables import Child, Expiry, MediaColumn
from . import postgresql

if TYPE_CHECKING:
    from .pacing import BatchSizer

# Runs one transaction's work, repeating it after a transient error (the purge loop's with_retries).
Retry = Callable[[Callable[[], Any]], Any]


@dataclass
class Cleared:
    """What clearing did: rows seen (and the sum of their ids), counted children deleted, paths queued,
    its longest transaction."""

    rows: int = 0
    id_sum: int = 0
    children: int = 0
    queued: int = 0
    longest_s: float = 0.0
    given_up: bool = False  # even one row's clearing ran past the time cap


@dataclass(frozen=True)
class Work:
    """How clearing runs: images or not, chunks sized like batches, each repeated after a transient error."""

    delete_images: bool
    sizer: BatchSizer
    retry: Retry


Chunk = tuple[int | None, int, int, int, int]  # last id, rows, id sum, children counted, paths queued


def clear_the_way(
    engine: Engine,
    expiry: Expiry,
    table: str,
    source: Table,
    rows: ColumnElement[bool],
    work: Work,
    files: bool,
    children: bool,
    foreign_keys: tuple[ForeignKey, ...] = (),
    media: tuple[MediaColumn, ...] | None = None,
) -> Cleared:
    """For `rows` (of `source`: the table, or a partition of it detached), queue their files (`files`),
    delete the children the purge empties itself (`children`) and apply `foreign_keys`' ON DELETE, a chunk
    of their ids per transaction, chunks sized and capped like batches, each repeated after a transient
    error. Counts the rows either way. `media`: the media columns `source` has, when not all the entry's."""
    entry = expiry.registry[table]
    media = (entry.media(work.delete_images) if media is None else media) if files else ()
    kids = entry.children if children else ()
    cleared, after_id = Cleared(), 0

    def counted_through(key: ForeignKey) -> tuple[Child, ...]:
        return tuple(
            child
            for child in entry.children
            if child.counted and child.table == key.table and child.column in key.columns
        )

    queued_at = datetime.now(UTC)
    cap_ms = work.sizer.time_cap_ms
    caps = postgresql.batch_caps(cap_ms)

    def one_chunk(after_id: int, size: int) -> tuple[Chunk | None, float]:
        """The chunk after `after_id`, or None when it ran past the batches' time cap and was rolled
        back; and its transaction's seconds. Like a batch, its statements together must end within the
        cap, its lock waits sooner, and its COMMIT does not wait for the disk (the step's last commit
        waits for them all)."""
        counted = queued = 0
        started = time.perf_counter()
        try:
            with write_transaction(engine) as conn:
                conn.execute(postgresql.CAP_BATCH, caps)
                execute = postgresql.within_cap(conn, started, cap_ms) if cap_ms else conn.execute
                last_id = execute(partition_drop.next_chunk_end(source, rows, after_id, size), {}).scalar()
                chunk = partition_drop.chunk(source, rows, after_id, last_id)
                seen, id_sum = execute(partition_drop.count_rows(source, chunk), {}).one()
                if media:
                    queue = partition_drop.queue_files_of_rows(source, media, chunk, queued_at)
                    queued = execute(queue, {}).scalar_one()
                for child in kids:
                    gone = execute(partition_drop.delete_children_of_rows(source, child, chunk), {})
                    counted += gone.rowcount if child.counted else 0
                for key in foreign_keys:
                    for cascaded in partition_drop.queue_files_of_cascaded(
                        expiry, table, key, chunk, queued_at
                    ):
                        queued += execute(cascaded, {}).scalar_one()
                    # A counted child the foreign key comes from (alerts referencing partitioned events by
                    # their whole key) is deleted as the child, and counted, as the batches count it: the
                    # key's ON DELETE would take the same rows uncounted, and the child step after the
                    # detach would find none left.
                    for child in counted_through(key):
                        taken = execute(partition_drop.delete_children_of_rows(source, child, chunk), {})
                        counted += taken.rowcount
                    execute(partition_drop.apply_on_delete(expiry, table, key, chunk), {})
        except postgresql.OutOfTime:
            return None, time.perf_counter() - started
        except DBAPIError as exc:
            if not postgresql.cut_off_at_cap(exc, cap_ms):
                raise
            return None, time.perf_counter() - started
        return (last_id, seen, int(id_sum), counted, queued), time.perf_counter() - started

    while True:
        # Timed inside: a failed attempt and the pause before the next are with_retries' own to count.
        done, seconds = work.retry(functools.partial(one_chunk, after_id, work.sizer.size))
        cleared.longest_s = max(cleared.longest_s, seconds)
        if done is None:
            if work.sizer.size == 1:
                # Even one row's clearing outlasts the cap: the batched delete, with its own rules for
                # that, takes the partition's rows (the files queued so far stay queued, harmlessly).
                cleared.given_up = True
                return cleared
            work.sizer.overran()
            continue
        last_id, seen, id_sum, counted, queued = done
        cleared.rows += seen
        cleared.id_sum += id_sum
        cleared.children += counted
        cleared.queued += queued
        work.sizer.record(seconds)
        if last_id is None:
            return cleared
        after_id = last_id
