"""Typed settings read from the environment once, validated with messages a person can act on.

This module never imports Dagster: the CLI, the resources and the tests all build settings the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from pathlib import Path

from sqlalchemy.engine import make_url

from .core.files import within
from .core.job_status import JobTracker
from .core.policy import DeclaredRule, read_policy, registry_with
from .core.tables import Registry
from .setting_values import (
    parse_batch_size,
    parse_bool,
    parse_clock_time,
    parse_database_url,
    parse_days,
    parse_path,
    parse_percent,
    parse_redis_url,
    parse_seconds,
    parse_timezone,
    parse_transaction_target,
    parse_ttl,
)

DEFAULT_DATABASE_URL = "sqlite:///data/retention.db"


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists every problem."""


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline reads from the environment, validated."""

    database_url: str = DEFAULT_DATABASE_URL
    retention_days: int = 30
    log_retention_days: int = 7
    cleanup_time: time = time(3, 0)
    cleanup_timezone: str = "UTC"
    batch_size: int = 10_000  # an upper bound: the transaction target sizes the batches below it
    transaction_target_ms: float = 50.0
    delete_images: bool = False
    media_root: Path = Path(".")
    thumbnail_dir: Path = Path("data/thumbnails")
    clips_dir: Path = Path("data/clips")
    images_dir: Path = Path("data/images")
    disk_free_min_percent: float = 10.0
    disk_free_target_percent: float = 15.0
    min_retention_days: int = 1
    dagster_run_retention_days: int = 90
    progress_interval_seconds: float = 2.0
    policy: tuple[DeclaredRule, ...] = ()  # RETENTION_POLICY_FILE's rules
    policy_file: Path | None = None  # RETENTION_POLICY_FILE itself, which the orphan sweep never deletes
    job_status_redis_url: str | None = None  # None: runs are not published to the camera's job tracker
    job_status_ttl_seconds: int = 3600

    @property
    def job_tracker(self) -> JobTracker:
        """Where runs publish their status for the camera system's Jobs page (off without a URL)."""
        return JobTracker(self.job_status_redis_url, self.job_status_ttl_seconds)

    @property
    def registry(self) -> Registry:
        """The retention tables: the built-in four plus the policy file's."""
        return registry_with(self.policy)

    @property
    def storage_roots(self) -> tuple[Path, Path, Path]:
        """The three media roots, absolute; relative ones are taken relative to MEDIA_ROOT."""
        root = self.media_root.absolute()
        return tuple(root / d for d in (self.thumbnail_dir, self.clips_dir, self.images_dir))  # type: ignore[return-value]

    @property
    def cleanup_cron(self) -> str:
        """The daily cron expression for CLEANUP_TIME."""
        return f"{self.cleanup_time.minute} {self.cleanup_time.hour} * * *"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the environment; raise SettingsError listing every bad variable."""
        env = os.environ if environ is None else environ
        errors: list[str] = []
        values: dict[str, object] = {}

        def take(field: str, var: str, parse: object) -> None:
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                return
            try:
                values[field] = parse(var, raw)  # type: ignore[operator]
            except ValueError as exc:
                errors.append(str(exc))

        take("retention_days", "RETENTION_DAYS", parse_days)
        take("log_retention_days", "LOG_RETENTION_DAYS", parse_days)
        take("cleanup_time", "CLEANUP_TIME", parse_clock_time)
        take("cleanup_timezone", "CLEANUP_TIMEZONE", parse_timezone)
        take("batch_size", "CLEANUP_BATCH_SIZE", parse_batch_size)
        take("transaction_target_ms", "TRANSACTION_TARGET_MS", parse_transaction_target)
        take("delete_images", "DELETE_IMAGES", parse_bool)
        for field, var in (
            ("media_root", "MEDIA_ROOT"),
            ("thumbnail_dir", "THUMBNAIL_DIR"),
            ("clips_dir", "CLIPS_DIR"),
            ("images_dir", "IMAGES_DIR"),
        ):
            take(field, var, parse_path)
        take("database_url", "DATABASE_URL", parse_database_url)
        take("disk_free_min_percent", "DISK_FREE_MIN_PERCENT", parse_percent)
        take("disk_free_target_percent", "DISK_FREE_TARGET_PERCENT", parse_percent)
        take("min_retention_days", "MIN_RETENTION_DAYS", parse_days)
        take("dagster_run_retention_days", "DAGSTER_RUN_RETENTION_DAYS", parse_days)
        take("progress_interval_seconds", "PROGRESS_INTERVAL_SECONDS", parse_seconds)
        take("job_status_redis_url", "JOB_STATUS_REDIS_URL", parse_redis_url)
        take("job_status_ttl_seconds", "JOB_STATUS_TTL_SECONDS", parse_ttl)
        # SQLite matches table names ignoring the case of ASCII letters: the policy's tables are folded onto
        # one spelling there (`Événements` and `événements` stay two tables, as in SQLite).
        sqlite = (
            make_url(str(values.get("database_url", DEFAULT_DATABASE_URL))).get_backend_name() == "sqlite"
        )
        take("policy", "RETENTION_POLICY_FILE", lambda _name, raw: read_policy(Path(raw.strip()), sqlite))
        take("policy_file", "RETENTION_POLICY_FILE", lambda _name, raw: Path(raw.strip()).absolute())
        # The roots as the settings resolve them (a variable that failed to parse keeps its default).
        defaults = cls(**values)  # type: ignore[arg-type]
        media = os.path.realpath(defaults.media_root.absolute())
        for var, root in zip(
            ("THUMBNAIL_DIR", "CLIPS_DIR", "IMAGES_DIR"), defaults.storage_roots, strict=True
        ):
            if os.path.normpath(root) == os.sep:
                # Containment would hold for every file on the machine, and the orphan sweep would walk it.
                errors.append(f"{var} resolves to {os.sep}: a storage root must be a media directory")
            elif within(media, os.path.realpath(root)):
                # MEDIA_ROOT holds more than media (the camera system's configuration, its models): no row
                # names those files, so the orphan sweep would take every one of them for an orphan.
                errors.append(
                    f"{var} resolves to {root}, which is MEDIA_ROOT ({media}) or contains it: a storage"
                    " root must be a media directory inside MEDIA_ROOT or elsewhere"
                )
        low = values.get("disk_free_min_percent", cls.disk_free_min_percent)
        high = values.get("disk_free_target_percent", cls.disk_free_target_percent)
        if not errors and low >= high:  # type: ignore[operator]
            errors.append(f"DISK_FREE_TARGET_PERCENT ({high}) must be above DISK_FREE_MIN_PERCENT ({low})")
        if errors:
            raise SettingsError("Invalid configuration: " + "; ".join(errors))
        return cls(**values)  # type: ignore[arg-type]
