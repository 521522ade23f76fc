"""Typed settings read from the environment once, validated with messages a person can act on.

This module never imports Dagster: the CLI, the resources and the tests all build settings the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.connection import parse_url
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .core.files import within
from .core.job_status import JobTracker, redacted
from .core.policy import MAX_DAYS, DeclaredRule, read_policy, registry_with
from .core.tables import Registry

DEFAULT_DATABASE_URL = "sqlite:///data/retention.db"
MAX_BATCH_SIZE = 100_000  # larger batches make one transaction hold locks for too long

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_HHMM = re.compile(r"^(?P<h>\d{2}):(?P<m>\d{2})$")


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists every problem."""


def parse_days(name: str, raw: object, minimum: int = 1) -> int:
    """A whole number of days within [minimum, MAX_DAYS]."""
    value = _parse_int(name, raw)
    if not minimum <= value <= MAX_DAYS:
        raise ValueError(f"{name} must be an integer between {minimum} and {MAX_DAYS}, got {raw!r}")
    return value


def parse_batch_size(name: str, raw: object) -> int:
    """Rows per transaction, between 1 and MAX_BATCH_SIZE."""
    value = _parse_int(name, raw)
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise ValueError(f"{name} must be an integer between 1 and {MAX_BATCH_SIZE}, got {raw!r}")
    return value


def parse_bool(name: str, raw: object) -> bool:
    """true/false, yes/no, on/off or 1/0, case-insensitive."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def parse_percent(name: str, raw: object) -> float:
    """A percentage between 0 and 100."""
    return _parse_number(name, raw, 0, 100, "a number")


def parse_seconds(name: str, raw: object) -> float:
    """A number of seconds between 0 and an hour."""
    return _parse_number(name, raw, 0, 3600, "a number of seconds")


def _parse_number(name: str, raw: object, low: float, high: float, what: str) -> float:
    message = f"{name} must be {what} between {low:g} and {high:g}, got {raw!r}"
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ValueError(message) from None
    if not low <= value <= high:
        raise ValueError(message)
    return value


def parse_transaction_target(name: str, raw: object) -> float:
    """Milliseconds a delete transaction should aim for, between 0 (off: fixed batch size) and a minute."""
    return _parse_number(name, raw, 0, 60_000, "a number of milliseconds")


def parse_clock_time(name: str, raw: str) -> time:
    """A 24-hour HH:MM time of day."""
    match = _HHMM.match(raw.strip())
    if match is None or int(match["h"]) > 23 or int(match["m"]) > 59:
        raise ValueError(f"{name} must be a 24-hour time HH:MM such as 03:00, got {raw!r}")
    return time(int(match["h"]), int(match["m"]))


def parse_timezone(name: str, raw: str) -> str:
    """An IANA time zone name such as UTC or Europe/Berlin."""
    try:
        ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: 'Europe' is a tzdata directory
        raise ValueError(
            f"{name} must be an IANA time zone name such as UTC or Europe/Berlin, got {raw!r}"
        ) from None
    return raw.strip()


def _parse_int(name: str, raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"{name} must be an integer, got {raw!r}")
    if isinstance(raw, int):
        return raw
    try:
        return int(str(raw).strip())
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def normalise_database_url(url: str) -> str:
    """Map plain postgresql:// to the psycopg2 driver the product ships with."""
    url = url.strip()
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


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
            take(field, var, _parse_path)
        take("database_url", "DATABASE_URL", _parse_database_url)
        take("disk_free_min_percent", "DISK_FREE_MIN_PERCENT", parse_percent)
        take("disk_free_target_percent", "DISK_FREE_TARGET_PERCENT", parse_percent)
        take("min_retention_days", "MIN_RETENTION_DAYS", parse_days)
        take("dagster_run_retention_days", "DAGSTER_RUN_RETENTION_DAYS", parse_days)
        take("progress_interval_seconds", "PROGRESS_INTERVAL_SECONDS", parse_seconds)
        take("job_status_redis_url", "JOB_STATUS_REDIS_URL", _parse_redis_url)
        take("job_status_ttl_seconds", "JOB_STATUS_TTL_SECONDS", _parse_ttl)
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


def _parse_path(name: str, raw: str) -> Path:
    if "\x00" in raw:
        raise ValueError(f"{name} must be a directory path, got one with a NUL byte")
    return Path(raw.strip())


# The drivers the product installs and is tested with: SQLAlchemy's own parse of the URL decides.
_DRIVERS = {("sqlite", "pysqlite"), ("postgresql", "psycopg2")}


def _parse_database_url(name: str, raw: str) -> str:
    url = normalise_database_url(raw)
    # Never the credentials in a message, whatever they hold ('/' and '@' included): up to the last '@'.
    shown = re.sub(r"//.*@", "//…@", raw.strip(), flags=re.DOTALL)
    problem = (
        f"{name} must be a sqlite:///path/to/file.db or postgresql://user@host:port/database URL,"
        f" got {shown!r}"
    )
    try:
        parsed = make_url(url)
        _port = parsed.port  # a port that is not a number fails here, not at the first connection
        # An unknown scheme ('sqlite3://', 'postgresq://') fails here: NoSuchModuleError.
        driver = (parsed.get_backend_name(), parsed.get_driver_name())
    except (ArgumentError, ValueError):
        raise ValueError(problem) from None
    if driver not in _DRIVERS:
        raise ValueError(problem)
    if parsed.get_backend_name() == "sqlite" and not parsed.database:
        raise ValueError(f"{problem} (no database file named)")
    return url


def _parse_redis_url(name: str, raw: str) -> str:
    url = raw.strip()
    problem = f"{name} must be a redis://, rediss:// or unix:// URL, got {redacted(url)!r}"
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(problem)
    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # redis-py's own reading of the URL
    except ValueError:
        raise ValueError(problem) from None
    return url


def _parse_ttl(name: str, raw: str) -> int:
    value = _parse_int(name, raw)
    if not 1 <= value <= 30 * 86400:
        raise ValueError(f"{name} must be a number of seconds between 1 and 2592000, got {raw!r}")
    return value
