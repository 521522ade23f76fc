"""Handling a file step's chunks of paths on worker threads, and what a failing chunk leaves counted."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from ..lock import RunLockLost
from ..stats import FileCounts
from .file_checks import Progress
from .interrupted import Interrupted
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


class _Tally:
    """What the chunks handled add up to, kept by the chunks themselves as they end: the caller's thread
    may be interrupted anywhere, even inside the pool's submit, where a chunk's future is not yet known."""

    def __init__(self) -> None:
        self.total = FileCounts()
        self._running = 0
        self._stopped = False
        self._changed = threading.Condition()

    def run(self, handle: Callable[[T], FileCounts], chunk: T) -> FileCounts:
        with self._changed:
            if self._stopped:  # still queued when the step stopped: not started
                return FileCounts()
            self._running += 1
        counts = FileCounts()
        try:
            counts = handle(chunk)
        except ChunkFailed as failed:  # its files are gone though its commit failed
            counts = failed.counts
            raise
        finally:
            with self._changed:
                self.total = FileCounts.merge([self.total, counts])
                self._running -= 1
                self._changed.notify_all()
        return counts

    def stop(self) -> FileCounts:
        """Let no more chunks start, wait for those running (a chunk is small) and return the total."""
        with self._changed:
            self._stopped = True
            self._changed.wait_for(lambda: self._running == 0)
            return self.total


def in_parallel(
    chunks: Iterable[T],
    handle: Callable[[T], FileCounts],
    progress: Progress,
    label: str,
    progress_every_s: float,
    counted_failure: bool = False,
) -> FileCounts:
    """Handle chunks on worker threads, a few in flight at a time, and sum their counts. `counted_failure`:
    a failure raises FilesFailed, an interrupt Interrupted, with the counts of every chunk handled (else
    the error itself).

    The reference check of one chunk waits on the database while another chunk's unlinks wait on the
    file system; both release the GIL, so the two overlap. At most 2 x FILE_WORKERS chunks are held.
    """
    tally = _Tally()
    every_so_often = EverySoOften(progress, progress_every_s)
    with ThreadPoolExecutor(FILE_WORKERS) as pool:
        pending: set[Future[FileCounts]] = set()
        try:
            for chunk in chunks:
                pending.add(pool.submit(tally.run, handle, chunk))
                if len(pending) >= 2 * FILE_WORKERS:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    _check(done, tally.total, every_so_often, label)
            while pending:  # one at a time: a failure here still cancels the chunks not started
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                _check(done, tally.total, every_so_often, label, last=not pending)
        except BaseException as exc:
            # The chunks already running finish (their files are gone, their queue rows forgotten), also
            # on an interrupt: counted too, so the figures match the disk. The others do not start.
            total, interrupt = _waited_out(tally)
            try:
                every_so_often(f"{label}: {_summary(total)}", always=True)
            except Exception:
                raise
            except BaseException as again:
                interrupt = interrupt or again
            if interrupt is not None and isinstance(exc, Exception):
                exc = interrupt  # interrupted while failing: the run stops as interrupted, counts kept
            if not counted_failure:
                raise exc
            if not isinstance(exc, Exception):
                raise Interrupted(exc, total) from exc
            raise (FilesFailedLockLost if isinstance(exc, RunLockLost) else FilesFailed)(exc, total) from exc
    return tally.total


def _waited_out(tally: _Tally) -> tuple[FileCounts, BaseException | None]:
    """`tally.stop()`, and the first interrupt that cut it short. The wait starts again after a further
    interrupt (Ctrl-C twice, a process group's SIGTERM beside the executor's SIGINT), so that the counts of
    the chunks in flight (small, their files gone) are not lost to it; after three, the total so far: who
    insists that hard wants the process to end, for a chunk that hangs (a dead network mount)."""
    interrupt: BaseException | None = None
    for _ in range(3):
        try:
            return tally.stop(), interrupt
        except Exception:
            raise
        except BaseException as again:
            interrupt = interrupt or again
    return tally.total, interrupt


def _check(
    done: Iterable[Future[FileCounts]],
    total: FileCounts,
    progress: EverySoOften,
    label: str,
    last: bool = False,
) -> None:
    """Report the total so far, then raise the first error of the chunks in `done` (unwrapped, the run
    reports the chunk's own error; a lost lock first, whose failure is not retried)."""
    progress(f"{label}: {_summary(total)}", always=last)
    errors = [error for f in done if not f.cancelled() and (error := f.exception()) is not None]
    causes = [(e.__cause__ or e) if isinstance(e, ChunkFailed) else e for e in errors]
    if causes:
        raise next((cause for cause in causes if isinstance(cause, RunLockLost)), causes[0])


def _summary(counts: FileCounts) -> str:
    deleted = counts.thumbnails_deleted + counts.images_deleted + counts.clips_deleted
    offline = sum(counts.roots_offline.values())
    return (
        f"{deleted} deleted ({counts.space_reclaimed} bytes), {counts.files_kept_shared} kept shared,"
        f" {counts.files_missing} missing, {counts.files_refused} refused,"
        f" {counts.files_failed} failed"
    ) + (f", {offline} left queued (storage root missing or empty)" if offline else "")
