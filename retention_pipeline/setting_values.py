"""How each setting's raw text is read: one parser per kind of value, each raising a ValueError whose
message names the setting, says what it must be and shows what it got (never a URL's credentials).

Never imports Dagster: `Settings` reads the environment with these, the policy and the plan too.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.connection import parse_url
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .core.job_status import redacted
from .core.policy import MAX_DAYS

MAX_BATCH_SIZE = 100_000  # larger batches make one transaction hold locks for too long

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_HHMM = re.compile(r"^(?P<h>\d{2}):(?P<m>\d{2})$")


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


def parse_path(name: str, raw: str) -> Path:
    """A directory path (not checked to exist: a root may be unmounted)."""
    if "\x00" in raw:
        raise ValueError(f"{name} must be a directory path, got one with a NUL byte")
    return Path(raw.strip())


# The drivers the product installs and is tested with: SQLAlchemy's own parse of the URL decides.
_DRIVERS = {("sqlite", "pysqlite"), ("postgresql", "psycopg2")}


def parse_database_url(name: str, raw: str) -> str:
    """A SQLite or PostgreSQL URL for a driver the product ships with, postgresql:// mapped to psycopg2."""
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


def parse_redis_url(name: str, raw: str) -> str:
    """A Redis URL that redis-py can read."""
    url = raw.strip()
    problem = f"{name} must be a redis://, rediss:// or unix:// URL, got {redacted(url)!r}"
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(problem)
    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # redis-py's own reading of the URL
    except ValueError:
        raise ValueError(problem) from None
    return url


def parse_ttl(name: str, raw: str) -> int:
    """Seconds the job tracker keeps a job, between one second and 30 days."""
    value = _parse_int(name, raw)
    if not 1 <= value <= 30 * 86400:
        raise ValueError(f"{name} must be a number of seconds between 1 and 2592000, got {raw!r}")
    return value
