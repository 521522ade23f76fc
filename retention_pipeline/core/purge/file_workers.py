"""Handling a file step's chunks of paths on worker threads, and what a failing chunk leaves counted."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from ..lock import RunLockLost
from ..stats import FileCounts
from .file_checks import Progress
from .pacing import EverySoOften

T = TypeVar("T")
# Chunks handled at once. An unlink mostly waits on the file system, so more threads than cores overlap
# those waits; past eight, threads mostly wait for the GIL instead.
FILE_WORKERS = 8


class FilesFailed(RuntimeError):
    """A chunk of the file step failed (`error`, also the cause); `counts` holds what the chunks handled
    before and beside it did: their files are gone, and a failed run's figures must say so."""

    def __init__(self, error: Exception, counts: FileCounts) -> None:
        super().__init__(str(error))
        self.error, self.counts = error, counts


class FilesFailedLockLost(FilesFailed, RunLockLost):
    """The run's lock was lost during the file step: still a RunLockLost to whoever stops on one."""


class ChunkFailed(Exception):
    """A chunk that failed after handling its files (its commit, say): `counts` is what it deleted, which
    is gone whatever the queue says; the error is its cause."""

    def __init__(self, counts: FileCounts) -> None:
        super().__init__("a chunk failed after handling its files")
        self.counts = counts


def in_parallel(
    chunks: Iterable[T],
    handle: Callable[[T], FileCounts],
    progress: Progress,
    label: str,
    progress_every_s: float,
    counted_failure: bool = False,
) -> FileCounts:
    """Handle chunks on worker threads, a few in flight at a time, and sum their counts. `counted_failure`:
    a failure raises FilesFailed with the counts of every chunk handled (else the error itself).

    The reference check of one chunk waits on the database while another chunk's unlinks wait on the
    file system; both release the GIL, so the two overlap. At most 2 x FILE_WORKERS chunks are held.
    """
    total = [FileCounts()]
    every_so_often = EverySoOften(progress, progress_every_s)
    with ThreadPoolExecutor(FILE_WORKERS) as pool:
        pending: set[Future[FileCounts]] = set()
        try:
            for chunk in chunks:
                pending.add(pool.submit(handle, chunk))
                if len(pending) >= 2 * FILE_WORKERS:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    _add(total, done, every_so_often, label)
            while pending:  # one at a time: a failure here still cancels the chunks not started
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                _add(total, done, every_so_often, label, last=not pending)
        except Exception as exc:
            for future in pending:
                future.cancel()
            # The chunks already running finish (their files are gone, their queue rows forgotten):
            # counted too, so the figures match the disk.
            _add(total, wait(pending).done, every_so_often, label, last=bool(pending), failed=True)
            if not counted_failure:
                raise
            raise (FilesFailedLockLost if isinstance(exc, RunLockLost) else FilesFailed)(
                exc, total[0]
            ) from exc
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return total[0]


def _add(
    total: list[FileCounts],
    done: Iterable[Future[FileCounts]],
    progress: EverySoOften,
    label: str,
    last: bool = False,
    failed: bool = False,
) -> None:
    """Add the counts of the chunks handled in `done` to total[0] (a ChunkFailed's own counts too), then
    raise the first failed chunk's error (unless `failed`: one was raised already)."""
    finished = [f for f in done if not f.cancelled()]
    errors = [error for f in finished if (error := f.exception()) is not None]
    counts = [f.result() for f in finished if f.exception() is None]
    counts += [error.counts for error in errors if isinstance(error, ChunkFailed)]
    total[0] = FileCounts.merge([total[0], *counts])
    progress(f"{label}: {_summary(total[0])}", always=last)
    # Unwrapped, the run reports the chunk's own error; a lost lock first, whose failure is not retried.
    causes = [(e.__cause__ or e) if isinstance(e, ChunkFailed) else e for e in errors]
    if not failed and causes:
        raise next((cause for cause in causes if isinstance(cause, RunLockLost)), causes[0])


def _summary(counts: FileCounts) -> str:
    deleted = counts.thumbnails_deleted + counts.images_deleted + counts.clips_deleted
    offline = sum(counts.roots_offline.values())
    return (
        f"{deleted} deleted ({counts.space_reclaimed} bytes), {counts.files_kept_shared} kept shared,"
        f" {counts.files_missing} missing, {counts.files_refused} refused,"
        f" {counts.files_failed} failed"
    ) + (f", {offline} left queued (storage root missing or empty)" if offline else "")
