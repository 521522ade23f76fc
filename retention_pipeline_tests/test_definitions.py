"""The code location loads, and the schedule sends a complete real-run config built from its tick."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pytest

from retention_pipeline.definitions import defs
from retention_pipeline.jobs import EXCLUSIVE_TAGS, data_cleanup
from retention_pipeline.schedules import build_daily_schedule
from retention_pipeline.settings import Settings


def test_definitions_load_with_the_job_schedule_and_resource():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("data_cleanup")
    schedule = defs.resolve_schedule_def("daily_data_cleanup")

    assert job.tags == EXCLUSIVE_TAGS
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_empty_launchpad_config_validates_as_a_dry_run():
    resolved = dg.validate_run_config(data_cleanup, {})

    assert resolved["ops"]["plan_cleanup"]["config"]["dry_run"] is True


def test_schedule_sends_a_complete_real_run_config_with_its_tick(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RETENTION_DAYS", "14")
    monkeypatch.setenv("CLEANUP_BATCH_SIZE", "500")
    monkeypatch.setenv("TRANSACTION_TARGET_MS", "80")
    settings = Settings(cleanup_time=Settings().cleanup_time, cleanup_timezone="Europe/Berlin")
    schedule = build_daily_schedule(settings)
    tick = datetime.fromisoformat("2026-03-29T03:00:00+02:00")  # the spring-forward day in Berlin

    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        [request] = schedule.evaluate_tick(context).run_requests or []

    config = request.run_config["ops"]["plan_cleanup"]["config"]
    assert config == {
        "dry_run": False,
        "retention_days": 14,
        "log_retention_days": 7,
        "delete_images": False,
        "batch_size": 500,
        "transaction_target_ms": 80.0,
        "retention_days_by_table": {},
        "emergency": False,
        "reference_time": "2026-03-29T01:00:00+00:00",
    }
    dg.validate_run_config(data_cleanup, request.run_config)
    assert schedule.execution_timezone == "Europe/Berlin"


def test_a_tick_that_cannot_read_the_settings_still_requests_a_real_run_at_its_tick(
    monkeypatch: pytest.MonkeyPatch,
):
    schedule = build_daily_schedule(Settings())
    monkeypatch.setenv("RETENTION_DAYS", "0")
    tick = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)

    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        [request] = schedule.evaluate_tick(context).run_requests or []

    # The rest is left to the run's environment: its plan_cleanup reads it again and fails on it.
    config = dg.validate_run_config(data_cleanup, request.run_config)["ops"]["plan_cleanup"]["config"]
    assert (config["dry_run"], config["reference_time"]) == (False, tick.isoformat())
    assert config["retention_days"] is None and config["emergency"] is False


def test_cleanup_time_sets_the_cron_schedule():
    schedule = build_daily_schedule(Settings.from_env({"CLEANUP_TIME": "23:45"}))

    assert schedule.cron_schedule == "45 23 * * *"


def test_bad_cleanup_time_stops_the_code_location_from_loading_with_a_clear_message():
    env = {**os.environ, "CLEANUP_TIME": "25:00"}

    done = subprocess.run(
        [sys.executable, "-c", "import retention_pipeline.definitions"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode != 0
    assert "CLEANUP_TIME must be a 24-hour time HH:MM such as 03:00, got '25:00'" in done.stderr


def test_reference_time_of_a_schedule_is_utc():
    tick = datetime(2026, 10, 25, 2, 30, tzinfo=UTC)
    schedule = build_daily_schedule(Settings())

    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        [request] = schedule.evaluate_tick(context).run_requests or []

    assert request.run_config["ops"]["plan_cleanup"]["config"]["reference_time"] == tick.isoformat()


def test_a_schedule_tick_frees_the_slot_held_by_a_run_whose_process_died():
    import subprocess

    from retention_pipeline.run_processes import record_process
    from retention_pipeline.tags import EXCLUSIVE_TAGS

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    schedule = build_daily_schedule(Settings())
    with dg.instance_for_test() as instance:
        stale = instance.create_run_for_job(
            data_cleanup, status=dg.DagsterRunStatus.STARTED, tags=EXCLUSIVE_TAGS
        )
        record_process(instance, stale.run_id, int(dead.stdout))
        alive = instance.create_run_for_job(
            data_cleanup, status=dg.DagsterRunStatus.STARTED, tags=EXCLUSIVE_TAGS
        )
        record_process(instance, alive.run_id)
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(UTC))
        schedule.evaluate_tick(context)

        assert instance.get_run_by_id(stale.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
