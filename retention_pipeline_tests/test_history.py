"""What the run history says of a run: an emergency run's totals, a failed run's committed counts, the last
real orphan sweep."""

import json
import os
import time

import pytest

from retention_pipeline.core.lock import LOST_MESSAGE, RunLockLost
from retention_pipeline.core.schema import detections, events
from retention_pipeline.core.stats import CleanupStats
from retention_pipeline.failed_runs import first_failure, step_failure_reason
from retention_pipeline.history import cleanup_status, last_sweep_report, recent_cleanup_runs
from retention_pipeline.jobs import orphaned_file_cleanup
from retention_pipeline.resources import DiskSpaceResource
from retention_pipeline.settings import Settings
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.dagster_helpers import (
    camera_resource,
    execute,
    failure_messages,
    plan_config,
    refuse_table,
)
from retention_pipeline_tests.factories import THUMBS, CameraWorld
from retention_pipeline_tests.test_disk_pressure import RowsFillTheDisk, emergency_run
from retention_pipeline_tests.test_emergency_pass_failure import third_batch_fails


def _disk(world: CameraWorld) -> RowsFillTheDisk:
    """9% free with the 30 detections of `full`; each one deleted frees about 3%."""
    return RowsFillTheDisk(database_url=world.engine.url.render_as_string(hide_password=False), capacity=33)


