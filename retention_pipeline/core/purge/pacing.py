"""How the purge paces itself: how many rows the next batch may take, how a batch is retried after a
transient error, and how often progress is passed on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ..db import is_transient
from ..stats import RowCounts

Progress = Callable[[str], None]
# Told the share of the work done so far (0 to 1), for a progress bar such as the job tracker's.
Share = Callable[[float], None]
T = TypeVar("T")

RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
PROGRESS_EVERY_S = 2.0  # the library default; runs take PROGRESS_INTERVAL_SECONDS from their plan


class EverySoOften:
    """Passes progress on at most once every few seconds (each message is an event in Dagster's run
    log, a write of its own), plus the messages that must always be seen."""

    def __init__(self, progress: Progress, seconds: float) -> None:
        self._progress = progress
        self._seconds = seconds
        self._last = float("-inf")

    def __call__(self, message: str, always: bool = False) -> None:
        now = time.monotonic()
        if always or now - self._last >= self._seconds:
            self._last = now
            self._progress(message)


class BatchSizer:
    """How many rows the next batch may take: at most the configured batch size, and fewer when batches
    run past the time target, so no transaction holds its locks much longer than the target whatever the
    disk, the table's size or the machine's load (pt-online-schema-change's --chunk-time).

    With a target, the first batch is small (nothing is known yet about how long a row takes) and each
    quick batch lets the next grow by half; a long batch shrinks the next one at once, in proportion.
    """

    GROWTH = 1.5
    FIRST = 100
    # On PostgreSQL a batch's statements are cut off at CAP_FACTOR x the target (never under MIN_CAP_MS,
    # so a tiny target does not cut off every batch): 80 ms at the default 50.
    CAP_FACTOR = 1.6
    MIN_CAP_MS = 50.0

    def __init__(self, largest: int, target_s: float | None) -> None:
        self.largest = largest
        self.target_s = target_s or None
        self.size = largest if self.target_s is None else min(largest, self.FIRST)

    @property
    def time_cap_ms(self) -> float | None:
        """How long a batch's statements may run before it is rolled back (None: no cap)."""
        if self.target_s is None:
            return None
        return max(self.target_s * 1000 * self.CAP_FACTOR, self.MIN_CAP_MS)

    def record(self, seconds: float) -> None:
        """Size the next batch from how long one of the current size held its transaction."""
        if self.target_s is None or seconds <= 0:
            return
        fitting = int(self.size * self.target_s / seconds)
        grown = max(int(self.size * self.GROWTH), self.size + 1)  # int(1 * 1.5) would stay at 1
        self.size = max(1, min(self.largest, fitting, grown))

    def overran(self) -> None:
        """A batch was cut off at the cap: halve the next (at least one row)."""
        self.size = max(1, self.size // 2)


def with_retries(step: Callable[[], T], counts: RowCounts, progress: Progress) -> T:
    """Run one batch, repeating it with backoff after a transient database error.

    Retrying here (rather than re-running the whole op) keeps the counts of batches already committed.
    A failed attempt's time counts as a transaction held: a batch that waited for a writer's row lock
    held the rows it had locked before, until its lock timeout. Timed around the whole attempt, it is an
    upper bound, so the longest transaction reported is never less than the truth.
    """
    for delay in (*RETRY_DELAYS_S, None):
        started = time.perf_counter()
        try:
            return step()
        except Exception as exc:
            if delay is None or not is_transient(exc):
                raise
            counts.add_failed_attempt(time.perf_counter() - started)
            progress(f"transient database error, retrying the batch in {delay:.1f}s: {exc}")
            time.sleep(delay)
    raise AssertionError("unreachable")
