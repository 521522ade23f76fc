"""The database's run lock through Dagster: a run that loses it stops deleting in every later step, and a
re-execution from failure holds it whichever step it starts from."""

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import create_engine, func, select, text

from retention_pipeline.core import cleanup, orphans
from retention_pipeline.core.lock import ExclusiveRunLock
from retention_pipeline.core.schema import detections, events, gpu_stats, logs
from retention_pipeline.jobs import build_data_cleanup_job, orphaned_file_cleanup
from retention_pipeline.resources import CameraSystemResource, DiskSpaceResource
from retention_pipeline.run_processes import recorded_process
from retention_pipeline.tags import EXCLUSIVE_TAGS
from retention_pipeline_tests.dagster_helpers import (
    camera_resource,
    execute,
    failure_messages,
    plan_config,
    point_environment_at,
)
from retention_pipeline_tests.factories import THUMBS, CameraWorld


@pytest.fixture
def expired(world: CameraWorld) -> CameraWorld:
    """One expired row in each table the job purges, and the files of the expired event and detection."""
    old_event = world.event(world.old(), clip=world.file("data/clips/old.mp4"))
    world.detection(world.old(), events_=(old_event,), thumbnail=world.file(f"{THUMBS}/old.jpg"))
    world.gpu(world.old())
    world.log(world.log_cutoff - world.log_cutoff.resolution * 1000)
    return world


@pytest.fixture
def other_run(world: CameraWorld) -> Iterator[ExclusiveRunLock]:
    """Another retention run's lock on the same database (another deployment, a CLI run), not yet taken."""
    engine = create_engine(world.engine.url)
    lock = ExclusiveRunLock(engine)
    yield lock
    lock.release()
    engine.dispose()


def _end_lock_sessions(world: CameraWorld) -> None:
    """What a server restart, a failover or idle_session_timeout does to the run lock's session."""
    with create_engine(world.engine.url).connect() as admin:
        sessions = text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
        for pid in admin.execute(sessions).scalars().all():
            admin.execute(select(func.pg_terminate_backend(pid)))


def test_a_run_that_lost_its_lock_deletes_nothing_more_in_any_later_step(
    postgresql_only: None,
    expired: CameraWorld,
    other_run: ExclusiveRunLock,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
):
    real_clean_table = cleanup.clean_table

    def lose_the_lock_in_gpu_stats(engine, plan, table, *args):
        if table == "gpu_stats":
            _end_lock_sessions(expired)
            other_run.acquire()
        return real_clean_table(engine, plan, table, *args)

    monkeypatch.setattr(cleanup, "clean_table", lose_the_lock_in_gpu_stats)

    result = execute(expired, instance, plan_config(dry_run=False, reference_time=expired.now.isoformat()))

    assert not result.success
    # purge_detections finished before the loss; nothing after it deleted a row or a file.
    assert expired.count(detections) == 0
    assert (expired.count(events), expired.count(gpu_stats), expired.count(logs)) == (1, 1, 1)
    assert expired.exists(f"{THUMBS}/old.jpg") and expired.exists("data/clips/old.mp4")
    failed = {event.step_key for event in result.all_events if event.is_step_failure}
    assert {"purge_gpu_stats", "purge_logs", "purge_events"} <= failed
    assert "lost its lock on the database" in failure_messages(result)
    assert "nothing more is deleted" in failure_messages(result)


def _deployed(executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    """data_cleanup as a deployment loads it: the resources read the environment when a run starts."""
    return dg.Definitions(
        jobs=[build_data_cleanup_job(executor)],
        resources={"camera_system": CameraSystemResource(), "disk": DiskSpaceResource()},
    ).resolve_job_def("data_cleanup")


# Module-level, so `dg.reconstructable` can load them: a re-execution needs a reconstructable job.
def data_cleanup_in_process() -> dg.JobDefinition:
    return _deployed(dg.in_process_executor)


def data_cleanup_on_either_executor() -> dg.JobDefinition:
    return _deployed(dg.multi_or_in_process_executor)


def _fail_purge_logs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real_clean_table = cleanup.clean_table
    failed: list[bool] = []

    def logs_fail_once(engine, plan, table, *args):
        if table == "logs" and not failed:
            failed.append(True)
            raise RuntimeError("the server restarted during purge_logs")
        return real_clean_table(engine, plan, table, *args)

    monkeypatch.setattr(cleanup, "clean_table", logs_fail_once)


def _reexecuted_beside_and_after(
    other_run: ExclusiveRunLock, job: Any, instance: dg.DagsterInstance, failed: dg.JobExecutionResult
) -> tuple[dg.JobExecutionResult, dg.JobExecutionResult]:
    """A failed run re-executed from failure while another run (another deployment, a CLI run of another
    Dagster instance) holds the database's lock, then again once it let go."""
    other_run.acquire()
    refused = dg.execute_job(
        job, instance, reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance)
    )
    other_run.release()
    retried = dg.execute_job(
        job, instance, reexecution_options=dg.ReexecutionOptions.from_failure(refused.run_id, instance)
    )
    return refused, retried


