"""The Launchpad config of data_cleanup, on its first op `plan_cleanup`."""

import dagster as dg
from pydantic import Field


class CleanupConfig(dg.Config):
    """Run settings; fields left empty fall back to the environment."""

    # A manual launch with the default config only previews; the schedule always sends False.
    dry_run: bool = Field(
        default=True,
        description="Preview only: count what would be deleted, change nothing. Set false to delete.",
    )
    retention_days: int | None = Field(
        default=None, description="Keep events, detections and GPU stats this many days (>= 1)."
    )
    log_retention_days: int | None = Field(default=None, description="Keep log lines this many days (>= 1).")
    delete_images: bool | None = Field(
        default=None, description="Also delete original images of deleted detections."
    )
    batch_size: int | None = Field(default=None, description="Rows per delete transaction (1 to 100000).")
    reference_time: str | None = Field(
        default=None,
        description=(
            "ISO 8601 time the cutoffs are measured from. The schedule sets its tick time so a"
            " retried or late run uses the same cutoff; empty means the time the run was launched."
        ),
    )
