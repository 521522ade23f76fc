"""The Launchpad config of data_cleanup, on its first op `plan_cleanup`."""

import dagster as dg
from pydantic import Field

# No pydantic bounds (ge/le) on the numbers: Dagster 1.13 does not carry them into the config schema, so
# the Launchpad would accept a bad value anyway and the step would then fail with a raw pydantic error;
# make_plan checks every value and names the field and its range instead.


class CleanupConfig(dg.Config):
    """Run settings; fields left empty fall back to the environment."""

    # A manual launch with the default config only previews; the schedule always sends False.
    dry_run: bool = Field(
        default=True,
        description="Preview only: count what would be deleted, change nothing. Set false to delete.",
    )
    retention_days: int | None = Field(
        default=None,
        description="Keep events, detections and GPU stats this many days (1 to 36500).",
    )
    log_retention_days: int | None = Field(
        default=None, description="Keep log lines this many days (1 to 36500)."
    )
    retention_days_by_table: dict[str, int] = Field(
        default={},
        description="This run only: days to keep per table, e.g. {audit_logs: 30}; replaces every rule of"
        " that table (built-in or from RETENTION_POLICY_FILE).",
    )
    delete_images: bool | None = Field(
        default=None, description="Also delete original images of deleted detections."
    )
    batch_size: int | None = Field(
        default=None,
        description="Most rows per delete transaction, 1 to 100000 (default CLEANUP_BATCH_SIZE, 10000);"
        " the transaction target sizes batches below it.",
    )
    transaction_target_ms: float | None = Field(
        default=None,
        description="Milliseconds each delete transaction aims for: batches shrink below batch_size when"
        " one runs longer (0: always batch_size; default TRANSACTION_TARGET_MS, 50).",
    )
    file_chunk_size: int | None = Field(
        default=None,
        description="Queued files per delete_expired_files share (default 50000); shares run in parallel"
        " under a multiprocess, Celery or Kubernetes executor.",
    )
    emergency: bool = Field(
        default=False,
        description="Disk-pressure mode (set by disk_pressure_sensor): after the normal cleanup, shorten"
        " retention one day at a time until DISK_FREE_TARGET_PERCENT is free, never below"
        " MIN_RETENTION_DAYS.",
    )
    reference_time: str | None = Field(
        default=None,
        description=(
            "ISO 8601 time the cutoffs are measured from. The schedule sets its tick time so a"
            " retried or late run uses the same cutoff; empty means the time the run was launched."
        ),
    )


class OrphanSweepConfig(dg.Config):
    """Launchpad config of orphaned_file_cleanup, on its first op `plan_orphan_sweep`."""

    dry_run: bool = Field(
        default=True, description="Report what would be deleted, change nothing. Set false to delete."
    )
    include_images: bool = Field(
        default=False, description="Also sweep IMAGES_DIR (original images), not only thumbnails and clips."
    )
    min_age_hours: float = Field(
        default=24.0,
        description="Only files older than this (by modification time) can be orphans (>= 1): a file"
        " written just before its row commits must not be taken for one.",
    )
    max_orphan_fraction: float = Field(
        default=0.5, description="Stop, deleting nothing, if more than this share of files look orphaned."
    )
    max_delete_bytes: int = Field(
        default=10 * 1024**3, description="Stop, deleting nothing, if the orphans hold more bytes than this."
    )
    force: bool = Field(default=False, description="Delete even when a safety stop applies.")
