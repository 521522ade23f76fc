"""The daily schedule: a complete, real-run config whose cutoffs come from the tick's time."""

from datetime import UTC, datetime

import dagster as dg

from .config import CleanupConfig, OrphanSweepConfig
from .dagster_history import DagsterHistoryConfig
from .jobs import data_cleanup, orphaned_file_cleanup
from .run_processes import blocking_runs
from .settings import Settings, SettingsError


def scheduled_run_config(settings: Settings, tick: datetime, emergency: bool = False) -> dg.RunConfig:
    """Every setting spelled out: a run config replaces the job's defaults instead of merging them."""
    config = CleanupConfig(
        dry_run=False,
        retention_days=settings.retention_days,
        log_retention_days=settings.log_retention_days,
        delete_images=settings.delete_images,
        batch_size=settings.batch_size,
        transaction_target_ms=settings.transaction_target_ms,
        emergency=emergency,
        reference_time=tick.astimezone(UTC).isoformat(),
    )
    return dg.RunConfig(ops={"plan_cleanup": config})


def unread_settings_run_config(tick: datetime) -> dg.RunConfig:
    """A real run at the tick, every other setting left to the environment of the run: for a tick that
    could not read the settings, so that its run reports why."""
    config = CleanupConfig(dry_run=False, reference_time=tick.astimezone(UTC).isoformat())
    return dg.RunConfig(ops={"plan_cleanup": config})


def build_daily_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """daily_data_cleanup at CLEANUP_TIME in CLEANUP_TIMEZONE, on by default."""

    @dg.schedule(
        name="daily_data_cleanup",
        job=data_cleanup,
        cron_schedule=settings.cleanup_cron,
        execution_timezone=settings.cleanup_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Runs data_cleanup for real (dry_run: false) every day at CLEANUP_TIME.",
    )
    def daily_data_cleanup(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tick = context.scheduled_execution_time or datetime.now(UTC)
        # A run whose process died would hold the exclusive slot and queue this one forever.
        blocking_runs(context.instance)
        # Read again at each tick, though only the policy file can have changed since the load: the
        # environment (RETENTION_DAYS...) is this process's, fixed until the code location reloads.
        try:
            return dg.RunRequest(run_config=scheduled_run_config(Settings.from_env(), tick))
        except SettingsError as exc:
            # A failed tick shows only in Dagster's tick log. A run fails where operators look, the run
            # history and the camera system's job tracker: its plan_cleanup reads the settings again and
            # fails with this message, as a manual launch does.
            context.log.warning(f"{exc}; requesting the run anyway: its plan_cleanup reports this")
            return dg.RunRequest(run_config=unread_settings_run_config(tick))

    return daily_data_cleanup


def build_weekly_orphan_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """weekly_orphaned_file_cleanup, Sundays an hour after CLEANUP_TIME; off until an operator turns it on."""
    hour = (settings.cleanup_time.hour + 1) % 24
    return dg.ScheduleDefinition(
        name="weekly_orphaned_file_cleanup",
        job=orphaned_file_cleanup,
        cron_schedule=f"{settings.cleanup_time.minute} {hour} * * 0",
        execution_timezone=settings.cleanup_timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        # Complete config: the safety stops still apply, so a real sweep is the useful default here.
        run_config=dg.RunConfig(ops={"plan_orphan_sweep": OrphanSweepConfig(dry_run=False)}),
        description="Deletes orphaned media files weekly (off by default; safety stops apply).",
    )


def build_retention_health_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """retention_health daily, an hour after CLEANUP_TIME, once the daily cleanup has had its time."""
    hour = (settings.cleanup_time.hour + 1) % 24
    return dg.ScheduleDefinition(
        name="daily_retention_health",
        job_name="retention_health",
        cron_schedule=f"{settings.cleanup_time.minute} {hour} * * *",
        execution_timezone=settings.cleanup_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Runs the retention_enforced and orphan checks after the daily cleanup.",
    )


def build_weekly_history_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """weekly_dagster_history_cleanup, Saturdays at CLEANUP_TIME, deleting for real; on by default."""
    return dg.ScheduleDefinition(
        name="weekly_dagster_history_cleanup",
        job_name="dagster_history_cleanup",
        cron_schedule=f"{settings.cleanup_time.minute} {settings.cleanup_time.hour} * * 6",
        execution_timezone=settings.cleanup_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        run_config=dg.RunConfig(
            ops={
                "delete_old_dagster_runs": DagsterHistoryConfig(
                    dry_run=False, retention_days=settings.dagster_run_retention_days
                )
            }
        ),
        description="Deletes Dagster runs older than DAGSTER_RUN_RETENTION_DAYS every week.",
    )
