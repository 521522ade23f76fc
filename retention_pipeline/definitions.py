"""The one Definitions of the retention_pipeline code location."""

import dagster as dg

from .jobs import data_cleanup, orphaned_file_cleanup
from .resources import CameraSystemResource
from .schedules import build_daily_schedule, build_weekly_orphan_schedule
from .settings import Settings

# Invalid CLEANUP_TIME or CLEANUP_TIMEZONE stops the code location from loading, with the message,
# before any run can start.
_settings = Settings.from_env()

defs = dg.Definitions(
    jobs=[data_cleanup, orphaned_file_cleanup],
    schedules=[build_daily_schedule(_settings), build_weekly_orphan_schedule(_settings)],
    resources={"camera_system": CameraSystemResource()},
)
