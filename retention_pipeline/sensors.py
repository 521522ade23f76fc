"""disk_pressure_sensor: an emergency data_cleanup when a media volume runs out of room."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from .core.volumes import pressure_volumes
from .history import PRESSURE_STEP, failure_metadata, logged_at
from .jobs import data_cleanup
from .pressure_ops import NOT_RELIEVED
from .resources import CameraSystemResource, DiskSpaceResource
from .run_processes import blocking_runs
from .schedules import scheduled_run_config

SENSOR_NAME = "disk_pressure_sensor"
# How long an emergency run that found deleting frees nothing keeps the sensor from asking again.
GIVE_UP_FOR = timedelta(days=1)
# Dagster's tag on the runs a sensor requests.
SENSOR_TAG = "dagster/sensor_name"


@dg.sensor(
    name=SENSOR_NAME,
    job=data_cleanup,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 5 minutes: below DISK_FREE_MIN_PERCENT free on a volume holding a storage root"
    " whose files cleanup deletes, request one emergency data_cleanup that shortens retention until"
    " DISK_FREE_TARGET_PERCENT is free. After one that found deleting frees nothing there, none until"
    " the disk has been above the minimum again.",
)
def disk_pressure_sensor(
    context: dg.SensorEvaluationContext, camera_system: CameraSystemResource, disk: DiskSpaceResource
) -> dg.RunRequest | dg.SkipReason:
    settings = camera_system.settings()
    volumes = pressure_volumes(settings.registry, settings.delete_images, settings.storage_roots)
    if not volumes:
        return dg.SkipReason(
            "no storage root whose files an emergency deletes is online (THUMBNAIL_DIR, CLIPS_DIR, and"
            " IMAGES_DIR with DELETE_IMAGES or a policy column): deleting data would relieve no disk"
        )
    free = disk.free_by_volume(volumes)
    shown = ", ".join(f"{percent:.1f}% free on {volume}" for volume, percent in free.items())
    now = datetime.now(UTC)
    if all(percent >= settings.disk_free_min_percent for percent in free.values()):
        # The cursor: when the disk last had room. An emergency run that gave up before it is stale.
        context.update_cursor(str(now.timestamp()))
        return dg.SkipReason(f"{shown}, at or above {settings.disk_free_min_percent}%")
    if busy := blocking_runs(context.instance):
        return dg.SkipReason(f"{shown}, but retention run {busy[0].run_id} is in progress")
    # The later of the disk last having room and a day ago: a run that gave up wrongly (the camera wrote
    # as fast as it freed) must not leave the disk to fill for good.
    since = max(float(context.cursor or 0), (now - GIVE_UP_FOR).timestamp())
    if gave_up := _gave_up_since(context.instance, since):
        # Another run would only erase more data for nothing.
        return dg.SkipReason(
            f"{shown}, but emergency run {gave_up} found that deleting camera data cannot relieve the"
            f" disk: free space by other means; the sensor asks again once every volume has"
            f" {settings.disk_free_min_percent}% free, or a day after that run"
        )
    return dg.RunRequest(
        # One emergency run per hour at most, however long the pressure lasts.
        run_key=f"disk_pressure_{now:%Y%m%d%H}",
        run_config=scheduled_run_config(settings, now, emergency=True),
    )


def _gave_up_since(instance: dg.DagsterInstance, since: float) -> str | None:
    """The id of this sensor's latest run if it failed because the disk could not be relieved, and ended
    after `since` (epoch seconds); else None."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=data_cleanup.name, tags={SENSOR_TAG: SENSOR_NAME}), limit=1
    )
    if not records or records[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return None
    run_id = records[0].dagster_run.run_id
    # When it gave up, from the event log: its create_timestamp is hours off on a PostgreSQL instance
    # outside UTC, and would make a run that gave up after the disk last had room look stale.
    ended = records[0].end_time or (at.timestamp() if (at := logged_at(instance, run_id, first=False)) else 0)
    if ended <= since:
        return None
    return run_id if NOT_RELIEVED in failure_metadata(instance, run_id, PRESSURE_STEP) else None
