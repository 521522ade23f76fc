"""Records their run left unfinished, settled from the run's real outcome; our expired ids off the list."""

import json
import time
from datetime import UTC, datetime, timedelta

from retention_pipeline.core.abandoned_jobs import (
    KILLED_OR_LOST,
    RunOutcome,
    failed,
    settle_abandoned,
    succeeded,
)
from retention_pipeline.core.job_records import STATUS_LIST, job_key
from retention_pipeline.core.job_status import JobStatusBoard, JobTracker
from retention_pipeline_tests.conftest import RedisServer
from retention_pipeline_tests.core.slow_redis import slow_redis

CREATED = datetime(2026, 12, 6, 3, 0, 5, tzinfo=UTC)


def _unfinished(tracker: JobTracker, run_id: str, job_type: str = "data_cleanup", at=CREATED) -> str:
    """A record left running by its run (killed, or its last write lost); its job id."""
    board = JobStatusBoard(tracker, job_type, run_id, at, print)
    board.running(40, "Deleting old detections")
    board.flush()
    return board.job_id


def _record(server: RedisServer, job_id: str) -> dict:
    raw = server.client().get(job_key(job_id))
    assert raw is not None
    return json.loads(raw)


def _camera_job(server: RedisServer, job_id: str, status: str = "running") -> dict:
    """A job of the camera system's own, as it writes them: no dagster_run_id, its own id scheme."""
    record = {
        "job_id": job_id,
        "job_type": "data_cleanup",
        "status": status,
        "progress": 40,
        "message": "Cleaning up old data",
        "created_at": CREATED.isoformat(),
        "started_at": CREATED.isoformat(),
        "completed_at": None,
        "result": None,
        "error": None,
    }
    client = server.client()
    client.set(job_key(job_id), json.dumps(record))
    client.zadd(STATUS_LIST, {job_id: CREATED.timestamp()})
    return record


def test_each_record_is_finished_as_its_run_really_ended(redis_server: RedisServer):
    tracker = JobTracker(redis_server.url, ttl_seconds=300)
    outcomes: dict[str, RunOutcome | None] = {
        "aaaaaaaa-succeeded": succeeded({"events_deleted": 3, "dry_run": False}),
        "bbbbbbbb-failed": failed("purge_events failed: the database is too slow"),
        "cccccccc-canceled": failed("The run was canceled in Dagster."),
        "dddddddd-lost": failed(KILLED_OR_LOST),
        "eeeeeeee-running": None,
    }
    ids = {run_id: _unfinished(tracker, run_id) for run_id in outcomes}

    settled = settle_abandoned(tracker, outcomes.__getitem__, print)

    assert sorted(settled) == sorted(ids[run_id] for run_id in outcomes if outcomes[run_id] is not None)
    done = _record(redis_server, ids["aaaaaaaa-succeeded"])
    assert (done["status"], done["progress"], done["error"]) == ("completed", 100, None)
    assert done["result"] == {"events_deleted": 3, "dry_run": False} and done["completed_at"]
    assert (
        _record(redis_server, ids["bbbbbbbb-failed"])["error"]
        == "purge_events failed: the database is too slow"
    )
    assert _record(redis_server, ids["cccccccc-canceled"])["error"] == "The run was canceled in Dagster."
    lost = _record(redis_server, ids["dddddddd-lost"])
    assert (lost["status"], lost["error"], lost["progress"]) == ("failed", KILLED_OR_LOST, 40)
    assert _record(redis_server, ids["eeeeeeee-running"])["status"] == "running"
    for run_id in ("aaaaaaaa-succeeded", "bbbbbbbb-failed"):
        assert 0 < redis_server.client().ttl(job_key(ids[run_id])) <= 300


def test_the_camera_systems_own_jobs_are_never_touched(redis_server: RedisServer):
    tracker = JobTracker(redis_server.url)
    own_cleanup = _camera_job(redis_server, f"cleanup-{CREATED:%Y%m%d-%H%M%S}")
    # Our id scheme, but not a record of ours: no Dagster run named in it.
    lookalike = _camera_job(redis_server, f"cleanup-{CREATED:%Y%m%d-%H%M%S}-12345678")
    asked: list[str] = []

    def every_run_is_over(run_id: str) -> RunOutcome:
        asked.append(run_id)
        return failed(KILLED_OR_LOST)

    settled = settle_abandoned(tracker, every_run_is_over, print)

    assert settled == [] and asked == []
    assert _record(redis_server, own_cleanup["job_id"]) == own_cleanup
    assert _record(redis_server, lookalike["job_id"]) == lookalike


