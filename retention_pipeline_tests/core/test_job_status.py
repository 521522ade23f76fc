"""The job tracker's records in a real Redis: format, progress, expiry, and Redis as a side channel."""

import json
import time
from datetime import UTC, datetime

from retention_pipeline.core.job_status import (
    STATUS_LIST,
    JobStatusBoard,
    JobTracker,
    fail_abandoned,
    job_key,
)
from retention_pipeline_tests.conftest import RedisServer

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
    pending = _record(redis_server, board.job_id)
    board.running(15, "Deleting old detections")
    running = _record(redis_server, board.job_id)
    running_ttl = redis_server.client().ttl(job_key(board.job_id))
    board.completed({"events_deleted": 3, "dry_run": False})
    done = _record(redis_server, board.job_id)

    assert board.job_id == "cleanup-20261206-030005-3f2a9c1e"
    assert pending["status"] == "pending" and pending["started_at"] is None
    assert running["status"] == "running" and running["progress"] == 15 and running["started_at"]
    assert running["message"] == "Deleting old detections"
    assert running_ttl == -1  # a running record never expires
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
    after_late_op = _record(redis_server, board.job_id)["progress"]
    board.progress(50, "Deleting old events")
    board.progress(52, "Deleting old events")  # within the same second: not written
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

    assert len(warnings) == 1 and redis_server.url in warnings[0]
    # 202 calls, yet only the first and the final one tried the network (each bounded by its timeout).
    assert elapsed < 2.0


def test_an_unfinished_record_of_a_run_that_is_over_is_marked_failed(redis_server: RedisServer):
    tracker = JobTracker(redis_server.url)
    killed = JobStatusBoard(tracker, "data_cleanup", "aaaaaaaa-killed", CREATED, print)
    killed.running(40, "Deleting old detections")
    alive = JobStatusBoard(tracker, "data_cleanup", "bbbbbbbb-alive", CREATED, print)
    alive.running(20, "Deleting old detections")
    finished = JobStatusBoard(tracker, "data_cleanup", "cccccccc-done", CREATED, print)
    finished.completed({"dry_run": False})
    sweep = JobStatusBoard(tracker, "orphaned_file_cleanup", "dddddddd-other", CREATED, print)
    sweep.running(20, "Looking for files")

    marked = fail_abandoned(tracker, "data_cleanup", lambda run_id: run_id == "bbbbbbbb-alive", print)

    assert marked == [killed.job_id]
    assert _record(redis_server, killed.job_id)["status"] == "failed"
    assert "killed" in _record(redis_server, killed.job_id)["error"]
    assert _record(redis_server, alive.job_id)["status"] == "running"
    assert _record(redis_server, finished.job_id)["status"] == "completed"
    assert _record(redis_server, sweep.job_id)["status"] == "running"


def test_a_finished_record_stays_finished_when_a_later_op_reports(redis_server: RedisServer):
    board = _board(redis_server.url, [], ttl=300)
    board.running(30, "Deleting old detections")
    board.failed("purge_detections failed: too slow")

    board.running(5, "Deleting old GPU statistics")  # an op that does not depend on the failed one
    board.progress(8, "Deleting old GPU statistics")

    record = _record(redis_server, board.job_id)
    assert (record["status"], record["error"]) == ("failed", "purge_detections failed: too slow")
    assert 0 < redis_server.client().ttl(job_key(board.job_id)) <= 300


def test_a_url_redis_cannot_use_costs_one_warning_and_fails_nothing():
    warnings: list[str] = []
    board = _board("redis://127.0.0.1:notaport/0", warnings)

    board.pending("Checking")
    board.running(10, "Deleting")
    board.completed({"dry_run": True})
    marked = fail_abandoned(JobTracker("redis://127.0.0.1:notaport/0"), "data_cleanup", bool, board.trouble)

    assert marked == [] and len(warnings) == 1
