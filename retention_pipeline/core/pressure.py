"""Emergency mode: shorten the effective retention one day at a time until the disk has room again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class PressureNotRelieved(RuntimeError):
    """Even at MIN_RETENTION_DAYS the free space stayed under the target."""


@dataclass
class ReliefResult:
    """What emergency mode did: days cut, free space before and after, each step taken."""

    start_days: int
    final_days: int
    free_before: float
    free_after: float
    target: float
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def days_cut(self) -> int:
        return self.start_days - self.final_days

    @property
    def reached(self) -> bool:
        return self.free_after >= self.target

    def metadata(self) -> dict[str, Any]:
        """Numbers for the run page."""
        return {
            "emergency_days_cut": self.days_cut,
            "emergency_retention_days": self.final_days,
            "free_percent_before": round(self.free_before, 2),
            "free_percent_after": round(self.free_after, 2),
            "free_percent_target": self.target,
            "emergency_reason": (
                f"free space {self.free_before:.1f}% was under the minimum; retention shortened from"
                f" {self.start_days} to {self.final_days} days to reach {self.target}%"
                if self.days_cut
                else f"free space {self.free_before:.1f}% already at or above {self.target}%; nothing cut"
            ),
        }


def relieve_pressure(
    clean_at: Callable[[int], dict[str, Any]],
    free_percent: Callable[[], float],
    start_days: int,
    min_days: int,
    target: float,
    progress: Callable[[str], None],
) -> ReliefResult:
    """Run `clean_at(days)` for days = start-1, start-2, ... down to min_days until free >= target.

    Each step is a whole cleanup at a one-day-later cutoff, so the oldest data goes first and every
    usual rule (shared files, retained events, storage roots) still applies. Raises PressureNotRelieved
    with the numbers when even min_days is not enough.
    """
    free = free_percent()
    result = ReliefResult(start_days, start_days, free, free, target)
    days = start_days
    while free < target and days > min_days:
        days -= 1
        deleted = clean_at(days)
        free = free_percent()
        result.steps.append({"retention_days": days, "free_percent": round(free, 2), **deleted})
        result.final_days, result.free_after = days, free
        progress(f"emergency: retention {days} days -> {free:.1f}% free (target {target}%)")
    if free < target:
        raise PressureNotRelieved(
            f"disk still {free:.1f}% free after cutting retention from {start_days} to {days} days"
            f" (MIN_RETENTION_DAYS={min_days}); the target is {target}%. Free space by other means"
            " or lower MIN_RETENTION_DAYS."
        )
    return result
