"""The durable file queue: paths queued in the transaction that deletes their rows, and drained after the
rows' commit, chunk by chunk, by the file step (removing the files no row references any more).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from sqlalchemy.engine import Connection, Engine

from ..db import is_utf8, text_bytes, write_transaction
from ..files import HardLinks, StorageRoots
from ..lock import raise_if_lost
from ..queries import queue
from ..stats import FileCounts
from ..tables import Registry
from .file_checks import (
    Progress,
    check_sizes,
    delete_unreferenced,
    no_progress,
    referenced_paths,
    unlink_chunks,
)
from .file_workers import ChunkFailed, in_parallel
from .offline_roots import OfflineRoots
from .pacing import PROGRESS_EVERY_S

# Told how many files of a range are handled so far (the job tracker's progress).
FilesHandled = Callable[[int], None]


def queue_files(connection: Connection, paths: dict[str, str]) -> int:
    """Queue {path: kind} for deletion inside the caller's transaction; returns how many were given."""
    if not paths:
        return 0
    now = datetime.now(UTC)
    rows, raw = [], []
    for path, kind in sorted(paths.items()):
        if is_utf8(path):
            rows.append({"path": path, "kind": kind, "queued_at": now})
        else:
            # Read from SQLite (PostgreSQL cannot store such a path): it goes back as the bytes it was.
            raw.append({"raw": text_bytes(path), "kind": kind, "queued_at": now})
    # One cached statement, many parameter sets: SQLAlchemy batches them ("insertmanyvalues").
    if rows:
        connection.execute(queue.insert_queued_file(connection.dialect.name), rows)
    if raw:
        connection.execute(queue.insert_queued_file_from_bytes(), raw)
    return len(paths)


def drain_file_queue(
    engine: Engine,
    roots: StorageRoots,
    progress: Progress = no_progress,
    after_id: int = 0,
    last_id: int | None = None,
    progress_every_s: float = PROGRESS_EVERY_S,
    registry: Registry | None = None,
    files_handled: FilesHandled | None = None,
    offline: OfflineRoots | None = None,
) -> FileCounts:
    """Delete the queued files in ids (after_id, last_id] that no row references any more, then forget
    them, chunk by chunk; `last_id` None means to the end of the queue. `offline`: the roots the run found
    missing or empty when it was planned (looked at now if not given). `files_handled` is told how many
    files of the range are handled so far, after each chunk.

    The queue rows of a chunk go only after its files are handled, so a crash here repeats the chunk next
    time (a file already gone is then counted as missing). A failing chunk raises FilesFailed (a
    RunLockLost too when the lock was lost) with the counts of the chunks handled.
    """
    if last_id is None:
        # Stop at today's end of the queue: files re-queued after a failure wait for the next run.
        with engine.connect() as conn:
            last_id = conn.execute(queue.select_last_queued_id()).scalar()
        if last_id is None:
            return FileCounts()

    Chunk = tuple[int, list[tuple[int, str, str]], set[str]]
    handled, handled_lock = [0], threading.Lock()
    links = HardLinks()
    offline = offline or OfflineRoots.look(roots)

    def chunks() -> Iterator[Chunk]:
        # Runs on the caller's thread: the next reference check overlaps the workers' unlinks.
        start = after_id
        for size in check_sizes():
            with engine.connect() as conn:
                # Plain tuples: a Row's fields looked up by name were a seventh of the drain's Python work.
                rows = [
                    (i, path, kind)
                    for i, path, kind in conn.execute(queue.select_queued_files(start, size, last_id))
                ]
            if not rows:
                return
            referenced = referenced_paths(engine, roots, [path for _id, path, _kind in rows], registry)
            for part in unlink_chunks(rows):
                yield start, part, referenced
                start = part[-1][0]

    def handle(chunk: Chunk) -> FileCounts:
        start, rows, referenced = chunk
        counts = FileCounts()
        entries = [(path, kind) for _id, path, kind in rows]
        # Once a worker's commit has found the run's lock lost, another run may be draining: the other
        # workers stop before unlinking, not only at their commit.
        raise_if_lost(engine)
        staying = delete_unreferenced(counts, roots, entries, referenced, False, links, offline)
        try:
            with write_transaction(engine) as conn:
                conn.execute(queue.delete_queued_files(start, rows[-1][0]))
                # A file that could not be deleted, or whose volume looks unmounted, stays queued: the next
                # run tries again.
                if kept := {path: kind for path, kind in entries if path in staying}:
                    queue_files(conn, kept)
        except Exception as exc:
            # Its files are gone though its queue rows stay (the next run finds them missing): counted
            # with the failure, or the run would report less than it deleted.
            raise ChunkFailed(counts) from exc
        if files_handled is not None:
            # Files, not ids: ids have gaps, and the first range starts at 0 whatever the first queued id.
            with handled_lock:
                handled[0] += len(rows)
                files_handled(handled[0])
        return counts

    # A failure carries what the chunks before it deleted: their files are gone whatever happens next.
    return in_parallel(chunks(), handle, progress, "files", progress_every_s, counted_failure=True)


def queue_ranges(engine: Engine, size: int | None) -> Iterator[tuple[int, int | None]]:
    """Split the queue into id ranges of about `size` files (None: one range), so workers can drain them
    in parallel.

    Always yields at least one range, so the file step runs (and reports) even with an empty queue. The
    last range ends at today's end of the queue too: a file an earlier range queues again after a failed
    unlink waits for the next run instead of being tried, and counted, twice in this one.
    """
    after_id = 0
    while True:
        with engine.connect() as conn:
            boundary = (
                None if size is None else conn.execute(queue.select_queue_boundary(after_id, size)).scalar()
            )
            last_id = conn.execute(queue.select_last_queued_id()).scalar() if boundary is None else None
        if boundary is None:
            if after_id == 0 or (last_id or 0) > after_id:  # no empty share after the others
                yield after_id, last_id
            return
        yield after_id, boundary
        after_id = boundary