def test_an_odd_entry_in_the_shared_list_does_not_stop_the_check(redis_server: RedisServer):
    tracker = JobTracker(redis_server.url)
    abandoned = _unfinished(tracker, "deaddead-0000")
    client = redis_server.client()
    later = (CREATED + timedelta(hours=1)).timestamp()
    # Newer entries: a key of another type and a value that is not JSON, under other jobs' ids and ours.
    odd = [
        f"cleanup-{CREATED:%Y%m%d-%H%M%S}-hashhash",
        f"cleanup-{CREATED:%Y%m%d-%H%M%S}-notjson0",
        "export-1",
    ]
    client.hset(job_key(odd[0]), mapping={"status": "running"})
    client.set(job_key(odd[1]), "{not json")
    client.hset(job_key(odd[2]), mapping={"status": "running"})
    client.zadd(STATUS_LIST, dict.fromkeys(odd, later))
    troubles: list[Exception] = []

    settled = settle_abandoned(tracker, lambda _run: failed(KILLED_OR_LOST), troubles.append)

    assert settled == [abandoned] and troubles == []
    assert _record(redis_server, abandoned)["status"] == "failed"
    assert client.type(job_key(odd[0])) == "hash" and client.get(job_key(odd[1])) == "{not json"
    assert all(client.zscore(STATUS_LIST, job_id) == later for job_id in odd)


def test_a_record_behind_hundreds_of_newer_jobs_is_still_settled(redis_server: RedisServer):
    tracker = JobTracker(redis_server.url)
    abandoned = _unfinished(tracker, "deaddead-0000")
    client = redis_server.client()
    newer = {f"export-{n}": (CREATED + timedelta(minutes=n + 1)).timestamp() for n in range(300)}
    client.zadd(STATUS_LIST, newer)

    settled = settle_abandoned(tracker, lambda _run: failed(KILLED_OR_LOST), print)

    assert settled == [abandoned]
    assert _record(redis_server, abandoned)["status"] == "failed"


def test_the_records_of_both_jobs_are_settled(redis_server: RedisServer):
    tracker = JobTracker(redis_server.url)
    cleanup = _unfinished(tracker, "aaaaaaaa-cleanup", "data_cleanup")
    sweep = _unfinished(tracker, "bbbbbbbb-sweep", "orphaned_file_cleanup")

    settled = settle_abandoned(tracker, lambda _run: failed(KILLED_OR_LOST), print)

    assert sorted(settled) == sorted([cleanup, sweep])
    assert {_record(redis_server, job_id)["status"] for job_id in (cleanup, sweep)} == {"failed"}


def test_our_expired_ids_leave_the_shared_list_and_nothing_else_does(redis_server: RedisServer):
    client = redis_server.client()
    short = JobTracker(redis_server.url, ttl_seconds=1)
    expired = []
    for n in range(3):
        board = JobStatusBoard(short, "data_cleanup", f"{n:08d}-expired", CREATED, print)
        board.completed({"dry_run": False})
        expired.append(board.job_id)
    live = _unfinished(JobTracker(redis_server.url), "11111111-live")
    camera_gone = f"cleanup-{CREATED:%Y%m%d-%H%M%S}"  # the camera system's own, its record expired
    client.zadd(STATUS_LIST, {camera_gone: CREATED.timestamp()})
    time.sleep(1.2)
    assert not any(client.exists(job_key(job_id)) for job_id in expired)

    settle_abandoned(JobTracker(redis_server.url), lambda _run: None, print)

    assert sorted(client.zrange(STATUS_LIST, 0, -1)) == sorted([live, camera_gone])


def test_a_slow_redis_holds_the_check_up_briefly(redis_server: RedisServer):
    direct = JobTracker(redis_server.url)
    abandoned = [_unfinished(direct, f"{n:08d}-lost") for n in range(200)]
    with slow_redis(redis_server.port, delay=0.1) as proxy:
        started = time.monotonic()
        settled = settle_abandoned(JobTracker(proxy.url()), lambda _run: failed(KILLED_OR_LOST), print)
        took = time.monotonic() - started

    assert sorted(settled) == sorted(abandoned)  # in a few round trips, not 200 reads one by one
    assert took < 2.0


def test_the_check_gives_up_when_redis_is_too_slow_and_says_so(redis_server: RedisServer):
    abandoned = _unfinished(JobTracker(redis_server.url), "deaddead-0000")
    troubles: list[Exception] = []
    with slow_redis(redis_server.port, delay=0.3) as proxy:
        started = time.monotonic()
        settled = settle_abandoned(
            JobTracker(proxy.url()), lambda _run: failed(KILLED_OR_LOST), troubles.append, 0.4
        )
        took = time.monotonic() - started

    assert took < 0.4 + 1.0  # the budget, and the round trip under way when it ran out
    assert settled == [] and "longer than" in str(troubles[0])
    assert _record(redis_server, abandoned)["status"] == "running"  # left for the next run
