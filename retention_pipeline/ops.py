"""Thin ops: read config and resources, call one core function, log, attach metadata."""

import functools
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg

from .assets import observe_after_cleanup
from .config import CleanupConfig
from .core import cleanup
from .core.db import DatabaseMissing
from .core.labels import labelled, readable
from .core.lock import RunLockLost
from .core.plan import CleanupPlan, make_plan
from .core.purge import BatchTooSlow
from .core.reference_time import parse_reference_time
from .core.stats import CleanupStats, FileCounts, RowCounts
from .failed_runs import error_reason
from .history import logged_at
from .interruptions import counted_if_interrupted
from .job_tracker import Stage, start_stage
from .resources import CameraSystemResource
from .run_lock_ops import claimed_engine, lock_lost
from .settings import SettingsError
from .tags import INVALID_CONFIG, cleanup_headline

SCHEDULED_TIME_TAG = ".dagster/scheduled_execution_time"


def _reference_time(context: dg.OpExecutionContext, config: CleanupConfig) -> datetime:
    """The config's reference time, else the schedule tick's, else when the run was launched."""
    if config.reference_time:
        return parse_reference_time(config.reference_time)
    if tick := context.run_tags.get(SCHEDULED_TIME_TAG):
        return parse_reference_time(tick)
    # The run's first event, not its create_timestamp (hours off on a PostgreSQL instance outside UTC):
    # fixed once the run is launched, so its retried steps measure from the same instant.
    return logged_at(context.instance, context.run_id) or datetime.now(UTC)


def op_stage(context: dg.OpExecutionContext, camera_system: CameraSystemResource) -> Stage:
    """This op's stage in the camera system's job tracker (a no-op without JOB_STATUS_REDIS_URL)."""
    return start_stage(context, camera_system.job_tracker())


@dg.op(description="Validate the policy and fix the cutoffs once for the whole run.")
def plan_cleanup(
    context: dg.OpExecutionContext, config: CleanupConfig, camera_system: CameraSystemResource
) -> CleanupPlan:
    try:
        stage = op_stage(context, camera_system)
        # The config's fields are make_plan's overrides by name: a new field needs no line here.
        plan = make_plan(
            camera_system.settings(),
            reference_time=_reference_time(context, config),
            **config.model_dump(exclude={"reference_time"}),
        )
        cleanup.prepare_database(
            claimed_engine(context, camera_system), plan.policy, plan.dry_run, plan.delete_images
        )
    except SettingsError as exc:  # a policy rule that can never apply: the CLI exits EXIT_BAD_CONFIG on it
        raise dg.Failure(description=str(exc), metadata={INVALID_CONFIG: True}, allow_retries=False) from None
    except (cleanup.SchemaError, DatabaseMissing) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    context.log.info(plan.describe())
    stage.done()
    cutoffs = plan.applied_cutoffs
    context.add_output_metadata(
        {
            "dry_run": plan.dry_run,
            # The cutoffs the rules apply, as the report names them (a run that fails before its
            # report shows these).
            "cutoff": cutoffs["events"].isoformat(),
            "log_cutoff": cutoffs["logs"].isoformat(),
            "cutoffs_by_table": {name: at.isoformat() for name, at in cutoffs.items()},
            "tables": ", ".join(plan.registry.names),
        }
    )
    return plan


def _rows_figures(counts: RowCounts) -> dict[str, float]:
    return {
        "rows_deleted": counts.deleted,
        "batches": counts.batches,
        "retries": counts.retries,
        "longest_transaction_ms": round(counts.longest_transaction_ms, 1),
    }


def _failing_when_too_slow(
    purge: Callable[[RowCounts], RowCounts], committed: RowCounts, earlier: list[RowCounts] | None = None
) -> RowCounts:
    """Run a purge whose batches are time-capped, filling `committed` batch by batch (what its op records
    if interrupted); a database too slow for the cap fails the step with the advice and what was already
    committed, and no retry (the next one would be as slow). A lock lost meanwhile fails it with no retry
    either. A failure after some batches committed reports them: their rows are gone, and the run's tags
    and `status` count them. `earlier`: what the step's purges before this one deleted, reported with it."""
    try:
        return purge(committed)
    except Exception as exc:
        # The purge filled `committed` up to the failure (BatchTooSlow carries the same counts).
        step = RowCounts.merge([*(earlier or []), committed])
        if isinstance(exc, BatchTooSlow):
            raise dg.Failure(
                description=str(exc), metadata=_rows_figures(step), allow_retries=False
            ) from None
        if isinstance(exc, RunLockLost):
            raise lock_lost(exc, _rows_figures(step) if step.deleted else None) from None
        if not step.deleted:
            raise
        raise dg.Failure(description=error_reason(exc), metadata=_rows_figures(step)) from exc


