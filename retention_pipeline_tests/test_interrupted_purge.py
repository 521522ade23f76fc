"""A row purge interrupted (Terminate in the UI; SIGTERM or SIGINT to the run's process) after some of its
batches committed: the run ends as an interrupted run always has, no later step runs, and the run's tags
and `status` report the rows those batches deleted."""

import os
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, insert, select

from retention_pipeline import pressure_ops
from retention_pipeline.core import cleanup
from retention_pipeline.core.purge import loop, sqlite
from retention_pipeline.core.schema import detections, gpu_stats, logs
from retention_pipeline.history import committed_counts, interrupted_steps, recent_cleanup_runs
from retention_pipeline.tags import EXCLUSIVE_TAGS
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.dagster_helpers import plan_config, point_environment_at
from retention_pipeline_tests.factories import CameraWorld
from retention_pipeline_tests.test_assets_and_checks import live_world
from retention_pipeline_tests.test_disk_pressure import RowsFillTheDisk, emergency_run
from retention_pipeline_tests.test_policy_table_assets import policy_definitions, policy_table
from retention_pipeline_tests.test_run_lock import data_cleanup_in_process

# The camera system's real shape too: no path indexes, CASCADE / SET NULL children, uuid alerts.
pytestmark = both_shapes

__all__ = ["live_world"]  # a fixture


def interrupter(instance: dg.DagsterInstance, terminated: bool) -> Callable[[], None]:
    """What stops the run: the UI's Terminate marks it CANCELING, then signals its process; a SIGTERM or
    SIGINT sent to the process itself (Dagster maps SIGTERM to SIGINT) comes with no such mark."""

    def interrupt() -> None:
        if terminated:
            instance.report_run_canceling(instance.get_runs(limit=1)[0])
        os.kill(os.getpid(), signal.SIGINT)

    return interrupt


