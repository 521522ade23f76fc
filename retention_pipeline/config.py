"""The Launchpad config of data_cleanup, on its first op `plan_cleanup`."""

from typing import Annotated

import dagster as dg
from pydantic import Field, ValidationInfo, field_validator

from .core.options import OrphanSweepOptions
from .core.policy import MAX_DAYS
from .core.reference_time import check_reference_time, cutoff_from, parse_reference_time
from .setting_values import MAX_BATCH_SIZE
from .settings import SettingsError

# Dagster 1.13 does not carry pydantic bounds (ge/le) into the config schema the Launchpad validates
# against; the jobs' launch check (jobs.refusing_bad_values) builds these models so a value out of
# bounds is refused when the run is launched, before it exists.


class CleanupConfig(dg.Config):
    """Run settings; fields left empty fall back to the environment."""

    # A manual launch with the default config only previews; the schedule always sends False.
    dry_run: bool = Field(
        default=True,
        description="Preview only: count what would be deleted, change nothing. Set false to delete.",
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DAYS,
        description="Keep events, detections and GPU stats this many days (1 to 36500).",
    )
    log_retention_days: int | None = Field(
        default=None, ge=1, le=MAX_DAYS, description="Keep log lines this many days (1 to 36500)."
    )
    retention_days_by_table: dict[str, Annotated[int, Field(ge=1, le=MAX_DAYS)]] = Field(
        default={},
        description="This run only: days to keep per table, e.g. {audit_logs: 30}; replaces every rule of"
        " that table (built-in or from RETENTION_POLICY_FILE).",
    )
    delete_images: bool | None = Field(
        default=None, description="Also delete original images of deleted detections."
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Most rows per delete transaction, 1 to 100000 (default CLEANUP_BATCH_SIZE, 10000);"
        " the transaction target sizes batches below it.",
    )
    transaction_target_ms: float | None = Field(
        default=None,
        ge=0,
        le=60_000,
        description="Milliseconds each delete transaction aims for: batches shrink below batch_size when"
        " one runs longer (0: always batch_size; default TRANSACTION_TARGET_MS, 50).",
    )
    file_chunk_size: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Queued files per delete_expired_files share; shares run in parallel under a"
        " multiprocess, Celery or Kubernetes executor (default 50000 there; one share under the default"
        " in-process executor, where shares would run one after another).",
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

    @field_validator("reference_time")
    @classmethod
    def _not_in_the_future(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value:
            try:
                reference = check_reference_time(parse_reference_time(value))
                # The days this config gives (validated above it); the environment's and the policy
                # file's are checked when the run is planned.
                given = {
                    "retention_days": info.data.get("retention_days"),
                    "log_retention_days": info.data.get("log_retention_days"),
                }
                given |= {
                    f"retention_days_by_table.{table}": days
                    for table, days in (info.data.get("retention_days_by_table") or {}).items()
                }
                for source, days in given.items():
                    if days is not None:
                        cutoff_from(reference, days, source)
            except SettingsError as exc:  # reported at launch after the field's name, so not twice
                raise ValueError(str(exc).removeprefix("reference_time ")) from None
        return value


class OrphanSweepConfig(dg.Config, OrphanSweepOptions):
    """Launchpad config of orphaned_file_cleanup, on its first op `plan_orphan_sweep`."""
