"""Reading data_cleanup runs and their CleanupStats back from the Dagster instance."""

import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._utils.schedules import cron_string_iterator

from .core.labels import unlabelled
from .core.stats import CleanupStats
from .settings import Settings
from .tags import EXCLUSIVE_TAGS, HOST_TAG, PID_TAG

JOB_NAME = "data_cleanup"
DAILY_SCHEDULE = "daily_data_cleanup"
REPORT_STEP = "report_cleanup"
PLAN_STEP = "plan_cleanup"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def local_instance_home(announce: Any) -> Path:
    """DAGSTER_HOME, or a local instance directory under the working directory when it is unset."""
    if home := os.environ.get("DAGSTER_HOME"):
        Path(home).mkdir(parents=True, exist_ok=True)
        return Path(home)
    home_path = Path.cwd() / ".dagster_home"
    home_path.mkdir(exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home_path)
    announce(f"DAGSTER_HOME is not set; using the local Dagster instance in {home_path}")
    return home_path


def this_process_tags() -> dict[str, str]:
    """Tags that let a later command tell whether the process running a run is still alive."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def _process_alive(run: dg.DagsterRun) -> bool | None:
    """True/False for a run started by this CLI on this host, None when it cannot tell."""
    pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
    if pid is None or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def blocking_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Retention runs still in progress; runs whose process died are marked failed instead.

    Every retention run tags itself with its pid and host when it starts (see `tag_this_process`). A
    run whose process is gone (killed, host crashed and rebooted) would otherwise stay STARTED forever
    (the default run launcher cannot check its worker's health) and hold the one concurrency slot of
    the exclusive tag: it must not become a stale lock.
    """
    records = instance.get_run_records(dg.RunsFilter(tags=EXCLUSIVE_TAGS, statuses=ACTIVE_STATUSES))
    blocking = []
    for record in records:
        run = record.dagster_run
        if _process_alive(run) is False:
            instance.report_run_failed(run, "The process running this run is gone (killed).")
        else:
            blocking.append(run)
    return blocking


def tag_this_process(instance: dg.DagsterInstance, run_id: str) -> None:
    """Record which process runs this run, so a later check can tell whether it died."""
    instance.add_run_tags(run_id, this_process_tags())


def step_metadata(instance: dg.DagsterInstance, run_id: str, step: str) -> dict[str, Any]:
    """One step's output metadata, as the run page shows it ({} if the step has not reported)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.step_key == step:
            # A dry run's counts are labelled as what would be deleted; callers want the stats' names.
            return unlabelled({k: v.value for k, v in event.step_output_data.metadata.items()})
    return {}


def recent_cleanup_runs(instance: dg.DagsterInstance, limit: int) -> list[dict[str, Any]]:
    """The latest data_cleanup runs, newest first, with every CleanupStats field (None if unknown)."""
    rows = []
    for record in instance.get_run_records(dg.RunsFilter(job_name=JOB_NAME), limit=limit):
        run = record.dagster_run
        plan = step_metadata(instance, run.run_id, PLAN_STEP)
        stats = step_metadata(instance, run.run_id, REPORT_STEP)
        run_config: dict[str, Any] = dict(run.run_config)
        ops: dict[str, Any] = run_config.get("ops") or {}
        config: dict[str, Any] = (ops.get(PLAN_STEP) or {}).get("config", {})
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "status": run.status.value,
            "start": _iso(record.start_time),
            "end": _iso(record.end_time),
        }
        for name in CleanupStats.field_names():
            row[name] = stats.get(name, plan.get(name))
        if row["dry_run"] is None:
            row["dry_run"] = config.get("dry_run", True)
        rows.append(row)
    return rows


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def last_sweep_report(instance: dg.DagsterInstance) -> dict[str, Any] | None:
    """The report of the latest successful real orphaned_file_cleanup run, if any."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name="orphaned_file_cleanup", statuses=[dg.DagsterRunStatus.SUCCESS]), limit=20
    )
    for record in records:
        report = step_metadata(instance, record.dagster_run.run_id, "report_orphan_sweep")
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
    running = instance.get_run_records(dg.RunsFilter(job_name=JOB_NAME, statuses=ACTIVE_STATUSES), limit=1)
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