def assert_ended_as_interrupted(
    instance: dg.DagsterInstance, run_id: str, step: str, terminated: bool
) -> None:
    """The run ended as Dagster ends an interrupted run, with the step's failure Dagster's own (the
    interrupt's, no `Failure` of ours: no retry of the run, no failure hook)."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    if terminated:
        assert run.status == dg.DagsterRunStatus.CANCELED
    else:
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert run.tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"
    failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    [failure] = [r.event_log_entry.dagster_event for r in failures]
    assert failure is not None and failure.step_key == step
    assert failure.step_failure_data.user_failure_data is None
    assert failure.step_failure_data.error.cls_name == "DagsterExecutionInterruptedError"


@pytest.mark.parametrize("terminated", [True, False], ids=["terminated", "signalled"])
@pytest.mark.parametrize("where", ["after_the_third_batch", "at_the_final_flush"])
def test_an_interrupted_row_purge_reports_the_batches_it_committed_and_stops_the_run(
    world: CameraWorld,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    terminated: bool,
    where: str,
):
    point_environment_at(world, monkeypatch)
    for _ in range(40):
        world.detection(world.old())
    for _ in range(3):  # purged by the steps after purge_detections, which must not run
        world.gpu(world.old())
        world.log(world.old())
    interrupt = interrupter(instance, terminated)
    if where == "after_the_third_batch":
        real_after_commit, commits = sqlite.WriterTurns.after_commit, [0]

        def after_commit(turns: sqlite.WriterTurns) -> None:
            commits[0] += 1
            if commits[0] == 3:
                interrupt()
            real_after_commit(turns)

        monkeypatch.setattr(sqlite.WriterTurns, "after_commit", after_commit)
    else:  # every batch committed, the loop over: the flush to disk and the "done" line still to come
        real_flush, flushes = loop.flush_commits, [0]

        def flush(engine):
            flushes[0] += 1
            if flushes[0] == 1:
                interrupt()
            return real_flush(engine)

        monkeypatch.setattr(loop, "flush_commits", flush)
    config = plan_config(
        dry_run=False, reference_time=world.now.isoformat(), batch_size=5, transaction_target_ms=0
    )

    run = dg.execute_job(
        dg.reconstructable(data_cleanup_in_process),
        instance,
        run_config=config,
        tags=EXCLUSIVE_TAGS,
        raise_on_error=False,
    )

    assert_ended_as_interrupted(instance, run.run_id, "purge_detections", terminated)
    assert (world.count(gpu_stats), world.count(logs)) == (3, 3)
    deleted = 40 - world.count(detections)
    assert deleted == (15 if where == "after_the_third_batch" else 40)
    [(_, step, figures)] = interrupted_steps(instance, run.run_id)
    assert (step, figures["rows_deleted"]) == ("purge_detections", deleted)
    assert committed_counts(instance, run.run_id)["detections_deleted"] == deleted
    tags = instance.get_run_by_id(run.run_id).tags
    assert (tags["failed_step"], tags["detections_deleted"]) == ("purge_detections", str(deleted))
    [row] = recent_cleanup_runs(instance, 1)
    assert row["detections_deleted"] == deleted


POLICY = "tables:\n" + "".join(
    f"  - table: {name}\n    time_column: created_at\n    retention_days: 30\n"
    for name in ("audit_a", "audit_b")
)


def test_an_interrupted_policy_table_purge_records_the_tables_it_finished_with_the_interrupted_one(
    live_world: CameraWorld, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    tables = {name: policy_table(live_world.engine, name) for name in ("audit_a", "audit_b")}
    expired = live_world.now - timedelta(days=40)
    with live_world.engine.begin() as conn:
        for table in tables.values():
            conn.execute(insert(table), [{"id": i, "created_at": expired} for i in range(1, 21)])
    definitions = policy_definitions(tmp_path, monkeypatch, POLICY)
    real_clean_table, real_after_commit = cleanup.clean_table, sqlite.WriterTurns.after_commit
    purging, commits, interrupt = [""], [0], interrupter(instance, terminated=True)

    def clean_table(engine, plan, name, *args):
        purging[0] = name
        return real_clean_table(engine, plan, name, *args)

    def after_commit(turns: sqlite.WriterTurns) -> None:
        commits[0] += purging[0] == "audit_b"
        if commits[0] == 2:  # audit_a done, two batches of audit_b committed
            interrupt()
        real_after_commit(turns)

    monkeypatch.setattr(cleanup, "clean_table", clean_table)
    monkeypatch.setattr(sqlite.WriterTurns, "after_commit", after_commit)

    result = definitions.resolve_job_def("data_cleanup").execute_in_process(
        run_config=plan_config(dry_run=False, batch_size=5, transaction_target_ms=0),
        instance=instance,
        tags=EXCLUSIVE_TAGS,
        raise_on_error=False,
    )

    assert_ended_as_interrupted(instance, result.run_id, "purge_declared_tables", terminated=True)
    with live_world.engine.connect() as conn:
        gone = {
            name: 20 - conn.execute(select(func.count()).select_from(t)).scalar_one()
            for name, t in tables.items()
        }
    assert gone == {"audit_a": 20, "audit_b": 10}
    [(_, step, figures)] = interrupted_steps(instance, result.run_id)
    assert (step, figures) == ("purge_declared_tables", gone)


def test_an_interrupted_emergency_pass_reaches_dagster_as_the_interrupt_itself(
    full: CameraWorld, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    url = full.engine.url.render_as_string(hide_password=False)
    real_relieve, real_after_commit = pressure_ops.relieve_by_cleanup, sqlite.WriterTurns.after_commit
    relieving, interrupt = [False], interrupter(instance, terminated=True)

    def relieve_by_cleanup(*args, **kwargs):
        relieving[0] = True
        return real_relieve(*args, **kwargs)

    def after_commit(turns: sqlite.WriterTurns) -> None:
        if relieving[0]:  # the first batch of the first emergency pass
            interrupt()
        real_after_commit(turns)

    monkeypatch.setattr(pressure_ops, "relieve_by_cleanup", relieve_by_cleanup)
    monkeypatch.setattr(sqlite.WriterTurns, "after_commit", after_commit)

    before = full.count(detections)

    result = emergency_run(full, instance, RowsFillTheDisk(database_url=url, capacity=33))

    # The multiprocess executor tells an interrupted step by the class of its error: Dagster's own, not
    # purge.Interrupted, or the run would end failed "after it was requested to be terminated".
    assert_ended_as_interrupted(instance, result.run_id, "relieve_disk_pressure", terminated=True)
    # The run's tags count every pass, the interrupted one's committed batch too.
    gone = before - full.count(detections)
    assert relieving[0] and gone > 0
    assert instance.get_run_by_id(result.run_id).tags["detections_deleted"] == str(gone)
