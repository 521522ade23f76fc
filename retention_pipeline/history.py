"""Reading data_cleanup runs and their CleanupStats back from the Dagster instance."""

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._utils.schedules import cron_string_iterator

from .core.labels import unlabelled
from .core.stats import CleanupStats
from .run_processes import active_runs
from .settings import Settings, SettingsError
from .tags import CLEANUP_HEADLINE, FAILED_STEP_TAG, FILE_FIGURES, INTERRUPTED_STEP

JOB_NAME = "data_cleanup"
SWEEP_JOB_NAME = "orphaned_file_cleanup"
DAILY_SCHEDULE = "daily_data_cleanup"
REPORT_STEP = "report_cleanup"
PLAN_STEP = "plan_cleanup"
SWEEP_PLAN_STEP = "plan_orphan_sweep"
# An emergency run's last step, whose `run_total` counts every pass (the normal one and the emergency ones).
PRESSURE_STEP = "relieve_disk_pressure"
SWEEP_REPORT_STEP = "report_orphan_sweep"
# What `cleanup_status` shows for a run Dagster still has in progress whose process is gone.
ABANDONED = "ABANDONED"


def local_instance_home(announce: Any) -> Path:
    """DAGSTER_HOME, or a local instance directory under the working directory when it is unset; raises
    SettingsError when DAGSTER_HOME cannot be an instance directory."""
    if home := os.environ.get("DAGSTER_HOME"):
        path = Path(home)
        # Checked before anything is created: Dagster refuses a relative path only once it has made it.
        if not path.is_absolute():
            raise SettingsError(f"DAGSTER_HOME must be an absolute path, got {home!r}")
        if path.exists() and not path.is_dir():
            raise SettingsError(f"DAGSTER_HOME must be a directory, got {home!r}, which is not one")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(f"DAGSTER_HOME {home!r} cannot be created: {exc.strerror}") from None
        return path
    home_path = Path.cwd() / ".dagster_home"
    home_path.mkdir(exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home_path)
    announce(f"DAGSTER_HOME is not set; using the local Dagster instance in {home_path}")
    return home_path


def logged_at(instance: dg.DagsterInstance, run_id: str, first: bool = True) -> datetime | None:
    """When the run's first (or last) event was logged, by the event's own clock; None before any.

    Not RunRecord.create_timestamp: PostgreSQL stores it as the database time zone's naive local time and
    Dagster reads it back as UTC, hours off when that zone is not UTC. The first event is the run's
    launch (created, enqueued or started), the last one of a finished run its end.
    """
    records = instance.get_records_for_run(run_id, limit=1, ascending=first).records
    return datetime.fromtimestamp(records[0].timestamp, UTC) if records else None


def step_metadata(instance: dg.DagsterInstance, run_id: str, step: str) -> dict[str, Any]:
    """One step's output metadata, as the run page shows it ({} if the step has not reported)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.step_key == step:
            # A dry run's counts are labelled as what would be deleted; callers want the stats' names.
            return unlabelled({k: v.value for k, v in event.step_output_data.metadata.items()})
    return {}


def failure_metadata(instance: dg.DagsterInstance, run_id: str, step: str) -> dict[str, Any]:
    """The metadata of the Failure a step raised ({} if it did not fail so)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.step_key == step:
            failure = event.step_failure_data.user_failure_data
            return {k: v.value for k, v in failure.metadata.items()} if failure is not None else {}
    return {}


