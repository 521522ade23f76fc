"""The job tracker's records in a real Redis: format, progress, expiry, and Redis as a side channel."""

import json
import threading
import time
from datetime import UTC, datetime

import pytest

from retention_pipeline.core.abandoned_jobs import settle_abandoned
from retention_pipeline.core.job_records import STATUS_LIST, job_key
from retention_pipeline.core.job_status import UNFINISHED_TTL_S, JobStatusBoard, JobTracker
from retention_pipeline_tests.conftest import RedisServer
from retention_pipeline_tests.core.slow_redis import slow_redis

CREATED = datetime(2026, 12, 6, 3, 0, 5, tzinfo=UTC)
RUN_ID = "3f2a9c1e-0000-4000-8000-000000000001"


def _board(url: str | None, warnings: list[str], ttl: int = 3600) -> JobStatusBoard:
    return JobStatusBoard(JobTracker(url, ttl), "data_cleanup", RUN_ID, CREATED, warnings.append)


def _record(server: RedisServer, job_id: str) -> dict:
    raw = server.client().get(job_key(job_id))
    assert raw is not None
    return json.loads(raw)


def test_a_run_goes_from_pending_to_completed_in_the_camera_systems_format(redis_server: RedisServer):
    warnings: list[str] = []
    board = _board(redis_server.url, warnings, ttl=600)

    board.pending("Checking the database")
    board.flush()
    pending = _record(redis_server, board.job_id)
    board.running(15, "Deleting old detections")
    board.flush()
    running = _record(redis_server, board.job_id)
    running_ttl = redis_server.client().ttl(job_key(board.job_id))
    board.completed({"events_deleted": 3, "dry_run": False})
    done = _record(redis_server, board.job_id)

    assert board.job_id == "cleanup-20261206-030005-3f2a9c1e"
    assert pending["status"] == "pending" and pending["started_at"] is None
    assert running["status"] == "running" and running["progress"] == 15 and running["started_at"]
    assert running["message"] == "Deleting old detections"
    assert 3600 < running_ttl <= UNFINISHED_TTL_S  # a running record outlives a finished one
    assert done == {
        "job_id": board.job_id,
        "job_type": "data_cleanup",
        "dagster_run_id": RUN_ID,
        "status": "completed",
        "progress": 100,
        "message": "Completed",
        "created_at": CREATED.isoformat(),
        "started_at": running["started_at"],
        "completed_at": done["completed_at"],
        "result": {"events_deleted": 3, "dry_run": False},
        "error": None,
    }
    assert datetime.fromisoformat(done["completed_at"]).tzinfo is not None
    assert 0 < redis_server.client().ttl(job_key(board.job_id)) <= 600
    assert redis_server.client().zscore(STATUS_LIST, board.job_id) == CREATED.timestamp()
    assert warnings == []


def test_progress_never_goes_back_and_is_written_at_most_about_once_a_second(redis_server: RedisServer):
    board = _board(redis_server.url, [])
    board.running(45, "Deleting old events")

    board.running(10, "Deleting old GPU statistics")  # an op that ran late on another worker
    board.flush()
    after_late_op = _record(redis_server, board.job_id)["progress"]
    board.progress(50, "Deleting old events")
    board.progress(52, "Deleting old events")  # within the same second: not written
    board.flush()
    throttled = _record(redis_server, board.job_id)["progress"]

    assert after_late_op == 45
    assert throttled == 50


def test_a_failed_run_keeps_its_progress_and_says_why(redis_server: RedisServer):
    board = _board(redis_server.url, [])
    board.running(30, "Deleting old detections")

    board.failed("purge_detections failed: the database is too slow")

    record = _record(redis_server, board.job_id)
    assert (record["status"], record["progress"]) == ("failed", 30)
    assert record["error"] == "purge_detections failed: the database is too slow"
    assert record["completed_at"] is not None
    assert redis_server.client().ttl(job_key(board.job_id)) > 0


def test_without_a_url_nothing_is_published(redis_server: RedisServer):
    board = _board(None, [])

    board.running(50, "Deleting old events")
    board.completed({"dry_run": True})

    assert redis_server.client().keys("*") == []


