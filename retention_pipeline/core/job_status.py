"""A run's status in the camera system's job tracker (Redis), which its web UI lists as background jobs.

A side channel: Redis down, slow or misnamed never fails, slows or blocks a cleanup. Every call has a
short timeout, the first failure is reported once through `warn`, and after a failure the board stays
quiet for a while instead of paying the timeout again at every step; the final status (completed or
failed) is always attempted once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

STATUS_LIST = "job:status:list"
PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"
UNFINISHED = (PENDING, RUNNING)
TIMEOUT_S = 0.5
QUIET_AFTER_FAILURE_S = 30.0
PROGRESS_EVERY_S = 1.0
_PREFIXES = {"data_cleanup": "cleanup", "orphaned_file_cleanup": "orphan-cleanup"}


def job_key(job_id: str) -> str:
    """The Redis key of one job's record."""
    return f"job:{job_id}"


def job_id_of(job_type: str, created_at: datetime, run_id: str) -> str:
    """`cleanup-YYYYmmdd-HHMMSS-<run id's first 8 characters>`, as the camera system names its jobs."""
    return f"{_PREFIXES[job_type]}-{created_at.astimezone(UTC):%Y%m%d-%H%M%S}-{run_id[:8]}"


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


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
        self._lock = threading.Lock()
        self._quiet_until = float("-inf")
        try:
            self._client = tracker.connect()
        except Exception as exc:  # a URL redis-py cannot use: publishing is off for this run
            self._client = None
            self.trouble(exc)
        self._last_progress_at = float("-inf")

    def pending(self, message: str) -> None:
        """The run exists and is checking its plan; nothing is deleted yet."""
        self._write({"status": PENDING, "message": message, "started_at": None}, final=False)

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

    def failed(self, error: str) -> None:
        """The run failed; the record keeps its progress and expires after the tracker's TTL."""
        fields = {"status": FAILED, "message": "Failed", "error": error}
        self._write({**fields, "completed_at": _iso(datetime.now(UTC))}, final=True)

    def _write(self, fields: dict[str, Any], final: bool) -> None:
        if self._client is None or (not final and time.monotonic() < self._quiet_until):
            return
        with self._lock:
            try:
                self._store(self._client, fields)
            except Exception as exc:  # a side channel: whatever goes wrong here, the cleanup goes on
                self.trouble(exc)

    def _store(self, client: redis.Redis, fields: dict[str, Any]) -> None:
        key = job_key(self.job_id)
        raw = client.get(key)
        stored = json.loads(raw) if isinstance(raw, str) else None
        record: dict[str, Any] = stored if isinstance(stored, dict) else self._new_record()
        # Ops of one run publish one after another (or side by side): progress only ever moves forward,
        # and a finished record stays finished (ops that do not depend on a failed one still run).
        progress = max(int(record.get("progress") or 0), int(fields.pop("progress", 0)))
        if record.get("status") in (COMPLETED, FAILED) and fields.get("status") in UNFINISHED:
            return
        if fields.get("status") == PENDING and record.get("status") == RUNNING:
            return
        if fields.get("status") == RUNNING and record.get("started_at") is None:
            record["started_at"] = _iso(datetime.now(UTC))
        record.update(fields, progress=min(progress, 100))
        finished = record["status"] in (COMPLETED, FAILED)
        pipe = client.pipeline()
        pipe.set(key, json.dumps(record), ex=self.tracker.ttl_seconds if finished else None)
        pipe.zadd(STATUS_LIST, {self.job_id: self._created_at.timestamp()})
        pipe.execute()

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
        if self._quiet_until == float("-inf"):
            self.warn(
                f"could not publish the run's status to the job tracker at {self.tracker.url} ({exc});"
                " the cleanup goes on without it"
            )
        self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S


def fail_abandoned(
    tracker: JobTracker,
    job_type: str,
    still_running: Callable[[str], bool],
    trouble: Callable[[Exception], None],
    newest: int = 200,
) -> list[str]:
    """Mark failed the unfinished records of `job_type` whose Dagster run is over (killed before it could
    write); returns their job ids. `still_running` answers for a Dagster run id."""
    abandoned: list[str] = []
    try:
        client = tracker.connect()
        if client is None:
            return []
        for job_id in client.zrevrange(STATUS_LIST, 0, newest - 1):
            raw = client.get(job_key(str(job_id)))
            record = json.loads(raw) if isinstance(raw, str) else None
            if not isinstance(record, dict) or record.get("job_type") != job_type:
                continue
            if record.get("status") not in UNFINISHED:
                continue
            if still_running(str(record.get("dagster_run_id"))):
                continue
            record.update(
                status=FAILED,
                message="Failed",
                error="The run ended without reporting its outcome (its process was killed or lost).",
                completed_at=_iso(datetime.now(UTC)),
            )
            client.set(job_key(str(job_id)), json.dumps(record), ex=tracker.ttl_seconds)
            abandoned.append(str(job_id))
    except Exception as exc:  # a side channel: never fails the run
        trouble(exc)
    return abandoned
