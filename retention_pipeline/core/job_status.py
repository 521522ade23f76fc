"""A run's status in the camera system's job tracker (Redis), which its web UI lists as background jobs.

A side channel: Redis down, slow or misnamed never fails, slows or blocks a cleanup. Records are written
by a background thread that keeps only the latest value, so a caller never waits for Redis, except for
the final status (completed or failed), which is always attempted and waited for a bounded time. Every
Redis call has a short timeout, the first failure is reported once through `warn`, and after a failure
the board stays quiet for a while instead of paying the timeout again at every step.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from .job_records import compare_and_set, job_id_of, job_key

PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"
UNFINISHED = (PENDING, RUNNING)
TIMEOUT_S = 0.5
QUIET_AFTER_FAILURE_S = 30.0
PROGRESS_EVERY_S = 1.0
# How long the final write may hold up the op that finishes the run: a few round trips at TIMEOUT_S.
FINAL_WAIT_S = 5.0
# The publishing thread ends after this long without anything to write (the next write starts another).
IDLE_EXIT_S = 10.0
# An unfinished record expires too, after a day without a write: a run killed when no later run comes to
# settle it must not show as running forever. Dagster's run monitoring ends any run after 6 h, and a live
# run writes at every stage.
UNFINISHED_TTL_S = 24 * 3600
# Another op of the same run (another process under a multiprocess executor) may write between our read
# and our write; the compare-and-set then fails and the write starts again from the new record.
WRITE_ATTEMPTS = 5


def redacted(url: str) -> str:
    """The URL without its credentials (user, password, and a query that may carry a password)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{host}" if "@" in parts.netloc else host, parts.path, "", ""))


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def record_ttl(record: Mapping[str, Any], finished_ttl: int) -> int:
    """How long a record is kept after this write: the tracker's TTL once finished, else the safety TTL."""
    return (
        finished_ttl if record.get("status") in (COMPLETED, FAILED) else max(UNFINISHED_TTL_S, finished_ttl)
    )


@dataclass(frozen=True)
class JobTracker:
    """Where records go: the Redis URL (None: publishing is off) and how long finished ones are kept."""

    url: str | None
    ttl_seconds: int = 3600

    def connect(self) -> redis.Redis | None:
        """A client with short timeouts and no retries, or None when publishing is off."""
        if not self.url:
            return None
        return redis.Redis.from_url(
            self.url,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry_on_timeout=False,
            decode_responses=True,
        )


