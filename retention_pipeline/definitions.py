"""The one Definitions of the retention_pipeline code location."""

import dagster as dg

from .assets import camera_assets
from .checks import orphan_checks, retention_checks, retention_health_job
from .dagster_history import dagster_history_cleanup
from .jobs import data_cleanup, orphaned_file_cleanup
from .resources import CameraSystemResource, DiskSpaceResource
from .schedules import (
    build_daily_schedule,
    build_retention_health_schedule,
    build_weekly_history_schedule,
    build_weekly_orphan_schedule,
)
from .sensors import disk_pressure_sensor
from .settings import Settings

# Invalid settings (CLEANUP_TIME, a bad RETENTION_POLICY_FILE...) stop the code location from loading,
# with the message, before any run can start; the policy's tables become assets with their checks.
_settings = Settings.from_env()

defs = dg.Definitions(
    assets=camera_assets(_settings.registry),
    asset_checks=[*retention_checks(_settings.registry), *orphan_checks],
    jobs=[data_cleanup, orphaned_file_cleanup, retention_health_job, dagster_history_cleanup],
    schedules=[
        build_daily_schedule(_settings),
        build_weekly_orphan_schedule(_settings),
        build_retention_health_schedule(_settings),
        build_weekly_history_schedule(_settings),
    ],
    sensors=[disk_pressure_sensor],
    resources={"camera_system": CameraSystemResource.from_environment(), "disk": DiskSpaceResource()},
)
