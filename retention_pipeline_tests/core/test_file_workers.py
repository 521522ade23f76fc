"""The file step's worker threads: what a failing chunk stops, and what it leaves counted (no database:
the chunks are stand-ins)."""

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from retention_pipeline.core.purge.file_workers import ChunkFailed, FilesFailed, in_parallel
from retention_pipeline.core.purge.interrupted import Interrupted
from retention_pipeline.core.stats import FileCounts


def _quiet(_message: str, always: bool = False) -> None:
    pass


def test_a_chunk_failing_among_the_last_ones_still_stops_the_chunks_not_started():
    started: list[int] = []
    lock = threading.Lock()

    def handle(chunk: int) -> FileCounts:
        with lock:
            started.append(chunk)
        if chunk == 0:
            raise RuntimeError("the database went away")
        time.sleep(0.3)  # the other workers are busy when the failure is seen
        return FileCounts(thumbnails_deleted=1)

    # 12 chunks: fewer than the 16 held at once, so all are submitted before the first result is read.
    with pytest.raises(FilesFailed) as failed:
        in_parallel(range(12), handle, _quiet, "files", 60, counted_failure=True)

    assert len(started) < 12
    assert failed.value.counts.thumbnails_deleted == len(started) - 1  # every chunk that ran, counted


def test_a_chunk_failing_after_its_unlinks_counts_them_and_reports_its_own_error():
    def handle(chunk: int) -> FileCounts:
        if chunk == 3:
            try:
                raise RuntimeError("could not commit")
            except RuntimeError as exc:
                raise ChunkFailed(FileCounts(thumbnails_deleted=5)) from exc
        return FileCounts(thumbnails_deleted=5)

    with pytest.raises(FilesFailed) as failed:
        in_parallel(range(4), handle, _quiet, "files", 60, counted_failure=True)

    assert failed.value.counts.thumbnails_deleted == 20
    assert str(failed.value) == "could not commit"


def test_an_interrupted_drain_counts_the_chunks_it_handled_and_those_in_flight():
    started: list[int] = []
    handled: list[int] = []
    lock = threading.Lock()

    def handle(chunk: int) -> FileCounts:
        with lock:
            started.append(chunk)
        if chunk == 2:  # SIGINT, as Ctrl-C or Dagster's termination sends it, while the caller waits
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # the chunks in flight still unlink after the interrupt
        with lock:
            handled.append(chunk)
        return FileCounts(thumbnails_deleted=1)

    with pytest.raises(KeyboardInterrupt) as interrupted:
        in_parallel(range(40), handle, _quiet, "files", 60, counted_failure=True)

    assert isinstance(interrupted.value, Interrupted)
    assert isinstance(interrupted.value.interrupt, KeyboardInterrupt)
    # The chunks in flight (the interrupting one among them) ran to their end; those not started did not.
    assert 2 in handled and len(handled) < 40
    assert sorted(handled) == sorted(started)
    assert interrupted.value.counts.thumbnails_deleted == len(handled)


def _sends_sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C, with chunk 1 in flight


def _fails() -> None:
    raise RuntimeError("server closed the connection")


# A second Ctrl-C must not lose the counts of the chunks in flight; a Ctrl-C while the drain fails on an error
# must not be lost to a FilesFailed that would let the run go on to its next step.
@pytest.mark.parametrize("first", [_sends_sigint, _fails], ids=["after_an_interrupt", "while_failing"])
def test_an_interrupt_while_the_drain_waits_for_its_chunks_in_flight_stops_it_with_their_counts(
    first: Callable[[], None],
):
    handled: list[int] = []
    lock, second_running = threading.Lock(), threading.Event()

    def handle(chunk: int) -> FileCounts:
        if chunk == 0:
            second_running.wait(10)
            first()
        elif chunk == 1:
            second_running.set()
            # While the caller waits for this chunk (on a slow machine, before it saw the first).
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.6)
        with lock:
            handled.append(chunk)
        return FileCounts(thumbnails_deleted=1)

    with pytest.raises(KeyboardInterrupt) as interrupted:
        in_parallel(range(100), handle, _quiet, "files", 60, counted_failure=True)

    assert isinstance(interrupted.value, Interrupted)
    assert 1 in handled and interrupted.value.counts.thumbnails_deleted == len(handled)