def test_redis_that_is_not_there_costs_one_warning_and_no_waiting(redis_server: RedisServer):
    redis_server.stop()
    warnings: list[str] = []
    board = _board(redis_server.url, warnings)

    started = time.monotonic()
    board.pending("Checking")
    for step in range(200):
        board.progress(step // 2, "Deleting old detections")
    board.completed({"dry_run": False})
    elapsed = time.monotonic() - started

    assert len(warnings) == 1 and redis_server.url in warnings[0]  # no password in it: shown whole
    # 202 calls, yet only the first and the final one tried the network (each bounded by its timeout).
    assert elapsed < 2.0


def test_a_finished_record_stays_finished_when_a_later_op_reports(redis_server: RedisServer):
    board = _board(redis_server.url, [], ttl=300)
    board.running(30, "Deleting old detections")
    board.failed("purge_detections failed: too slow")

    board.running(5, "Deleting old GPU statistics")  # an op that does not depend on the failed one
    board.progress(8, "Deleting old GPU statistics")
    board.flush()

    record = _record(redis_server, board.job_id)
    assert (record["status"], record["error"]) == ("failed", "purge_detections failed: too slow")
    assert 0 < redis_server.client().ttl(job_key(board.job_id)) <= 300


def test_a_url_redis_cannot_use_costs_one_warning_and_fails_nothing():
    warnings: list[str] = []
    board = _board("redis://127.0.0.1:notaport/0", warnings)

    board.pending("Checking")
    board.running(10, "Deleting")
    board.completed({"dry_run": True})
    marked = settle_abandoned(JobTracker("redis://127.0.0.1:notaport/0"), lambda _run: None, board.trouble)

    assert marked == [] and len(warnings) == 1


def test_the_redis_password_never_reaches_the_runs_log():
    warnings: list[str] = []
    url = "redis://watcher:hunter2secret@127.0.0.1:1/0?password=hunter3secret"
    board = JobStatusBoard(JobTracker(url), "data_cleanup", RUN_ID, CREATED, warnings.append)

    board.completed({"dry_run": True})

    [warning] = warnings
    assert "hunter2secret" not in warning and "hunter3secret" not in warning and "watcher" not in warning
    assert "redis://***@127.0.0.1:1/0" in warning


def test_no_thread_to_publish_from_costs_one_warning_and_fails_nothing(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
):
    def refused(_thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    warnings: list[str] = []
    board = JobStatusBoard(JobTracker(redis_server.url), "data_cleanup", RUN_ID, CREATED, warnings.append)

    board.running(10, "Deleting old detections")
    board.completed({"dry_run": False})

    assert len(warnings) == 1 and "can't start new thread" in warnings[0]
    assert board.flush(timeout=0.1)  # nothing left waiting for a thread that never came


def test_a_slow_redis_never_slows_the_cleanup_and_the_final_status_still_lands(redis_server: RedisServer):
    warnings: list[str] = []
    with slow_redis(redis_server.port, delay=0.4) as proxy:  # each reply 0.4 s: just under the timeout
        board = JobStatusBoard(JobTracker(proxy.url()), "data_cleanup", RUN_ID, CREATED, warnings.append)
        started = time.monotonic()
        for batch in range(40):  # 40 batches of 50 ms, a stage change and a progress report after each
            time.sleep(0.05)
            board.running(15 + batch // 2, "Deleting old detections")
            board.progress(16 + batch // 2, "Deleting old detections")
        work_took = time.monotonic() - started
        board.completed({"dry_run": False})
        final_took = time.monotonic() - started - work_took

    assert work_took < 2.0 + 1.0  # the 2 s of batches, not 40 round trips of 0.8 s
    assert final_took < 5.0  # the final write waits for its own round trips only
    record = _record(redis_server, board.job_id)
    assert (record["status"], record["progress"], record["started_at"] is not None) == (
        "completed",
        100,
        True,
    )
    assert warnings == []


def test_a_final_status_written_between_another_ops_read_and_write_stays(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
):
    # Two ops of one run in two processes (a multiprocess executor): each has its own board.
    tracker = JobTracker(redis_server.url, 300)
    failing = JobStatusBoard(tracker, "data_cleanup", RUN_ID, CREATED, print)
    late = JobStatusBoard(tracker, "data_cleanup", RUN_ID, CREATED, print)
    failing.running(15, "Deleting old detections")
    failing.flush()
    real_merged = late._merged

    def the_other_op_fails_meanwhile(raw: str | None, fields: dict) -> dict | None:
        if raw is not None and json.loads(raw)["status"] == "running":
            failing.failed("purge_detections failed: too slow")  # lands after our read, before our write
        return real_merged(raw, fields)

    monkeypatch.setattr(late, "_merged", the_other_op_fails_meanwhile)

    late.running(60, "Deleting the files of deleted rows")
    late.flush()

    record = _record(redis_server, failing.job_id)
    assert (record["status"], record["error"]) == ("failed", "purge_detections failed: too slow")
    assert 0 < redis_server.client().ttl(job_key(failing.job_id)) <= 300