def _an_old_orphan_beside_live_files(world: CameraWorld) -> str:
    """An orphan two days old, and three referenced files so the safety stop lets it go."""
    orphan = world.file(f"{THUMBS}/orphan.jpg", 10)
    stamp = time.time() - 48 * 3600
    os.utime(world.media / orphan, (stamp, stamp))
    for n in range(3):
        world.detection(world.recent(), thumbnail=world.file(f"{THUMBS}/live{n}.jpg"))
    return orphan


def test_a_re_execution_of_a_failed_side_step_takes_the_lock_and_notes_its_process(
    expired: CameraWorld,
    other_run: ExclusiveRunLock,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
):
    point_environment_at(expired, monkeypatch)
    _fail_purge_logs_once(monkeypatch)
    job = dg.reconstructable(data_cleanup_in_process)
    config = plan_config(dry_run=False, reference_time=expired.now.isoformat())
    failed = dg.execute_job(job, instance, run_config=config, tags=EXCLUSIVE_TAGS, raise_on_error=False)
    assert not failed.success and expired.count(logs) == 1

    refused, retried = _reexecuted_beside_and_after(other_run, job, instance, failed)

    assert not refused.success
    assert "another retention run is working on" in failure_messages(refused)
    assert retried.success and expired.count(logs) == 0
    # A killed re-execution is then judged by its process, not counted as in progress for hours.
    assert recorded_process(instance, retried.run_id) == (os.getpid(), socket.gethostname())


def test_a_run_the_run_config_puts_in_process_notes_its_process(
    expired: CameraWorld, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    point_environment_at(expired, monkeypatch)
    config = {
        **plan_config(dry_run=False, reference_time=expired.now.isoformat()),
        "execution": {"config": {"in_process": {}}},
    }

    result = dg.execute_job(
        dg.reconstructable(data_cleanup_on_either_executor), instance, run_config=config, tags=EXCLUSIVE_TAGS
    )

    assert result.success and expired.count(events) == 0
    assert recorded_process(instance, result.run_id) == (os.getpid(), socket.gethostname())


def orphan_sweep_deployed() -> dg.JobDefinition:
    return dg.Definitions(
        jobs=[orphaned_file_cleanup], resources={"camera_system": CameraSystemResource()}
    ).resolve_job_def("orphaned_file_cleanup")


def test_a_re_execution_of_the_orphan_sweeps_delete_step_takes_the_lock(
    world: CameraWorld,
    other_run: ExclusiveRunLock,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
):
    point_environment_at(world, monkeypatch)
    orphan = _an_old_orphan_beside_live_files(world)
    real_delete, failed_once = orphans.delete_orphans, []

    def fail_once(*args, **kwargs):
        if not failed_once:
            failed_once.append(True)
            raise RuntimeError("the server restarted during the delete phase")
        return real_delete(*args, **kwargs)

    monkeypatch.setattr(orphans, "delete_orphans", fail_once)
    job = dg.reconstructable(orphan_sweep_deployed)
    config = {"ops": {"plan_orphan_sweep": {"config": {"dry_run": False}}}}
    failed = dg.execute_job(job, instance, run_config=config, tags=EXCLUSIVE_TAGS, raise_on_error=False)
    assert not failed.success and world.exists(orphan)

    refused, retried = _reexecuted_beside_and_after(other_run, job, instance, failed)

    assert not refused.success and "another retention run is working on" in failure_messages(refused)
    assert retried.success and not world.exists(orphan)


def test_an_orphan_sweep_that_loses_its_lock_while_deleting_unlinks_nothing_more(
    postgresql_only: None,
    world: CameraWorld,
    other_run: ExclusiveRunLock,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
):
    orphan = _an_old_orphan_beside_live_files(world)
    real_check, checks = orphans.referenced_paths, []

    def lose_the_lock_in_the_delete_phase(*args, **kwargs):
        checks.append(True)
        if len(checks) == 2:  # the scan's check came first
            _end_lock_sessions(world)
            other_run.acquire()
        return real_check(*args, **kwargs)

    monkeypatch.setattr(orphans, "referenced_paths", lose_the_lock_in_the_delete_phase)

    result = orphaned_file_cleanup.execute_in_process(
        run_config={"ops": {"plan_orphan_sweep": {"config": {"dry_run": False}}}},
        resources={"camera_system": camera_resource(world)},
        instance=instance,
        raise_on_error=False,
    )

    assert not result.success and world.exists(orphan)
    assert "lost its lock on the database" in failure_messages(result)
