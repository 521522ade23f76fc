"""data_cleanup and orphaned_file_cleanup in the camera system's job tracker, on SQLite and PostgreSQL."""

import json
import os
import re
import socket
import subprocess
import time

import dagster as dg
import pytest

from retention_pipeline import job_tracker
from retention_pipeline.core import cleanup, job_status
from retention_pipeline.core.abandoned_jobs import KILLED_OR_LOST
from retention_pipeline.core.job_records import job_key
from retention_pipeline.core.job_status import JobStatusBoard, JobTracker
from retention_pipeline.core.schema import detections, events
from retention_pipeline.jobs import data_cleanup, orphaned_file_cleanup
from retention_pipeline.resources import DiskSpaceResource
from retention_pipeline.run_processes import record_process
from retention_pipeline.schedules import build_daily_schedule
from retention_pipeline.settings import Settings
from retention_pipeline.tags import INVALID_CONFIG
from retention_pipeline_tests.conftest import RedisServer
from retention_pipeline_tests.dagster_helpers import camera_resource, execute, plan_config, refuse_table
from retention_pipeline_tests.factories import THUMBS, CameraWorld


@pytest.fixture
def tracked(world: CameraWorld, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> CameraWorld:
    """A world with expired rows and files, and runs publishing to the test's Redis."""
    monkeypatch.setenv("JOB_STATUS_REDIS_URL", redis_server.url)
    monkeypatch.setenv("JOB_STATUS_TTL_SECONDS", "120")
    old_event = world.event(world.old(), alerts_count=1, clip=world.file("data/clips/old.mp4", 300))
    world.detection(world.old(), events_=(old_event,), thumbnail=world.file(f"{THUMBS}/old.jpg", 50))
    world.event(world.recent())
    world.detection(world.recent())
    return world


def _records(server: RedisServer) -> list[dict]:
    client = server.client()
    return [json.loads(client.get(job_key(job_id))) for job_id in client.zrange("job:status:list", 0, -1)]


def _run(world: CameraWorld, instance: dg.DagsterInstance, dry_run: bool) -> dg.ExecuteInProcessResult:
    return execute(world, instance, plan_config(dry_run=dry_run, reference_time=world.now.isoformat()))


def test_a_real_run_ends_completed_with_its_statistics(
    tracked: CameraWorld, redis_server: RedisServer, instance
):
    result = _run(tracked, instance, dry_run=False)

    assert result.success
    [record] = _records(redis_server)
    stats = result.output_for_node("report_cleanup")
    assert re.fullmatch(rf"cleanup-\d{{8}}-\d{{6}}-{result.run_id[:8]}", record["job_id"])
    assert record["dagster_run_id"] == result.run_id
    assert (record["job_type"], record["status"], record["progress"]) == ("data_cleanup", "completed", 100)
    assert record["result"] == json.loads(json.dumps(stats.as_dict()))
    assert record["result"]["events_deleted"] == 1 and record["result"]["dry_run"] is False
    assert record["error"] is None and record["started_at"] and record["completed_at"]
    assert 0 < redis_server.client().ttl(job_key(record["job_id"])) <= 120


def test_a_dry_run_is_published_as_one(tracked: CameraWorld, redis_server: RedisServer, instance):
    result = _run(tracked, instance, dry_run=True)

    [record] = _records(redis_server)
    assert result.success and record["status"] == "completed"
    assert record["result"]["dry_run"] is True and record["result"]["events_deleted"] == 1
    assert tracked.count(events) == 2


def test_a_failed_run_ends_failed_with_its_message(
    tracked: CameraWorld, redis_server: RedisServer, instance, monkeypatch: pytest.MonkeyPatch
):
    def too_slow(*_args, **_kwargs):
        raise cleanup.SchemaError("table 'events' is missing")

    monkeypatch.setattr(cleanup, "prepare_database", too_slow)

    result = _run(tracked, instance, dry_run=False)

    [record] = _records(redis_server)
    assert not result.success
    assert record["status"] == "failed"
    assert record["error"] == "plan_cleanup failed: table 'events' is missing"
    assert tracked.count(detections) == 2


def test_a_schedule_tick_meeting_a_broken_policy_file_starts_a_run_that_fails_with_its_message(
    tracked: CameraWorld, redis_server: RedisServer, instance, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    # Saved after the code location loaded: the tick is the first to read it.
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: audit_logs\n    time_column: created_at\n    retention_days: 0\n")
    monkeypatch.setenv("RETENTION_POLICY_FILE", str(policy))
    tick = dg.build_schedule_context(instance=instance, scheduled_execution_time=tracked.now)

    [request] = build_daily_schedule(Settings()).evaluate_tick(tick).run_requests or []
    result = execute(tracked, instance, request.run_config)

    [failure] = [event for event in result.all_events if event.is_step_failure]
    expected = f"RETENTION_POLICY_FILE {policy}: tables[0] (audit_logs): retention_days must be"
    assert failure.step_key == "plan_cleanup" and expected in failure.step_failure_data.error.message
    assert INVALID_CONFIG in failure.step_failure_data.user_failure_data.metadata
    [record] = _records(redis_server)
    assert record["status"] == "failed" and record["dagster_run_id"] == result.run_id
    assert record["error"].startswith(f"plan_cleanup failed: Invalid configuration: {expected}")
    assert tracked.count(events) == 2 and tracked.count(detections) == 2


def test_redis_stopped_mid_run_changes_nothing_but_one_warning(
    tracked: CameraWorld, redis_server: RedisServer, instance, monkeypatch: pytest.MonkeyPatch
):
    real_clean_table = cleanup.clean_table

    def stop_redis_after_detections(engine, plan, table, *args):
        counts = real_clean_table(engine, plan, table, *args)
        if table == "detections":
            redis_server.stop()
        return counts

    monkeypatch.setattr(cleanup, "clean_table", stop_redis_after_detections)

    result = _run(tracked, instance, dry_run=False)

    assert result.success
    stats = result.output_for_node("report_cleanup")
    assert (stats.events_deleted, stats.detections_deleted, stats.thumbnails_deleted) == (1, 1, 1)
    assert tracked.count(events) == 1 and not tracked.exists(f"{THUMBS}/old.jpg")
    warnings = [
        event.message
        for event in instance.all_logs(result.run_id)
        if event.level == 30 and "job tracker" in (event.message or "")
    ]
    assert len(warnings) == 1


def test_the_file_steps_bar_follows_the_share_of_all_queued_files_handled(
    world: CameraWorld, redis_server: RedisServer, instance, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("JOB_STATUS_REDIS_URL", redis_server.url)
    monkeypatch.setattr(job_status, "PROGRESS_EVERY_S", 0.0)  # every share's progress is written
    for number in range(8):
        world.event(world.old(), clip=world.file(f"data/clips/old{number}.mp4", 300))
    bar_as_a_share_starts: list[int] = []
    real_clean_files = cleanup.clean_files

    def note_the_bar(engine, plan, progress, chunk, files_handled):
        for board in job_tracker._BOARDS.values():
            board.flush()
        [record] = _records(redis_server)
        bar_as_a_share_starts.append(record["progress"])
        return real_clean_files(engine, plan, progress, chunk, files_handled)

    monkeypatch.setattr(cleanup, "clean_files", note_the_bar)
    config = plan_config(dry_run=False, reference_time=world.now.isoformat(), file_chunk_size=2)

    result = execute(world, instance, config)

    assert result.success and result.output_for_node("report_cleanup").clips_deleted == 8
    # Four shares of two files each: the bar is a quarter of the way through 60-90 after each.
    assert bar_as_a_share_starts == [60, 68, 75, 82]


def test_redis_down_from_the_start_costs_a_run_one_warning(
    world: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("JOB_STATUS_REDIS_URL", f"redis://127.0.0.1:{port}/11")
    world.event(world.old(), clip=world.file("data/clips/old.mp4", 300))

    result = _run(world, instance, dry_run=False)

    assert result.success and result.output_for_node("report_cleanup").events_deleted == 1
    warnings = [
        event.message
        for event in instance.all_logs(result.run_id)
        if event.level == 30 and "job tracker" in (event.message or "")
    ]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0]


def test_a_run_killed_without_writing_is_marked_failed_by_the_next_run(
    tracked: CameraWorld, redis_server: RedisServer, instance
):
    killed = instance.create_run_for_job(data_cleanup, run_id="deadbeef-0000-4000-8000-000000000000")
    instance.report_run_failed(killed, "The process running this run is gone (killed).")
    board = JobStatusBoard(
        JobTracker(redis_server.url), "data_cleanup", killed.run_id, tracked.now, lambda _message: None
    )
    board.running(30, "Deleting old detections")
    board.flush()

    result = _run(tracked, instance, dry_run=True)

    by_run = {record["dagster_run_id"]: record for record in _records(redis_server)}
    assert result.success
    assert by_run[killed.run_id]["status"] == "failed"
    assert by_run[killed.run_id]["error"] == "The process running this run is gone (killed)."
    assert by_run[result.run_id]["status"] == "completed"


def test_the_orphan_sweep_is_published_too(tracked: CameraWorld, redis_server: RedisServer, instance):
    stray = tracked.media / tracked.file(f"{THUMBS}/stray.jpg", 10)
    two_days_ago = time.time() - 48 * 3600
    os.utime(stray, (two_days_ago, two_days_ago))

    result = orphaned_file_cleanup.execute_in_process(
        run_config={"ops": {"plan_orphan_sweep": {"config": {"dry_run": True}}}},
        resources={"camera_system": camera_resource(tracked), "disk": DiskSpaceResource()},
        instance=instance,
    )

    [record] = _records(redis_server)
    assert result.success
    assert re.fullmatch(rf"orphan-cleanup-\d{{8}}-\d{{6}}-{result.run_id[:8]}", record["job_id"])
    assert (record["job_type"], record["status"]) == ("orphaned_file_cleanup", "completed")
    assert record["result"]["dry_run"] is True and record["result"]["orphans_found"] >= 1


def _lose_the_final_write(server: RedisServer, run_id: str) -> str:
    """Put a finished run's record back as its last op left it when the final write was lost."""
    client = server.client()
    [record] = [record for record in _records(server) if record["dagster_run_id"] == run_id]
    record.update(status="running", progress=95, message="Freeing disk space", completed_at=None)
    record.update(result=None, error=None)
    client.set(job_key(record["job_id"]), json.dumps(record))
    return record["job_id"]


def _left_running(server: RedisServer, job_type: str, run_id: str, created) -> str:
    """A record as a run of `job_type` leaves it when it dies mid-run; its job id."""
    board = JobStatusBoard(JobTracker(server.url), job_type, run_id, created, lambda _message: None)
    board.running(50, "Deleting")
    board.flush()
    return board.job_id


def test_a_run_that_succeeded_shows_completed_with_its_statistics_though_its_last_write_was_lost(
    tracked: CameraWorld, redis_server: RedisServer, instance
):
    earlier = _run(tracked, instance, dry_run=True)
    job_id = _lose_the_final_write(redis_server, earlier.run_id)

    assert _run(tracked, instance, dry_run=True).success

    record = json.loads(redis_server.client().get(job_key(job_id)))
    assert (record["status"], record["progress"], record["error"]) == ("completed", 100, None)
    assert record["result"] == json.loads(json.dumps(earlier.output_for_node("report_cleanup").as_dict()))
    assert 0 < redis_server.client().ttl(job_key(job_id)) <= 120


def test_a_run_that_failed_shows_its_own_reason_though_its_last_write_was_lost(
    tracked: CameraWorld, redis_server: RedisServer, instance, monkeypatch: pytest.MonkeyPatch
):
    def missing_table(*_args, **_kwargs):
        raise cleanup.SchemaError("table 'events' is missing")

    with monkeypatch.context() as patched:
        patched.setattr(cleanup, "prepare_database", missing_table)
        earlier = _run(tracked, instance, dry_run=False)
    job_id = _lose_the_final_write(redis_server, earlier.run_id)

    assert _run(tracked, instance, dry_run=True).success

    record = json.loads(redis_server.client().get(job_key(job_id)))
    assert (record["status"], record["error"]) == ("failed", "plan_cleanup failed: table 'events' is missing")


def test_canceled_lost_and_dead_runs_are_told_apart_and_a_live_one_is_left_running(
    tracked: CameraWorld, redis_server: RedisServer, instance
):
    canceled = instance.create_run_for_job(data_cleanup)
    instance.report_run_canceled(canceled, "canceled from the UI")
    dead = instance.create_run_for_job(data_cleanup, status=dg.DagsterRunStatus.STARTED)
    alive = instance.create_run_for_job(data_cleanup, status=dg.DagsterRunStatus.STARTED)
    exited = subprocess.Popen(["true"])
    exited.wait()
    record_process(instance, dead.run_id, pid=exited.pid)
    record_process(instance, alive.run_id, pid=os.getpid())
    # A run this instance does not know: maybe live in another deployment sharing the Redis (or deleted
    # by dagster_history_cleanup): left to expire by itself, never marked failed from here.
    unknown = "0badc0de-0000-4000-8000-000000000000"
    for run_id in (canceled.run_id, dead.run_id, alive.run_id, unknown):
        _left_running(redis_server, "data_cleanup", run_id, tracked.now)

    assert _run(tracked, instance, dry_run=True).success

    by_run = {record["dagster_run_id"]: record for record in _records(redis_server)}
    assert by_run[canceled.run_id]["error"] == "The run was canceled in Dagster."
    assert by_run[dead.run_id]["error"] == KILLED_OR_LOST
    assert {by_run[run_id]["status"] for run_id in (canceled.run_id, dead.run_id)} == {"failed"}
    assert by_run[alive.run_id]["status"] == by_run[unknown]["status"] == "running"


def test_a_killed_orphan_sweep_is_settled_by_the_next_daily_cleanup(
    tracked: CameraWorld, redis_server: RedisServer, instance
):
    killed = instance.create_run_for_job(orphaned_file_cleanup)
    instance.report_run_failed(killed, "The process running this run is gone (killed).")
    job_id = _left_running(redis_server, "orphaned_file_cleanup", killed.run_id, tracked.now)

    assert _run(tracked, instance, dry_run=True).success

    record = json.loads(redis_server.client().get(job_key(job_id)))
    assert (record["status"], record["error"]) == ("failed", "The process running this run is gone (killed).")
    assert 0 < redis_server.client().ttl(job_key(job_id)) <= 120


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_stages_of_a_dry_run_say_they_only_count(
    tracked: CameraWorld, redis_server: RedisServer, instance, monkeypatch: pytest.MonkeyPatch, dry_run: bool
):
    shown: dict[str, str] = {}
    real_clean_table = cleanup.clean_table

    def note_the_message(engine, plan, table, *args):
        for board in job_tracker._BOARDS.values():
            board.flush()
        [record] = _records(redis_server)
        shown[table] = record["message"]
        return real_clean_table(engine, plan, table, *args)

    monkeypatch.setattr(cleanup, "clean_table", note_the_message)

    assert _run(tracked, instance, dry_run=dry_run).success

    if dry_run:
        assert shown["detections"] == "Dry run: counting old detections"
        assert shown["events"] == "Dry run: counting old events"
        assert not any("Deleting" in message for message in shown.values())
    else:
        assert (shown["detections"], shown["events"]) == ("Deleting old detections", "Deleting old events")


def test_trouble_settling_earlier_runs_does_not_quiet_this_runs_own_record(
    tracked: CameraWorld, redis_server: RedisServer, instance, monkeypatch: pytest.MonkeyPatch
):
    import retention_pipeline.job_tracker as job_tracker

    earlier = instance.create_run_for_job(data_cleanup)
    instance.report_run_canceled(earlier, "canceled")
    _left_running(redis_server, "data_cleanup", earlier.run_id, tracked.now)

    def unanswerable(_instance: dg.DagsterInstance, _run_id: str) -> None:
        raise RuntimeError("run storage unavailable")

    monkeypatch.setattr(job_tracker, "run_outcome", unanswerable)
    result = _run(tracked, instance, dry_run=True)

    assert result.success
    own = [r for r in _records(redis_server) if r["dagster_run_id"] == result.run_id]
    assert [(r["status"], r["progress"]) for r in own] == [("completed", 100)]
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("could not settle the job tracker's records of earlier runs" in m for m in logged)


def test_a_failed_runs_reason_is_its_errors_own_words_not_dagsters_wrapper(
    tracked: CameraWorld, redis_server: RedisServer, instance, monkeypatch: pytest.MonkeyPatch
):
    refuse_table(monkeypatch, "logs", "logs are protected")
    failed_run = _run(tracked, instance, dry_run=False)

    # What the next run writes into the record of a run whose own final write was lost.
    outcome = job_tracker.run_outcome(instance, failed_run.run_id)

    assert outcome is not None and outcome.error == "purge_logs failed: logs are protected"
    [record] = _records(redis_server)  # the failure hook's own words are the same
    assert (record["status"], record["error"]) == ("failed", outcome.error)