def _purged(
    context: dg.OpExecutionContext,
    plan: CleanupPlan,
    camera_system: CameraSystemResource,
    table: str,
    beside_the_chain: bool = False,
) -> RowCounts:
    """One row purge op's work: purge `table`, report what it deleted; interrupted, record what it had
    committed (a dry run's count fills nothing: it records what it counted, once it has)."""
    engine = claimed_engine(context, camera_system, beside_the_chain=beside_the_chain)
    stage = op_stage(context, camera_system)
    committed = RowCounts()
    with counted_if_interrupted(context, _rows_figures, None if plan.dry_run else committed) as known:
        counts = known.counts = _failing_when_too_slow(
            lambda counts: cleanup.clean_table(engine, plan, table, context.log.info, stage.share, counts),
            committed,
        )
        context.add_output_metadata(_rows_figures(counts))
    return counts


@dg.op(description="Delete expired detections in batches, queueing their files in the same commit.")
def purge_detections(
    context: dg.OpExecutionContext, plan: CleanupPlan, camera_system: CameraSystemResource
) -> RowCounts:
    return _purged(context, plan, camera_system, "detections")


@dg.op(description="Delete expired events, their alerts and links in batches, queueing clips.")
def purge_events(
    context: dg.OpExecutionContext,
    plan: CleanupPlan,
    detections: RowCounts,
    camera_system: CameraSystemResource,
) -> RowCounts:
    # Runs after purge_detections: deleting events first would cut the links that make a young
    # detection of an expired event expire with it.
    return _purged(context, plan, camera_system, "events")


@dg.op(description="Delete GPU statistics older than the data cutoff in batches.")
def purge_gpu_stats(
    context: dg.OpExecutionContext, plan: CleanupPlan, camera_system: CameraSystemResource
) -> RowCounts:
    return _purged(context, plan, camera_system, "gpu_stats", beside_the_chain=True)


@dg.op(description="Delete log lines older than the log cutoff in batches.")
def purge_logs(
    context: dg.OpExecutionContext, plan: CleanupPlan, camera_system: CameraSystemResource
) -> RowCounts:
    return _purged(context, plan, camera_system, "logs", beside_the_chain=True)


@dg.op(description="Delete the expired rows of the tables RETENTION_POLICY_FILE adds, queueing their files.")
def purge_declared_tables(
    context: dg.OpExecutionContext,
    plan: CleanupPlan,
    events: RowCounts,
    camera_system: CameraSystemResource,
) -> dict[str, RowCounts]:
    engine, stage = claimed_engine(context, camera_system), op_stage(context, camera_system)
    by_table: dict[str, RowCounts] = {}
    # Interrupted, the step records every table's rows: those finished and the interrupted one's batches.
    with counted_if_interrupted(context, _by_table_figures, by_table):
        for entry in plan.registry.declared:
            earlier, committed = list(by_table.values()), RowCounts()
            if not plan.dry_run:  # a dry run's count fills nothing
                by_table[entry.name] = committed
            purge = functools.partial(
                cleanup.clean_table, engine, plan, entry.name, context.log.info, stage.share
            )
            by_table[entry.name] = _failing_when_too_slow(purge, committed, earlier)
        context.add_output_metadata(_by_table_figures(by_table))
    return by_table


def _by_table_figures(by_table: dict[str, RowCounts]) -> dict[str, int]:
    return {name: counts.deleted for name, counts in by_table.items()}


@dg.op(description="Report the run's CleanupStats on the run page.")
def report_cleanup(
    context: dg.OpExecutionContext,
    plan: CleanupPlan,
    detections: RowCounts,
    events: RowCounts,
    gpu_stats: RowCounts,
    logs: RowCounts,
    declared: dict[str, RowCounts],
    files: list[FileCounts],
    camera_system: CameraSystemResource,
) -> CleanupStats:
    # Asks too: a re-execution from a failed report starts here, and must note its process.
    engine = claimed_engine(context, camera_system, beside_the_chain=True)
    op_stage(context, camera_system)
    stats = CleanupStats.combine(
        dry_run=plan.dry_run,
        cutoffs=plan.applied_cutoffs,
        detections=detections,
        events=events,
        gpu_stats=gpu_stats,
        logs=logs,
        declared=declared,
        files=FileCounts.merge(files),
        duration_seconds=(datetime.now(UTC) - plan.planned_at).total_seconds(),
    )
    values = stats.as_dict()
    shown = readable(values, plan.dry_run)
    context.log.info(("DRY RUN - nothing was deleted: " if plan.dry_run else "deleted: ") + str(shown))
    context.add_output_metadata(labelled(values, plan.dry_run))
    # The headline figures as run tags: chips on the Runs page, filterable (dry_run=false).
    context.instance.add_run_tags(context.run_id, cleanup_headline(stats))
    if not plan.dry_run:
        observe_after_cleanup(context, engine, plan.registry, stats, FileCounts.merge(files))
    return stats
