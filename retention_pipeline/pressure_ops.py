"""The emergency pass of data_cleanup: shorten retention a day at a time until the disk has room again."""

import functools

import dagster as dg

from .core import cleanup
from .core.plan import CleanupPlan
from .core.pressure import PressureNotRelieved, relieve_pressure
from .core.stats import CleanupStats
from .job_tracker import finish
from .ops import claimed_engine, op_stage
from .resources import CameraSystemResource, DiskSpaceResource
from .tags import cleanup_headline


@dg.op(description="Emergency mode only: shorten retention day by day until the disk has room again.")
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
    media_root = str(settings.media_root.absolute())
    engine = claimed_engine(context, camera_system)

    passes: list[CleanupStats] = []

    def clean_at(days: int) -> dict[str, int]:
        step = cleanup.run_cleanup(engine, plan.with_retention(days), context.log.info)
        passes.append(step)
        return {"rows_deleted": step.events_deleted + step.detections_deleted, "bytes": step.space_reclaimed}

    try:
        relief = relieve_pressure(
            clean_at,
            lambda: disk.free_percent(media_root),
            plan.retention_days,
            min(settings.min_retention_days, plan.retention_days),
            settings.disk_free_target_percent,
            context.log.info,
        )
    except PressureNotRelieved as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    finally:
        # The run's headline counts every pass, the emergency ones too, even when they fell short.
        total = functools.reduce(CleanupStats.then, passes, stats)
        context.instance.add_run_tags(context.run_id, cleanup_headline(total))
    context.log.info(relief.metadata()["emergency_reason"])
    context.add_output_metadata(
        {**relief.metadata(), "steps": relief.steps, "run_total": dg.MetadataValue.json(total.as_dict())}
    )
    finish(stage, {**total.as_dict(), **relief.metadata()}, "Completed (disk pressure relieved)")
