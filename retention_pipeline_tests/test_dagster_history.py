"""dagster_history_cleanup: old finished runs go with their event logs and outputs; active runs stay."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from retention_pipeline import dagster_history
from retention_pipeline.dagster_history import dagster_history_cleanup
from retention_pipeline.definitions import defs
from retention_pipeline.jobs import data_cleanup


def history_run(instance, **config) -> dict:
    result = dagster_history_cleanup.execute_in_process(
        run_config={"ops": {"delete_old_dagster_runs": {"config": config}}},
        resources={"camera_system": defs.resources["camera_system"]},
        instance=instance,
    )
    return result.output_for_node("delete_old_dagster_runs")


@pytest.fixture
def history(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Two finished runs (one with stored outputs) and one still running, all 'old' once time moves on."""
    runs = {
        "success": instance.create_run_for_job(data_cleanup, status=dg.DagsterRunStatus.SUCCESS).run_id,
        "failure": instance.create_run_for_job(data_cleanup, status=dg.DagsterRunStatus.FAILURE).run_id,
        "running": instance.create_run_for_job(data_cleanup, status=dg.DagsterRunStatus.STARTED).run_id,
    }
    outputs = Path(instance.storage_directory()) / runs["success"] / "plan_cleanup"
    outputs.mkdir(parents=True)
    (outputs / "result").write_bytes(b"x" * 123)
    monkeypatch.setattr(dagster_history, "_now", lambda: datetime.now(UTC) + timedelta(days=100))
    return runs


def test_dry_run_counts_old_finished_runs_and_deletes_nothing(instance, history):
    stats = history_run(instance, retention_days=90)

    assert stats["dry_run"] is True and stats["runs_deleted"] == 2 and stats["outputs_bytes_freed"] == 123
    assert all(instance.get_run_by_id(run_id) for run_id in history.values())


def test_old_finished_runs_go_with_their_outputs_and_active_runs_stay(instance, history):
    stats = history_run(instance, dry_run=False, retention_days=90)

    assert stats["runs_deleted"] == 2
    assert instance.get_run_by_id(history["success"]) is None
    assert instance.get_run_by_id(history["failure"]) is None
    assert instance.get_run_by_id(history["running"]).status == dg.DagsterRunStatus.STARTED
    assert not (Path(instance.storage_directory()) / history["success"]).exists()
    assert not instance.get_records_for_run(history["success"]).records


def test_recent_runs_are_kept(instance, history):
    stats = history_run(instance, dry_run=False, retention_days=365)

    assert stats["runs_deleted"] == 0
    assert instance.get_run_by_id(history["success"]) is not None


def test_weekly_schedule_is_on_and_deletes_for_real():
    schedule = defs.resolve_schedule_def("weekly_dagster_history_cleanup")

    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.instance_for_test() as instance:
        [request] = schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests or []
    assert request.run_config["ops"]["delete_old_dagster_runs"]["config"] == {
        "dry_run": False,
        "retention_days": 90,
    }


@pytest.mark.parametrize("days", [0, 36501])
def test_retention_days_out_of_bounds_is_refused_at_launch_and_no_run_exists(instance, days: int):
    with pytest.raises(dg.DagsterInvalidConfigError, match="nothing was launched") as refused:
        history_run(instance, retention_days=days, dry_run=False)

    assert "delete_old_dagster_runs: retention_days must be" in str(refused.value)
    assert instance.get_runs_count() == 0
