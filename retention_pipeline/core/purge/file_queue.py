"""Removing the files of deleted rows: drain the durable queue after the rows' commit, or, for a dry run,
preview exactly what that drain would do for the rows a run at the cutoff would delete.
"""

from __future__ import annotations

import csv
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from itertools import islice
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine

from ..db import write_transaction
from ..files import Outcome, StorageRoots, remove_file, remove_files
from ..queries import path_checks, queue
from ..stats import FileCounts
from ..tables import Expiry, Registry
from .loop import PROGRESS_EVERY_S, EverySoOften, Share

Progress = Callable[[str], None]
T = TypeVar("T")
# Queued paths per unlink chunk and per commit of the drained queue rows.
CHECK_CHUNK = 2000
# Paths per reference check. Each check reads the referencing rows once (a hash join on PostgreSQL, the
# staged names' own index on SQLite): without indexes on the path columns a check per unlink chunk made
# the file step quadratic in the table's size, so chunks of unlinks share one check.
REFERENCE_CHUNK = 25_000
# Chunks handled at once. An unlink mostly waits on the file system, so more threads than cores overlap
# those waits; past eight, threads mostly wait for the GIL instead.
FILE_WORKERS = 8


def _no_progress(_message: str) -> None:
    pass


def referenced_paths(
    engine: Engine,
    roots: StorageRoots,
    stored: Sequence[str],
    registry: Registry | None = None,
    surviving: Expiry | None = None,
) -> set[str]:
    """The stored paths that some row of a retention table still references, under any of their aliases
    (`surviving`: rows a run with that expiry deletes do not count)."""
    folders: dict[str, tuple[str, ...]] = {}
    aliases = {path: roots.aliases(path, folders) for path in stored}
    # PostgreSQL text cannot hold NUL; such a name cannot be stored there, so it cannot be referenced.
    names = sorted({a for names in aliases.values() for a in names if "\x00" not in a})
    if not names:
        return set()
    dialect = engine.dialect.name
    with engine.connect() as conn:
        for statement in path_checks.create_check_names(dialect):
            conn.execute(statement)
        conn.commit()
        conn.execute(path_checks.stage_check_names(dialect), path_checks.check_names_param(names))
        if dialect == "postgresql":
            conn.execute(path_checks.prefer_index_lookups())
        hits = set(
            conn.execute(path_checks.select_referenced_names(registry or Registry(), surviving)).scalars()
        )
        if dialect == "sqlite":
            conn.execute(path_checks.clear_check_names())
        conn.commit()  # PostgreSQL empties the scratch table at COMMIT
    return {path for path, names in aliases.items() if hits.intersection(names)}


def _delete_unreferenced(
    counts: FileCounts,
    roots: StorageRoots,
    entries: Sequence[tuple[str, str]],
    referenced: set[str],
    dry_run: bool,
) -> set[str]:
    """Keep referenced files, remove (or preview removing) the rest, and count every outcome.

    Returns the paths whose unlink was refused (permissions, I/O), which stay queued for the next run.
    """
    resolved_dirs: dict[str, str] = {}  # shared by this chunk only
    counts.files_kept_shared += sum(1 for path, _kind in entries if path in referenced)
    doomed = [(path, kind) for path, kind in entries if path not in referenced]
    stored = [path for path, _kind in doomed]
    if dry_run:
        outcomes = [remove_file(roots, path, True, resolved_dirs) for path in stored]
    else:
        outcomes = remove_files(roots, stored, resolved_dirs)
    blocked: set[str] = set()
    for (path, kind), (outcome, freed) in zip(doomed, outcomes, strict=True):
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


def _in_parallel(
    chunks: Iterable[T],
    handle: Callable[[T], FileCounts],
    progress: Progress,
    label: str,
    progress_every_s: float,
) -> FileCounts:
    """Handle chunks on worker threads, a few in flight at a time, and sum their counts.

    The reference check of one chunk waits on the database while another chunk's unlinks wait on the
    file system; both release the GIL, so the two overlap. At most 2 x FILE_WORKERS chunks are held.
    """
    total = FileCounts()
    every_so_often = EverySoOften(progress, progress_every_s)
    with ThreadPoolExecutor(FILE_WORKERS) as pool:
        pending: set[Future[FileCounts]] = set()
        try:
            for chunk in chunks:
                pending.add(pool.submit(handle, chunk))
                if len(pending) >= 2 * FILE_WORKERS:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    total = _add(total, done, every_so_often, label)
            total = _add(total, pending, every_so_often, label, last=True)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return total


def _add(
    total: FileCounts,
    done: Iterable[Future[FileCounts]],
    progress: EverySoOften,
    label: str,
    last: bool = False,
) -> FileCounts:
    total = FileCounts.merge([total, *(future.result() for future in done)])
    progress(f"{label}: {_summary(total)}", always=last)
    return total


def queue_files(connection: Connection, paths: dict[str, str]) -> int:
    """Queue {path: kind} for deletion inside the caller's transaction; returns how many were given."""
    if not paths:
        return 0
    now = datetime.now(UTC)
    rows = [{"path": p, "kind": k, "queued_at": now} for p, k in sorted(paths.items())]
    # One cached statement, many parameter sets: SQLAlchemy batches them ("insertmanyvalues").
    connection.execute(queue.insert_queued_file(connection.dialect.name), rows)
    return len(rows)


