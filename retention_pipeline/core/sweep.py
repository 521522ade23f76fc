"""Removing the files of deleted rows: drain the durable queue after the rows' commit, or, for a dry run,
preview exactly what that drain would do for the rows a run at the cutoff would delete.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import islice

from sqlalchemy.engine import Engine

from . import queries
from .db import write_transaction
from .files import Outcome, StorageRoots, remove_file
from .purge import queue_files
from .stats import FileCounts

Progress = Callable[[str], None]
# Paths per reference check: each brings two to four aliases as bound parameters, which keeps a
# statement under SQLite's limit of 32766 while scanning an unindexed path column as rarely as possible.
CHECK_CHUNK = 2000
UNLINK_THREADS = 4  # unlink releases the GIL; a few threads overlap the file system's latency


def _no_progress(_message: str) -> None:
    pass


def referenced_paths(
    engine: Engine,
    roots: StorageRoots,
    stored: Sequence[str],
    surviving_at: datetime | None = None,
) -> set[str]:
    """The stored paths that some row still references, under any of their aliases."""
    aliases = {path: roots.aliases(path) for path in stored}
    # PostgreSQL text cannot hold NUL; such a name cannot be stored there, so it cannot be referenced.
    names = sorted({a for names in aliases.values() for a in names if "\x00" not in a})
    if not names:
        return set()
    statement = queries.select_referenced_paths(names, engine.dialect.name, surviving_at)
    with engine.connect() as conn:
        hits = set(conn.execute(statement).scalars())
    return {path for path, names in aliases.items() if hits.intersection(names)}


def _settle(
    counts: FileCounts,
    roots: StorageRoots,
    entries: Sequence[tuple[str, str]],
    referenced: set[str],
    dry_run: bool,
    pool: ThreadPoolExecutor,
) -> set[str]:
    """Keep referenced files, remove (or preview removing) the rest, and count every outcome.

    Returns the paths whose unlink was refused (permissions, I/O), which stay queued for the next run.
    """
    loose = [(path, kind) for path, kind in entries if path not in referenced]
    counts.files_kept_shared += len(entries) - len(loose)
    resolved_dirs: dict[str, str] = {}  # shared by this chunk only

    def remove_slice(entries: Sequence[tuple[str, str]]) -> list[tuple[Outcome, int]]:
        return [remove_file(roots, path, dry_run, resolved_dirs) for path, _kind in entries]

    # One task per thread and chunk: a task per file would cost more than its unlink.
    step = max(1, -(-len(loose) // UNLINK_THREADS))
    slices = [loose[start : start + step] for start in range(0, len(loose), step)]
    outcomes = [outcome for part in pool.map(remove_slice, slices) for outcome in part]
    blocked: set[str] = set()
    for (path, kind), (outcome, freed) in zip(loose, outcomes, strict=True):
        if outcome is Outcome.DELETED:
            counts.count_deleted(kind, freed)
        elif outcome is Outcome.MISSING:
            counts.files_missing += 1
        elif outcome is Outcome.REFUSED:
            counts.files_refused += 1
            counts.note(counts.refused_examples, path)
        else:
            counts.files_failed += 1
            counts.note(counts.failed_examples, path)
            if outcome is Outcome.BLOCKED:
                blocked.add(path)
    return blocked


def drain_file_queue(
    engine: Engine,
    roots: StorageRoots,
    progress: Progress = _no_progress,
    after_id: int = 0,
    last_id: int | None = None,
) -> FileCounts:
    """Delete the queued files in ids (after_id, last_id] that no row references any more, then forget
    them, chunk by chunk; `last_id` None means to the end of the queue.

    The queue row goes only after its file is handled, so a crash here repeats the chunk next time
    (a file already gone is then counted as missing).
    """
    counts = FileCounts()
    if last_id is None:
        # Stop at today's end of the queue: files re-queued after a failure wait for the next run.
        with engine.connect() as conn:
            last_id = conn.execute(queries.select_last_queued_id()).scalar()
        if last_id is None:
            return counts
    with ThreadPoolExecutor(UNLINK_THREADS) as pool:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(queries.select_queued_files(after_id, CHECK_CHUNK, last_id)).all()
            if not rows:
                break
            entries = [(row.path, row.kind) for row in rows]
            referenced = referenced_paths(engine, roots, [path for path, _ in entries])
            blocked = _settle(counts, roots, entries, referenced, dry_run=False, pool=pool)
            with write_transaction(engine) as conn:
                conn.execute(queries.delete_queued_files(after_id, rows[-1].id))
                # A file that could not be deleted stays queued: the next run tries again.
                kept = {path: kind for path, kind in entries if path in blocked}
                if kept:
                    queue_files(conn, kept)
            after_id = rows[-1].id
            progress(f"files: {_summary(counts)}")
    return counts


def queue_ranges(engine: Engine, size: int) -> Iterator[tuple[int, int | None]]:
    """Split the queue into id ranges of about `size` files, so workers can drain them in parallel.

    Always yields at least one range, so the file step runs (and reports) even with an empty queue.
    """
    after_id = 0
    while True:
        with engine.connect() as conn:
            boundary = conn.execute(queries.select_queue_boundary(after_id, size)).scalar()
        if boundary is None:
            yield after_id, None
            return
        yield after_id, boundary
        after_id = boundary


def preview_file_deletions(
    engine: Engine,
    roots: StorageRoots,
    cutoff: datetime,
    delete_images: bool,
    progress: Progress = _no_progress,
) -> FileCounts:
    """What a real run at this cutoff would do to files, without touching any.

    The distinct candidate paths (files of rows that would expire, plus files already queued) are
    streamed from the database into a temporary file first, so the read transaction lasts one query,
    not the whole preview (a long one would hold back WAL checkpoints and vacuum), and memory does not
    grow with their number. The checks and stat() calls then run chunk by chunk from that file.
    """
    counts = FileCounts()
    statement = queries.select_stale_file_candidates(cutoff, delete_images)
    with tempfile.TemporaryFile("w+", newline="", encoding="utf-8", errors="surrogateescape") as spill:
        writer = csv.writer(spill)
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=CHECK_CHUNK).execute(statement)
            for part in result.partitions():
                writer.writerows((row.path, row.kind) for row in part)
        spill.seek(0)
        rows = csv.reader(spill)
        with ThreadPoolExecutor(UNLINK_THREADS) as pool:
            while entries := [(path, kind) for path, kind in islice(rows, CHECK_CHUNK)]:
                referenced = referenced_paths(
                    engine, roots, [path for path, _ in entries], surviving_at=cutoff
                )
                _settle(counts, roots, entries, referenced, dry_run=True, pool=pool)
                progress(f"files (dry run): {_summary(counts)}")
    return counts


def _summary(counts: FileCounts) -> str:
    deleted = counts.thumbnails_deleted + counts.images_deleted + counts.clips_deleted
    return (
        f"{deleted} deleted ({counts.space_reclaimed} bytes), {counts.files_kept_shared} kept shared,"
        f" {counts.files_missing} missing, {counts.files_refused} refused,"
        f" {counts.files_failed} failed"
    )
