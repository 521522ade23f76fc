"""data_cleanup's emergency passes: shorten retention, oldest data first, until the disk has room again."""

import functools
from typing import Any

import dagster as dg
from sqlalchemy.engine import Engine

from .assets import observe_after_cleanup
from .core.lock import RunLockLost
from .core.plan import CleanupPlan
from .core.pressure import PressureNotRelieved, relieve_by_cleanup
from .core.purge import Interrupted
from .core.stats import CleanupStats, FileCounts
from .core.volumes import pressure_volumes
from .failed_runs import error_reason
from .job_tracker import finish
from .ops import op_stage
from .resources import CameraSystemResource, DiskSpaceResource
from .run_lock_ops import claimed_engine, lock_lost
from .tags import cleanup_headline

# Failure metadata of a run whose emergency passes could not relieve the disk.
NOT_RELIEVED = "disk_not_relieved"


@dg.op(
    description="Emergency mode only: shorten retention, oldest data first, until the disk has room again."
)
def relieve_disk_pressure(
    context: dg.OpExecutionContext,
    plan: CleanupPlan,
    stats: CleanupStats,
    camera_system: CameraSystemResource,
    disk: DiskSpaceResource,
) -> None:
    stage = op_stage(context, camera_system)
    if not plan.emergency or plan.dry_run:
        finish(
            stage, stats.as_dict(), "Dry run completed: nothing was deleted" if plan.dry_run else "Completed"
        )
        return
    settings = camera_system.settings()
    volumes = pressure_volumes(plan.registry, plan.delete_images, plan.storage_dirs, dict(plan.days_by_table))
    passes: list[tuple[CleanupStats, FileCounts]] = []
    engine = claimed_engine(context, camera_system)
    try:
        relief = relieve_by_cleanup(
            engine,
            plan,
            passes,
            lambda: disk.free_by_volume(volumes, settle=True),
            min(settings.min_retention_days, plan.retention_days),
            settings.disk_free_target_percent,
            context.log.info,
        )
    except Interrupted as exc:
        # Dagster must see the interrupt itself: the multiprocess executor tells one by its class. The
        # interrupted pass's rows and files are in `passes` all the same, tagged below.
        raise exc.interrupt from None
    except RunLockLost as exc:
        raise lock_lost(exc, _run_total(stats, passes)) from None
    except PressureNotRelieved as exc:
        # The marker tells disk_pressure_sensor not to ask again until the disk has had room.
        raise dg.Failure(
            description=str(exc),
            metadata={NOT_RELIEVED: True, **_run_total(stats, passes)},
            allow_retries=False,
        ) from None
    except Exception as exc:
        # A pass failing part-way (a database error, a file chunk) deleted rows and files all the same.
        raise dg.Failure(description=error_reason(exc), metadata=_run_total(stats, passes)) from exc
    finally:
        # The run's headline counts every pass, the emergency ones too, even when they fell short; the
        # assets' sizes are read again after them.
        total = functools.reduce(CleanupStats.then, [step for step, _ in passes], stats)
        context.instance.add_run_tags(context.run_id, cleanup_headline(total))
        _observe_passes(context, engine, plan, passes, total)
    context.log.info(relief.metadata()["emergency_reason"])
    context.add_output_metadata(
        {**relief.metadata(), "steps": relief.steps, "run_total": dg.MetadataValue.json(total.as_dict())}
    )
    finish(stage, {**total.as_dict(), **relief.metadata()}, "Completed (disk pressure relieved)")


def _run_total(stats: CleanupStats, passes: list[tuple[CleanupStats, FileCounts]]) -> dict[str, Any]:
    """A failure's metadata: the total of every pass, a failed one's committed part too, which `status`
    and the job record report for the run."""
    total = functools.reduce(CleanupStats.then, [step for step, _ in passes], stats)
    return {"run_total": dg.MetadataValue.json(total.as_dict())}


def _observe_passes(
    context: dg.OpExecutionContext,
    engine: Engine,
    plan: CleanupPlan,
    passes: list[tuple[CleanupStats, FileCounts]],
    total: CleanupStats,
) -> None:
    """The assets' observations after the emergency passes: what they deleted, and the sizes left."""
    if not passes:
        return
    steps = [step for step, _ in passes]
    emergency = functools.reduce(CleanupStats.then, steps[1:], steps[0])
    files = FileCounts.merge([counted for _, counted in passes])
    observe_after_cleanup(context, engine, plan.registry, emergency, files, whole_run=total)