class JobStatusBoard:
    """One run's record in the job tracker. Thread-safe: the file step reports from worker threads."""

    def __init__(
        self,
        tracker: JobTracker,
        job_type: str,
        run_id: str,
        created_at: datetime,
        warn: Callable[[str], None],
    ) -> None:
        self.tracker = tracker
        self.job_id = job_id_of(job_type, created_at, run_id)
        self._base = {"job_id": self.job_id, "job_type": job_type, "dagster_run_id": run_id}
        self._created_at = created_at
        self.warn = warn
        self._quiet_until = float("-inf")
        self._warned = False
        # The latest fields not yet written (None: nothing to write), and write sequence numbers so a
        # final write can wait for its own turn.
        self._cond = threading.Condition()
        self._pending: dict[str, Any] | None = None
        self._queued = self._written = 0
        self._worker: threading.Thread | None = None
        try:
            self._client = tracker.connect()
        except Exception as exc:  # a URL redis-py cannot use: publishing is off for this run
            self._client = None
            self.trouble(exc)
        self._last_progress_at = float("-inf")

    def pending(self, message: str) -> None:
        """The run exists and is checking its plan; nothing is deleted yet."""
        self._write({"status": PENDING, "message": message}, final=False)

    def running(self, progress: int, message: str) -> None:
        """A new stage starts: written unless Redis failed lately, never moving progress back."""
        self._write({"status": RUNNING, "progress": progress, "message": message}, final=False)

    def progress(self, progress: int, message: str) -> None:
        """Within a stage: written at most about once a second."""
        now = time.monotonic()
        if now - self._last_progress_at < PROGRESS_EVERY_S:
            return
        self._last_progress_at = now
        self._write({"status": RUNNING, "progress": progress, "message": message}, final=False)

    def completed(self, result: Mapping[str, Any], message: str = "Completed") -> None:
        """The run succeeded; the record expires after the tracker's TTL."""
        fields = {"status": COMPLETED, "progress": 100, "message": message, "result": dict(result)}
        self._write({**fields, "completed_at": _iso(datetime.now(UTC)), "error": None}, final=True)

    def failed(self, error: str, result: Mapping[str, Any] | None = None) -> None:
        """The run failed; the record keeps its progress (and gets `result`, what the run committed,
        when known) and expires after the tracker's TTL."""
        fields: dict[str, Any] = {"status": FAILED, "message": "Failed", "error": error}
        if result is not None:
            fields["result"] = dict(result)
        self._write({**fields, "completed_at": _iso(datetime.now(UTC))}, final=True)

    def flush(self, timeout: float = FINAL_WAIT_S) -> bool:
        """Wait (at most `timeout`) until everything asked so far is written or has failed."""
        with self._cond:
            target = self._queued
            return self._cond.wait_for(lambda: self._written >= target, timeout)

    def _write(self, fields: dict[str, Any], final: bool) -> None:
        client = self._client
        if client is None or (not final and time.monotonic() < self._quiet_until):
            return
        with self._cond:
            self._pending = _coalesced(self._pending, fields)
            self._queued += 1
            if self._worker is None or not self._worker.is_alive():
                worker = threading.Thread(
                    target=self._publish, args=(client,), name="job-status", daemon=True
                )
                try:
                    worker.start()
                except RuntimeError as exc:  # no thread to be had (a limit, the interpreter ending)
                    self._pending, self._written = None, self._queued
                    self._worker = None
                    exc_to_report: Exception | None = exc
                else:
                    self._worker, exc_to_report = worker, None
            else:
                exc_to_report = None
            self._cond.notify_all()
        if exc_to_report is not None:
            self.trouble(exc_to_report)  # outside the lock: trouble() takes it too
            return
        if final:
            self.flush()

    def _publish(self, client: redis.Redis) -> None:
        """The publishing thread: writes the latest pending fields until there is nothing left."""
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._pending is not None, IDLE_EXIT_S):
                    self._worker = None
                    return
                fields, queued, self._pending = self._pending or {}, self._queued, None
            try:
                self._store(client, fields)
            except Exception as exc:  # a side channel: whatever goes wrong here, the cleanup goes on
                self.trouble(exc)
            with self._cond:
                self._written = queued
                self._cond.notify_all()

    def _store(self, client: redis.Redis, fields: dict[str, Any]) -> None:
        for _attempt in range(WRITE_ATTEMPTS):
            raw = client.get(job_key(self.job_id))
            read = raw if isinstance(raw, str) else None
            record = self._merged(read, dict(fields))
            if record is None:
                return
            if compare_and_set(
                client, self.job_id, read, record, record_ttl(record, self.tracker.ttl_seconds)
            ):
                return
        raise RuntimeError(f"the record of {self.job_id} kept changing under this write")

    def _merged(self, raw: str | None, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The record after this write, or None when it must stay as it is."""
        stored = json.loads(raw) if raw else None
        record: dict[str, Any] = stored if isinstance(stored, dict) else self._new_record()
        # Ops of one run publish one after another (or side by side): progress only ever moves forward,
        # and a finished record stays finished (ops that do not depend on a failed one still run).
        progress = max(int(record.get("progress") or 0), int(fields.pop("progress", 0)))
        if record.get("status") in (COMPLETED, FAILED) and fields.get("status") in UNFINISHED:
            return None
        if fields.get("status") == PENDING and record.get("status") == RUNNING:
            return None
        if fields.get("status") == RUNNING and record.get("started_at") is None:
            record["started_at"] = _iso(datetime.now(UTC))
        record.update(fields, progress=min(progress, 100))
        return record

    def _new_record(self) -> dict[str, Any]:
        return {
            **self._base,
            "status": PENDING,
            "progress": 0,
            "message": "",
            "created_at": _iso(self._created_at),
            "started_at": None,
            "completed_at": None,
            "result": None,
            "error": None,
        }

    def trouble(self, exc: Exception) -> None:
        """Redis failed: warn the first time only, and skip all but final writes for a while."""
        self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S
        self.warn_once(
            f"could not publish the run's status to the job tracker at {redacted(self.tracker.url or '')}"
            f" ({exc}); the cleanup goes on without it"
        )

    def warn_once(self, message: str) -> None:
        """Log `message` unless this run has warned about the job tracker already: one warning per run."""
        with self._cond:
            if self._warned:
                return
            self._warned = True
        # The publishing thread may outlive the op whose log this is.
        with contextlib.suppress(Exception):
            self.warn(message)


def _coalesced(pending: dict[str, Any] | None, fields: dict[str, Any]) -> dict[str, Any]:
    """One write that stands for two not yet written: the later fields and the larger progress, except
    that a status never steps back (pending < running < finished), as in the record itself."""
    if pending is None:
        return dict(fields)
    progress = max(int(pending.get("progress", 0)), int(fields.get("progress", 0)))
    if _RANK[str(fields.get("status"))] < _RANK[str(pending.get("status"))]:
        return {**pending, "progress": progress}
    return {**pending, **fields, "progress": progress}


_RANK = {PENDING: 0, RUNNING: 1, COMPLETED: 2, FAILED: 2}
