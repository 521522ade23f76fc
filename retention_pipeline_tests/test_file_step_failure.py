"""A file step that fails half-way (a database error at a chunk, a lost run lock): the failed run still
reports the files its chunks deleted, and a re-execution from failure reports the rest."""

import contextlib
import os

import dagster as dg
import pytest

from retention_pipeline import file_ops
from retention_pipeline.core.lock import LOST_MESSAGE, RunLockLost
from retention_pipeline.core.purge import file_checks, file_queue
from retention_pipeline.history import committed_counts, interrupted_steps, recent_cleanup_runs
from retention_pipeline.interruptions import INTERRUPTED_EVENT
from retention_pipeline.tags import EXCLUSIVE_TAGS
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.dagster_helpers import execute, plan_config, point_environment_at
from retention_pipeline_tests.factories import CameraWorld
from retention_pipeline_tests.test_interrupted_purge import assert_ended_as_interrupted, interrupter
from retention_pipeline_tests.test_run_lock import data_cleanup_in_process

# The camera system's real shape too: no path indexes, CASCADE / SET NULL children, uuid alerts.
pytestmark = both_shapes


def _seventh_chunk_fails(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Unlink chunks of 5 files; the 7th chunk of the run meets `error` before unlinking anything."""
    monkeypatch.setattr(file_checks, "CHECK_CHUNK", 5)
    real, calls = file_queue.raise_if_lost, [0]

    def failing(engine):
        calls[0] += 1
        if calls[0] == 7:
            raise error
        return real(engine)

    monkeypatch.setattr(file_queue, "raise_if_lost", failing)


def _failure_text(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    return " ".join(str(r.event_log_entry.dagster_event.event_specific_data) for r in records)


@pytest.mark.parametrize(
    "error, words",
    [
        (RuntimeError("server closed the connection unexpectedly"), "server closed the connection"),
        (RunLockLost(LOST_MESSAGE), "lost its lock on the database"),
    ],
    ids=["database_error", "lock_lost"],
)
def test_a_file_step_failing_in_one_share_reports_the_files_it_deleted(
    world: CameraWorld,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    words: str,
):
    point_environment_at(world, monkeypatch)
    thumbs = world.old_thumbnails(40)
    _seventh_chunk_fails(monkeypatch, error)
    job = dg.reconstructable(data_cleanup_in_process)
    config = plan_config(dry_run=False, reference_time=world.now.isoformat())

    failed = dg.execute_job(job, instance, run_config=config, tags=EXCLUSIVE_TAGS, raise_on_error=False)

    gone = sum(not os.path.exists(world.media / thumb) for thumb in thumbs)
    assert not failed.success and gone == 35  # every chunk but the failing one (one share: the default)
    assert words in _failure_text(instance, failed.run_id)
    tags = instance.get_run_by_id(failed.run_id).tags
    assert tags["failed_step"].startswith("delete_expired_files[")
    assert (tags["files_deleted"], tags["space_reclaimed"]) == ("35", "350 B")
    [row] = recent_cleanup_runs(instance, 1)
    assert (row["thumbnails_deleted"], row["space_reclaimed"]) == (35, 350)

    # The failing chunk's files stayed queued: a re-execution from failure deletes them and reports them,
    # and only them (the failed run reported the other 35).
    if isinstance(error, RunLockLost):
        return
    retried = dg.execute_job(
        job, instance, reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance)
    )
    assert retried.success and not any(os.path.exists(world.media / thumb) for thumb in thumbs)
    rows = {r["run_id"]: r for r in recent_cleanup_runs(instance, 2)}
    assert rows[retried.run_id]["thumbnails_deleted"] == 5
    assert instance.get_run_by_id(retried.run_id).tags["files_deleted"] == "5"


def test_a_chunk_failing_at_its_commit_after_its_unlinks_is_counted_with_the_failure(
    world: CameraWorld, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    point_environment_at(world, monkeypatch)
    thumbs = world.old_thumbnails(40)
    monkeypatch.setattr(file_checks, "CHECK_CHUNK", 5)
    real, calls = file_queue.write_transaction, [0]

    @contextlib.contextmanager
    def failing_commit(engine):
        calls[0] += 1
        seventh = calls[0] == 7  # now: the workers' later calls move the count on meanwhile
        with real(engine) as conn:
            yield conn
            if seventh:  # the 7th chunk's files are unlinked; its queue commit fails
                raise RuntimeError("server closed the connection unexpectedly")

    monkeypatch.setattr(file_queue, "write_transaction", failing_commit)
    job = dg.reconstructable(data_cleanup_in_process)
    config = plan_config(dry_run=False, reference_time=world.now.isoformat())

    failed = dg.execute_job(job, instance, run_config=config, tags=EXCLUSIVE_TAGS, raise_on_error=False)

    gone = sum(not os.path.exists(world.media / thumb) for thumb in thumbs)
    assert not failed.success and "server closed the connection" in _failure_text(instance, failed.run_id)
    # Every chunk was in flight when the 7th failed: all 40 are gone, and the failed run says so.
    assert gone == 40
    assert instance.get_run_by_id(failed.run_id).tags["files_deleted"] == "40"
    # The failed chunk's queue rows stayed: the re-execution finds its files missing, deletes nothing more.
    with dg.execute_job(
        job, instance, reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance)
    ) as retried:
        stats = retried.output_for_node("report_cleanup")
    assert retried.success and (stats.thumbnails_deleted, stats.files_missing) == (0, 5)


@pytest.mark.parametrize("terminated", [True, False], ids=["terminated_from_the_ui", "ctrl_c_on_the_cli"])
@pytest.mark.parametrize("where", ["in_the_drain", "after_the_drain"])
def test_an_interrupted_file_step_reports_the_files_it_deleted_and_runs_no_later_share(
    world: CameraWorld,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    terminated: bool,
    where: str,
):
    point_environment_at(world, monkeypatch)
    thumbs = world.old_thumbnails(40)
    monkeypatch.setattr(file_checks, "CHECK_CHUNK", 5)
    interrupt = interrupter(instance, terminated)
    real_check, calls = file_queue.raise_if_lost, [0]
    real_warnings = file_ops.offline_warnings

    def interrupted_at_the_third_chunk(engine):
        calls[0] += 1
        if calls[0] == 3:
            interrupt()
        return real_check(engine)

    def interrupted_at_its_warnings(counts, dry_run):  # the share's writes to the event log, after the drain
        interrupt()
        return real_warnings(counts, dry_run)

    if where == "in_the_drain":
        monkeypatch.setattr(file_queue, "raise_if_lost", interrupted_at_the_third_chunk)
    else:
        monkeypatch.setattr(file_ops, "offline_warnings", interrupted_at_its_warnings)
    # Two shares of 20 files, one after the other: the second must not start once the first is interrupted.
    config = plan_config(dry_run=False, reference_time=world.now.isoformat(), file_chunk_size=20)
    if terminated:
        job = dg.reconstructable(data_cleanup_in_process)
        run = dg.execute_job(job, instance, run_config=config, tags=EXCLUSIVE_TAGS, raise_on_error=False)
    else:  # as `retention-pipeline run` runs it
        run = execute(world, instance, run_config=config, tags=EXCLUSIVE_TAGS)

    first_share = "delete_expired_files[ids_0_20]"
    assert_ended_as_interrupted(instance, run.run_id, first_share, terminated)
    gone = sum(not os.path.exists(world.media / thumb) for thumb in thumbs)
    # In the drain: the chunks started before the interrupt (three at least) finished. The second share
    # never ran.
    assert 15 <= gone <= 20 if where == "in_the_drain" else gone == 20
    [(_, step, figures)] = interrupted_steps(instance, run.run_id)
    assert (step, figures["thumbnails_deleted"]) == (first_share, gone)
    assert committed_counts(instance, run.run_id)["thumbnails_deleted"] == gone
    tags = instance.get_run_by_id(run.run_id).tags
    assert tags["failed_step"] == first_share
    assert (tags["files_deleted"], tags["space_reclaimed"]) == (str(gone), f"{gone * 10} B")
    [row] = recent_cleanup_runs(instance, 1)
    assert (row["thumbnails_deleted"], row["space_reclaimed"]) == (gone, gone * 10)

    # What the interrupted run did not get to stayed queued: the next run deletes it, and only it.
    monkeypatch.setattr(file_queue, "raise_if_lost", real_check)
    monkeypatch.setattr(file_ops, "offline_warnings", real_warnings)
    with dg.execute_job(
        dg.reconstructable(data_cleanup_in_process), instance, run_config=config, tags=EXCLUSIVE_TAGS
    ) as after:
        stats = after.output_for_node("report_cleanup")
    assert not any(os.path.exists(world.media / thumb) for thumb in thumbs)
    assert (stats.thumbnails_deleted, stats.files_missing) == (40 - gone, 0)
    assert "failed_step" not in instance.get_run_by_id(after.run_id).tags


def test_a_dry_run_interrupted_after_its_file_preview_says_it_counted_not_deleted(
    world: CameraWorld, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    point_environment_at(world, monkeypatch)
    thumbs = world.old_thumbnails(10)
    interrupt, real_warnings = interrupter(instance, False), file_ops.offline_warnings

    def interrupted_at_its_warnings(counts, dry_run):
        interrupt()
        return real_warnings(counts, dry_run)

    monkeypatch.setattr(file_ops, "offline_warnings", interrupted_at_its_warnings)
    run = execute(
        world,
        instance,
        run_config=plan_config(dry_run=True, reference_time=world.now.isoformat()),
        tags=EXCLUSIVE_TAGS,
    )

    assert all(os.path.exists(world.media / thumb) for thumb in thumbs)
    events = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    messages = [m for record in events if (m := _engine_message(record)).startswith(INTERRUPTED_EVENT)]
    assert len(messages) == 1 and "had counted (dry run)" in messages[0] and "deleted {" not in messages[0]


def _engine_message(record: dg.EventLogRecord) -> str:
    event = record.event_log_entry.dagster_event
    return (event.message or "") if event is not None else ""
