"""dagster_history_cleanup: Dagster keeps every run's event log forever; this deletes old finished runs."""

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from .core.policy import MAX_DAYS
from .jobs import refusing_bad_values
from .resources import CameraSystemResource
from .setting_values import parse_days
from .settings import SettingsError

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
PAGE = 100


def _now() -> datetime:
    return datetime.now(UTC)


class DagsterHistoryConfig(dg.Config):
    """Launchpad config of dagster_history_cleanup."""

    dry_run: bool = Field(default=True, description="Count the runs that would go, delete nothing.")
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DAYS,
        description="Keep runs this many days (default DAGSTER_RUN_RETENTION_DAYS, 90).",
    )


@dg.op(description="Delete finished runs older than the retention, with their event logs and stored outputs.")
def delete_old_dagster_runs(
    context: dg.OpExecutionContext, config: DagsterHistoryConfig, camera_system: CameraSystemResource
) -> dict[str, Any]:
    try:
        days = (
            parse_days("retention_days", config.retention_days)
            if config.retention_days is not None
            else camera_system.settings().dagster_run_retention_days
        )
    except (ValueError, SettingsError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    cutoff = _now() - timedelta(days=days)
    instance = context.instance
    storage = Path(instance.storage_directory())
    # Queued and in-progress runs never match: only finished statuses are selected.
    runs_filter = dg.RunsFilter(statuses=FINISHED, created_before=cutoff)
    deleted = outputs_bytes = 0
    cursor = None
    while records := instance.get_run_records(runs_filter, limit=PAGE, cursor=cursor):
        for record in records:
            run_id = record.dagster_run.run_id
            outputs = storage / run_id
            size = sum(f.stat().st_size for f in outputs.rglob("*") if f.is_file()) if outputs.is_dir() else 0
            if not config.dry_run:
                instance.delete_run(run_id)  # the run and its event log
                shutil.rmtree(outputs, ignore_errors=True)  # pickled op outputs of the fs IO manager
            deleted += 1
            outputs_bytes += size
        cursor = records[-1].dagster_run.run_id if config.dry_run else None
        context.log.info(f"{'would delete' if config.dry_run else 'deleted'} {deleted} runs so far")
    stats = {
        "dry_run": config.dry_run,
        "retention_days": days,
        "cutoff": cutoff.isoformat(),
        "runs_deleted": deleted,
        "outputs_bytes_freed": outputs_bytes,
    }
    context.add_output_metadata(stats)
    return stats


@dg.graph(
    description="Delete Dagster's own run history (runs, event logs, stored outputs) older than"
    " DAGSTER_RUN_RETENTION_DAYS. A manual launch with the default config is a dry run."
)
def dagster_history_cleanup_graph() -> None:
    delete_old_dagster_runs()


# retention_days: 0 is refused when the run is launched, before it exists, like the other jobs' bounds.
dagster_history_cleanup = refusing_bad_values(
    dagster_history_cleanup_graph,
    {"delete_old_dagster_runs": DagsterHistoryConfig},
    name="dagster_history_cleanup",
    executor_def=dg.in_process_executor,
)