def run_stats(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """The CleanupStats fields a data_cleanup run reported: report_cleanup's, or in an emergency run the
    total of every pass, which relieve_disk_pressure reports, also when it failed ({} before
    report_cleanup has run)."""
    stats = step_metadata(instance, run_id, REPORT_STEP)
    total = step_metadata(instance, run_id, PRESSURE_STEP).get("run_total") or failure_metadata(
        instance, run_id, PRESSURE_STEP
    ).get("run_total")
    if isinstance(total, dict):
        stats = {**stats, **total}
    return {name: stats[name] for name in CleanupStats.field_names() if name in stats}


def dry_run_of(run_config: dict[str, Any]) -> bool:
    """Whether a run of either job is a dry run: its plan op holds `dry_run`, which defaults to true. Read
    by name: a run config may list other ops (with empty config) before it."""
    ops: dict[str, dict[str, Any]] = run_config.get("ops") or {}
    plan_op = ops.get(PLAN_STEP) or ops.get(SWEEP_PLAN_STEP) or {}
    return bool((plan_op.get("config") or {}).get("dry_run", True))


# Which figures each step's output metadata (or its Failure's, for what it committed before failing, or
# the figures it recorded when interrupted) counts: figure -> metadata key. A mapped step
# (delete_expired_files[…]) counts once per share.
_COUNTED_BY_STEP = {
    "purge_detections": {"detections_deleted": "rows_deleted"},
    "purge_events": {"events_deleted": "rows_deleted"},
    "purge_gpu_stats": {"gpu_stats_deleted": "rows_deleted"},
    "purge_logs": {"logs_deleted": "rows_deleted"},
    "delete_expired_files": {name: name for name in FILE_FIGURES},
    "scan_orphaned_files": {"orphans_found": "orphans_found"},
}


def interrupted_steps(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    """The steps of the run that recorded what they had deleted when interrupted, in the log's order:
    (storage id, step key, figures)."""
    found = []
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        if event is None or event.step_key is None or data is None or INTERRUPTED_STEP not in data.metadata:
            continue
        figures = {k: v.value for k, v in data.metadata.items() if k != INTERRUPTED_STEP}
        found.append((record.storage_id, event.step_key, figures))
    return found


def committed_counts(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """The figures the run's steps have reported so far, the failed ones' from their `Failure` metadata,
    the interrupted ones' from what they recorded: what a failed or interrupted run committed (a dry run:
    what it counted)."""
    reported: list[tuple[str, dict[str, Any]]] = []
    for event_type in (dg.DagsterEventType.STEP_OUTPUT, dg.DagsterEventType.STEP_FAILURE):
        for record in instance.get_records_for_run(run_id, of_type=event_type).records:
            event = record.event_log_entry.dagster_event
            if event is None or event.step_key is None:
                continue
            if event_type == dg.DagsterEventType.STEP_OUTPUT:
                metadata = event.step_output_data.metadata
            else:
                failure = event.step_failure_data.user_failure_data
                metadata = failure.metadata if failure is not None else {}
            reported.append((event.step_key, {k: v.value for k, v in metadata.items()}))
    reported += [(step, figures) for _, step, figures in interrupted_steps(instance, run_id)]
    counts: dict[str, int] = {}
    for step, figures in reported:
        for figure, key in _COUNTED_BY_STEP.get(step.split("[")[0], {}).items():
            value = figures.get(key)
            if isinstance(value, int):
                counts[figure] = counts.get(figure, 0) + value
    return counts


def recent_cleanup_runs(instance: dg.DagsterInstance, limit: int) -> list[dict[str, Any]]:
    """The latest data_cleanup runs, newest first, with every CleanupStats field (None if unknown)."""
    rows = []
    for record in instance.get_run_records(dg.RunsFilter(job_name=JOB_NAME), limit=limit):
        run = record.dagster_run
        plan = step_metadata(instance, run.run_id, PLAN_STEP)
        stats = run_stats(instance, run.run_id)
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "status": run.status.value,
            "start": _iso(record.start_time),
            "end": _iso(record.end_time),
        }
        # A run that did not report (failed) still says what its steps committed.
        committed = committed_counts(instance, run.run_id) if not stats else {}
        for name in CleanupStats.field_names():
            row[name] = stats.get(name, committed.get(name, plan.get(name)))
        if row["dry_run"] is None:
            row["dry_run"] = dry_run_of(dict(run.run_config))
        # The figures the Runs page shows as chips, read from the same tags. A successful re-execution may
        # still carry its parent's failed_step (where the tag could not be dropped): not this run's.
        shown = (
            *CLEANUP_HEADLINE,
            *(() if run.status == dg.DagsterRunStatus.SUCCESS else (FAILED_STEP_TAG,)),
        )
        row["headline"] = {k: run.tags[k] for k in shown if k in run.tags}
        rows.append(row)
    return rows


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def last_sweep_report(instance: dg.DagsterInstance) -> dict[str, Any] | None:
    """The report of the latest successful real orphaned_file_cleanup run, if any."""
    # Dry runs are selected out by their tag, so any number of them cannot hide the last real sweep.
    real = dg.RunsFilter(
        job_name=SWEEP_JOB_NAME, statuses=[dg.DagsterRunStatus.SUCCESS], tags={"dry_run": "false"}
    )
    for record in instance.get_run_records(real, limit=20):
        report = step_metadata(instance, record.dagster_run.run_id, SWEEP_REPORT_STEP)
        if report and report.get("dry_run") is False:
            return report
    return None


def next_cleanup(instance: dg.DagsterInstance, settings: Settings, now: datetime) -> str | None:
    """When the daily schedule fires next (ISO 8601, in its time zone), or None when it is stopped."""
    for state in instance.all_instigator_state():
        is_daily = state.name == DAILY_SCHEDULE and state.instigator_type.value == "SCHEDULE"
        if is_daily and state.status.value == "STOPPED":
            return None
    # The scheduler's own cron iterator (a private module): same DST handling as the daemon's ticks.
    ticks = cron_string_iterator(now.timestamp(), settings.cleanup_cron, settings.cleanup_timezone)
    return next(ticks).isoformat()


def cleanup_status(instance: dg.DagsterInstance, settings: Settings, limit: int) -> dict[str, Any]:
    """What the camera system's cleanup-status endpoint shows: the policy, the schedule, the runs."""
    runs = recent_cleanup_runs(instance, limit)
    # Judged as `blocking_runs` judges: a run whose process is gone is not running, though Dagster says
    # STARTED until the next run or tick fails it.
    running, dead = active_runs(instance, job_name=JOB_NAME)
    abandoned = {run.run_id for run in dead}
    runs = [{**row, "status": ABANDONED} if row["run_id"] in abandoned else row for row in runs]
    last = runs[0] if runs else None
    return {
        "running": bool(running),
        "retention_days": settings.retention_days,
        "log_retention_days": settings.log_retention_days,
        "cleanup_time": f"{settings.cleanup_time:%H:%M}",
        "timezone": settings.cleanup_timezone,
        "delete_images": settings.delete_images,
        "next_cleanup": next_cleanup(instance, settings, datetime.now(UTC)),
        "last_run": None
        if last is None
        else {
            "run_id": last["run_id"],
            "status": last["status"],
            "started": last["start"],
            "finished": last["end"],
            "stats": {name: last[name] for name in CleanupStats.field_names()},
        },
        "runs": runs,
    }
