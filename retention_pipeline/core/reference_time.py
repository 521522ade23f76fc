"""The instant a run's cutoffs are measured from: read from the config or a schedule's tick, and refused
when no cutoff could be counted back from it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from ..settings import SettingsError
from .tables import Registry, rule_days


def parse_reference_time(raw: str) -> datetime:
    """An ISO 8601 instant with an offset (or Z), as UTC."""
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(f"reference_time must be an ISO 8601 time with an offset, got {raw!r}") from None
    if value.tzinfo is None:
        raise SettingsError(f"reference_time must include a UTC offset such as +00:00, got {raw!r}")
    return _as_utc(value, repr(raw))


def _as_utc(value: datetime, shown: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # within hours of year 1 or 9999
        raise SettingsError(
            f"reference_time {shown} lies outside the years a cutoff can be counted in"
        ) from None


# A schedule's tick and a launch are both in the past; a little ahead only for clocks that disagree.
CLOCK_SKEW = timedelta(minutes=10)


def check_reference_time(value: datetime, now: datetime | None = None) -> datetime:
    """`value` as UTC, refused when it lies in the future: cutoffs measured from it would delete rows
    younger than their retention period."""
    now = now or datetime.now(UTC)
    value = _as_utc(value, value.isoformat())
    if value > now + CLOCK_SKEW:
        raise SettingsError(
            f"reference_time {value.isoformat()} is in the future (now {now.isoformat(timespec='seconds')}):"
            " cutoffs measured from it would delete rows younger than their retention period"
        )
    return value


def cutoff_from(reference: datetime, days: int, source: str) -> datetime:
    """`reference` minus `days`; SettingsError naming reference_time and `source` (where the days come
    from) when that falls before year 1."""
    try:
        return reference - timedelta(days=days)
    except OverflowError:
        raise SettingsError(
            f"reference_time {reference.isoformat()} is too early for {source} ({days} days): its cutoff"
            " would fall before year 1; use a later reference_time or fewer days"
        ) from None


def early_cutoffs(
    reference: datetime,
    registry: Registry,
    data_days: int,
    log_days: int,
    overrides: Mapping[str, int],
    settings: Mapping[str, str],
) -> list[str]:
    """Why some rule's cutoff cannot be counted back from `reference` (a rule with more days than the
    run's RETENTION_DAYS, or a table's days for this run, can reach past year 1 when those do not): found
    here, not by the first purge step. `settings` names where DATA and LOG days come from."""
    problems = []
    for entry, rule, days in rule_days(registry, data_days, log_days, overrides):
        if entry.name in overrides:
            source = f"retention_days_by_table.{entry.name}"
        elif rule.setting is None:
            source = f"the retention_days of RETENTION_POLICY_FILE {rule.origin} ({entry.name})"
        else:
            source = settings.get(rule.setting, rule.setting)
        try:
            cutoff_from(reference, days, source)
        except SettingsError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
    return problems