def drain_file_queue(
    engine: Engine,
    roots: StorageRoots,
    progress: Progress = _no_progress,
    after_id: int = 0,
    last_id: int | None = None,
    progress_every_s: float = PROGRESS_EVERY_S,
    registry: Registry | None = None,
    share: Share | None = None,
) -> FileCounts:
    """Delete the queued files in ids (after_id, last_id] that no row references any more, then forget
    them, chunk by chunk; `last_id` None means to the end of the queue.

    The queue rows of a chunk go only after its files are handled, so a crash here repeats the chunk next
    time (a file already gone is then counted as missing).
    """
    if last_id is None:
        # Stop at today's end of the queue: files re-queued after a failure wait for the next run.
        with engine.connect() as conn:
            last_id = conn.execute(queue.select_last_queued_id()).scalar()
        if last_id is None:
            return FileCounts()

    Chunk = tuple[int, list[tuple[int, str, str]], set[str]]
    span, handled, handled_lock = max(1, last_id - after_id), [0], threading.Lock()

    def chunks() -> Iterator[Chunk]:
        # Runs on the caller's thread: the next reference check overlaps the workers' unlinks.
        start = after_id
        for size in check_sizes():
            with engine.connect() as conn:
                rows = conn.execute(queue.select_queued_files(start, size, last_id)).all()
            if not rows:
                return
            referenced = referenced_paths(engine, roots, [row.path for row in rows], registry)
            for part in chunked(rows, CHECK_CHUNK):
                yield start, [(row.id, row.path, row.kind) for row in part], referenced
                start = part[-1].id

    def handle(chunk: Chunk) -> FileCounts:
        start, rows, referenced = chunk
        counts = FileCounts()
        entries = [(path, kind) for _id, path, kind in rows]
        blocked = _delete_unreferenced(counts, roots, entries, referenced, dry_run=False)
        with write_transaction(engine) as conn:
            conn.execute(queue.delete_queued_files(start, rows[-1][0]))
            # A file that could not be deleted stays queued: the next run tries again.
            if kept := {path: kind for path, kind in entries if path in blocked}:
                queue_files(conn, kept)
        if share is not None:
            with handled_lock:
                handled[0] += rows[-1][0] - start
                share(min(1.0, handled[0] / span))
        return counts

    return _in_parallel(chunks(), handle, progress, "files", progress_every_s)


def queue_ranges(engine: Engine, size: int) -> Iterator[tuple[int, int | None]]:
    """Split the queue into id ranges of about `size` files, so workers can drain them in parallel.

    Always yields at least one range, so the file step runs (and reports) even with an empty queue.
    """
    after_id = 0
    while True:
        with engine.connect() as conn:
            boundary = conn.execute(queue.select_queue_boundary(after_id, size)).scalar()
        if boundary is None:
            yield after_id, None
            return
        yield after_id, boundary
        after_id = boundary


def preview_file_deletions(
    engine: Engine,
    roots: StorageRoots,
    expiry: Expiry | datetime,
    delete_images: bool,
    progress: Progress = _no_progress,
    progress_every_s: float = PROGRESS_EVERY_S,
) -> FileCounts:
    """What a real run with this expiry would do to files, without touching any.

    The distinct candidate paths (files of rows that would expire, plus files already queued) are
    streamed from the database into a temporary file first, so the read transaction lasts one query,
    not the whole preview (a long one would hold back WAL checkpoints and vacuum), and memory does not
    grow with their number. The checks and stat() calls then run chunk by chunk from that file.
    """
    expiry = Expiry.of(expiry)
    statement = path_checks.select_stale_file_candidates(expiry, delete_images)
    with tempfile.TemporaryFile("w+", newline="", encoding="utf-8", errors="surrogateescape") as spill:
        writer = csv.writer(spill)
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=CHECK_CHUNK).execute(statement)
            for part in result.partitions():
                writer.writerows((row.path, row.kind) for row in part)
        spill.seek(0)
        rows = csv.reader(spill)

        def chunks() -> Iterator[tuple[list[tuple[str, str]], set[str]]]:
            for entries in chunked_growing((path, kind) for path, kind in rows):
                stored = [path for path, _ in entries]
                referenced = referenced_paths(engine, roots, stored, expiry.registry, expiry)
                for part in chunked(entries, CHECK_CHUNK):
                    yield part, referenced

        def handle(chunk: tuple[list[tuple[str, str]], set[str]]) -> FileCounts:
            entries, referenced = chunk
            counts = FileCounts()
            _delete_unreferenced(counts, roots, entries, referenced, dry_run=True)
            return counts

        return _in_parallel(chunks(), handle, progress, "files (dry run)", progress_every_s)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items (the last one shorter), read lazily from `items`."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def check_sizes() -> Iterator[int]:
    """How many paths each reference check of a file step takes: CHECK_CHUNK, then four times as many, up to
    REFERENCE_CHUNK.

    A small first check lets the workers start unlinking almost at once instead of waiting for a whole
    REFERENCE_CHUNK to be checked; the few extra passes over the referencing rows this costs are bounded.
    """
    size = CHECK_CHUNK
    while True:
        yield size
        size = min(4 * size, REFERENCE_CHUNK)


def chunked_growing(items: Iterable[T]) -> Iterator[list[T]]:
    """Lists of `items` sized by `check_sizes`, read lazily."""
    iterator = iter(items)
    for size in check_sizes():
        chunk = list(islice(iterator, size))
        if not chunk:
            return
        yield chunk


def _summary(counts: FileCounts) -> str:
    deleted = counts.thumbnails_deleted + counts.images_deleted + counts.clips_deleted
    return (
        f"{deleted} deleted ({counts.space_reclaimed} bytes), {counts.files_kept_shared} kept shared,"
        f" {counts.files_missing} missing, {counts.files_refused} refused,"
        f" {counts.files_failed} failed"
    )