def test_a_failed_emergency_run_keeps_the_total_of_every_pass_in_its_tags(
    full: CameraWorld,
    instance,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("MIN_RETENTION_DAYS", "29")  # one day can be cut: not enough for the target

    result = emergency_run(full, instance, _disk(full))

    assert not result.success and full.count(detections) == 29
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["failed_step"] == "relieve_disk_pressure"
    assert tags["detections_deleted"] == "1"  # the emergency pass's, not the normal pass's 0
    status = cleanup_status(instance, Settings.from_env(), limit=5)
    assert status["runs"][0]["headline"]["detections_deleted"] == "1"
    assert status["last_run"]["stats"]["detections_deleted"] == 1


def test_status_counts_the_emergency_passes_of_a_run(full: CameraWorld, instance):
    result = emergency_run(full, instance, _disk(full))

    assert result.success and full.count(detections) == 28
    status = cleanup_status(instance, Settings.from_env(), limit=5)
    assert status["last_run"]["stats"]["detections_deleted"] == 2
    assert status["runs"][0]["headline"]["detections_deleted"] == "2"
    assert status["runs"][0]["rows_deleted_by_table"]["detections"] == 2


def test_dry_sweeps_never_hide_the_last_real_one(world: CameraWorld, instance):
    stray = world.media / world.file(f"{THUMBS}/stray.jpg", 10)
    two_days_ago = time.time() - 48 * 3600
    os.utime(stray, (two_days_ago, two_days_ago))
    resources = {"camera_system": camera_resource(world), "disk": DiskSpaceResource()}

    def sweep(dry_run: bool) -> None:
        config = {"dry_run": dry_run, "force": True}  # one file, all of it orphaned: past the safety stop
        result = orphaned_file_cleanup.execute_in_process(
            run_config={"ops": {"plan_orphan_sweep": {"config": config}}},
            resources=resources,
            instance=instance,
        )
        assert result.success

    sweep(dry_run=False)
    for _ in range(21):  # more than the runs the check reads back
        sweep(dry_run=True)

    report = last_sweep_report(instance)
    assert report is not None
    assert (report["dry_run"], report["orphans_found"], report["orphans_deleted"]) == (False, 1, 1)


def test_a_failed_emergency_runs_job_record_counts_every_pass(
    full: CameraWorld,
    instance,
    redis_server,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("JOB_STATUS_REDIS_URL", redis_server.url)
    monkeypatch.setenv("MIN_RETENTION_DAYS", "29")

    result = emergency_run(full, instance, _disk(full))

    assert not result.success
    client = redis_server.client()
    [record] = [json.loads(client.get(f"job:{job_id}")) for job_id in client.zrange("job:status:list", 0, -1)]
    assert record["status"] == "failed" and record["error"].startswith("relieve_disk_pressure failed: ")
    assert record["result"]["detections_deleted"] == 1  # the emergency pass's, as the run's tags say


@pytest.fixture
def expired(world: CameraWorld) -> CameraWorld:
    """An expired event with its alert and clip, its expired detection with a thumbnail, an expired log
    line, and a retained event and detection."""
    old_event = world.event(world.old(), alerts_count=1, clip=world.file("data/clips/old.mp4", 300))
    world.detection(world.old(), events_=(old_event,), thumbnail=world.file(f"{THUMBS}/old.jpg", 50))
    world.event(world.recent())
    world.detection(world.recent())
    world.log(world.log_cutoff - world.log_cutoff.resolution * 1000)
    return world


def _logs_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_table(monkeypatch, "logs", "logs are protected")


def test_a_failed_run_reports_what_steps_committed_after_the_failing_one(
    expired: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    _logs_refused(monkeypatch)  # purge_logs fails before purge_events, which does not depend on it, runs

    result = execute(expired, instance, plan_config(dry_run=False, reference_time=expired.now.isoformat()))

    assert not result.success and expired.count(events) == 1 and expired.count(detections) == 1
    tags = instance.get_run_by_id(result.run_id).tags
    assert {k: tags.get(k) for k in ("failed_step", "dry_run", "events_deleted", "detections_deleted")} == {
        "failed_step": "purge_logs",
        "dry_run": "false",
        "events_deleted": "1",
        "detections_deleted": "1",
    }
    [row] = recent_cleanup_runs(instance, 1)
    assert (row["events_deleted"], row["detections_deleted"], row["logs_deleted"]) == (1, 1, None)
    assert row["headline"]["events_deleted"] == "1" and row["headline"]["failed_step"] == "purge_logs"


def test_a_run_failing_in_its_report_still_reports_the_files_it_deleted(
    expired: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    def no_report(*_args, **_kwargs):
        raise RuntimeError("the report is lost")

    monkeypatch.setattr(CleanupStats, "combine", no_report)

    result = execute(expired, instance, plan_config(dry_run=False, reference_time=expired.now.isoformat()))

    assert not result.success and not expired.exists(f"{THUMBS}/old.jpg")
    tags = instance.get_run_by_id(result.run_id).tags
    assert (tags["failed_step"], tags["files_deleted"], tags["space_reclaimed"]) == (
        "report_cleanup",
        "2",
        "350 B",
    )
    [row] = recent_cleanup_runs(instance, 1)
    assert (row["thumbnails_deleted"], row["clips_deleted"], row["space_reclaimed"]) == (1, 1, 350)


@pytest.mark.parametrize("instance_fixture", ["instance", "postgres_instance"])
def test_a_successful_re_execution_drops_the_failed_step_its_parent_had(
    expired: CameraWorld, instance_fixture: str, request: pytest.FixtureRequest
):
    dagster = request.getfixturevalue(instance_fixture)
    # The UI's re-execution and the retry daemon copy the parent run's tags to the new run.
    parent_tags = {"failed_step": "purge_logs", "dry_run": "false", "detections_deleted": "1"}

    result = execute(
        expired, dagster, plan_config(dry_run=False, reference_time=expired.now.isoformat()), tags=parent_tags
    )

    assert result.success
    tags = dagster.get_run_by_id(result.run_id).tags
    assert "failed_step" not in tags and tags["events_deleted"] == "1"
    [row] = recent_cleanup_runs(dagster, 1)
    assert "failed_step" not in row["headline"]


def test_a_real_run_is_tagged_real_whichever_op_its_config_lists_first(
    expired: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    _logs_refused(monkeypatch)  # a failed run: its dry_run tag comes from the run config
    real = plan_config(dry_run=False, reference_time=expired.now.isoformat())
    # Dagster accepts an empty entry for an op without config; the stored run config sorts the ops by name.
    config = {"ops": {"delete_expired_files": {}, **real["ops"]}}

    result = execute(expired, instance, config)

    assert not result.success and expired.count(detections) == 1
    assert instance.get_run_by_id(result.run_id).tags["dry_run"] == "false"


@both_shapes
@pytest.mark.parametrize(
    "error, words",
    [
        (RuntimeError("server closed the connection"), "server closed"),
        (RunLockLost(LOST_MESSAGE), "lost its lock"),
    ],
    ids=["database_error", "lock_lost"],
)
def test_a_purge_failing_at_a_later_batch_reports_the_batches_it_committed(
    world: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch, error: Exception, words: str
):
    for _ in range(6):
        world.detection(world.old())
    third_batch_fails(monkeypatch, error)

    config = plan_config(
        dry_run=False, reference_time=world.now.isoformat(), batch_size=2, transaction_target_ms=0
    )
    result = execute(world, instance, config)

    gone = 6 - world.count(detections)
    assert not result.success and words in failure_messages(result) and gone == 4
    # What operators read (the CLI, the job tracker): the error's own words, not only its chained cause.
    failure = first_failure(instance, result.run_id)
    assert failure is not None and words in step_failure_reason(*failure)
    tags = instance.get_run_by_id(result.run_id).tags
    assert (tags["failed_step"], tags["detections_deleted"]) == ("purge_detections", "4")
    [row] = recent_cleanup_runs(instance, 1)
    assert row["detections_deleted"] == 4
