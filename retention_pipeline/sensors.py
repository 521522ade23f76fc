"""disk_pressure_sensor: an emergency data_cleanup when the media volume runs out of room."""

from datetime import UTC, datetime

import dagster as dg

from .history import blocking_runs
from .jobs import data_cleanup
from .resources import CameraSystemResource, DiskSpaceResource
from .schedules import scheduled_run_config


@dg.sensor(
    job=data_cleanup,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 5 minutes: below DISK_FREE_MIN_PERCENT free on MEDIA_ROOT's volume, request one"
    " emergency data_cleanup that shortens retention until DISK_FREE_TARGET_PERCENT is free.",
)
def disk_pressure_sensor(
    context: dg.SensorEvaluationContext, camera_system: CameraSystemResource, disk: DiskSpaceResource
) -> dg.RunRequest | dg.SkipReason:
    settings = camera_system.settings()
    free = disk.free_percent(str(settings.media_root.absolute()))
    if free >= settings.disk_free_min_percent:
        return dg.SkipReason(f"{free:.1f}% free, at or above {settings.disk_free_min_percent}%")
    if busy := blocking_runs(context.instance):
        return dg.SkipReason(f"{free:.1f}% free, but retention run {busy[0].run_id} is in progress")
    now = datetime.now(UTC)
    return dg.RunRequest(
        # One emergency run per hour at most, however long the pressure lasts.
        run_key=f"disk_pressure_{now:%Y%m%d%H}",
        run_config=scheduled_run_config(settings, now, emergency=True),
    )
