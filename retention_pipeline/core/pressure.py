"""Emergency mode: shorten the effective retention, oldest data first, until the disk has room again."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from .cleanup import cleanup_pass
from .db import is_lock_timeout, is_query_cancelled
from .inventory import oldest_kept
from .plan import CleanupPlan
from .relief_verdicts import Verdicts
from .stats import CleanupStats, FileCounts
from .volumes import emergency_kinds, emergency_media, names_a_file, volumes_by_kind


class PressureNotRelieved(RuntimeError):
    """Shortening retention cannot bring the free space to the target: at MIN_RETENTION_DAYS, with nothing
    left that a shorter retention deletes, or when every volume under the target is stuck: its passes
    deleted files and freed nothing, or deleted rows but none of their files."""


@dataclass
class ReliefResult:
    """What emergency mode did: days cut, free space (per volume) before and after, each step taken."""

    start_days: int
    final_days: int
    free_before: dict[str, float]
    free_after: dict[str, float]
    target: float
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def days_cut(self) -> int:
        return self.start_days - self.final_days

    @property
    def reached(self) -> bool:
        return not _under(self.free_after, self.target)

    def metadata(self) -> dict[str, Any]:
        """Numbers for the run page; the single free figures are those of the fullest volume."""
        before, after = _lowest(self.free_before), _lowest(self.free_after)
        return {
            "emergency_days_cut": self.days_cut,
            "emergency_retention_days": self.final_days,
            "free_percent_before": round(before, 2),
            "free_percent_after": round(after, 2),
            "free_percent_target": self.target,
            "free_percent_by_volume": {
                volume: {"before": round(free, 2), "after": round(self.free_after[volume], 2)}
                for volume, free in self.free_before.items()
            },
            # The "before" figure is read after the run's normal cleanup, when emergency mode starts: it
            # may lie above DISK_FREE_MIN_PERCENT (the normal pass freed some), only under the target.
            "emergency_reason": (
                f"after the normal cleanup {before:.1f}% was free, under the {self.target}% target;"
                f" retention shortened from {self.start_days} to {self.final_days} days, leaving {after:.1f}%"
                f" free"
                if self.days_cut
                else f"after the normal cleanup {before:.1f}% was free, at or above the {self.target}%"
                " target; retention not shortened"
            ),
        }


def relieve_pressure(
    clean_at: Callable[[int], dict[str, Any]],
    free_by_volume: Callable[[], dict[str, float]],
    oldest_age_days: Callable[[int], float | None],
    start_days: int,
    min_days: int,
    target: float,
    progress: Callable[[str], None],
    names_files: Callable[[str], bool | None] = lambda volume: True,
) -> ReliefResult:
    """Run `clean_at(days)` at ever shorter retentions, down to min_days, until every volume has `target`%
    free.

    Each step is a whole cleanup at a later cutoff, so the oldest data goes first and every usual rule
    (shared files, retained events, storage roots) still applies. The step goes straight to the age of
    the oldest row still kept (`oldest_age_days(days)`: None when none is), so years without data cost no
    passes. `clean_at` returns what its pass deleted (`rows_deleted`, `files_deleted`, ...).

    Raises PressureNotRelieved with the numbers when even min_days is not enough, when no row is left
    that a shorter retention deletes, or when every volume still under the target is stuck (cutting
    further would only erase retention for nothing): two passes that deleted files there (`volumes` in
    what `clean_at` returns) gained no room there (the disk is filled by something deleting camera data
    cannot touch), or three passes handled files there (`unfreed_on`: some stayed, queued on an unmounted
    root, missing, refused, failing, shared) and deleted none. Passes that handled no file on a volume
    are skipped in its count (see `Verdicts`), unless no row left names a file there
    (`names_files(volume)` false; None, could not tell, counts as naming files for that pass only): then
    it is stuck at once. While one pressed volume is not stuck, retention goes on shortening: a volume
    nothing relieves must not leave another to fill.
    """
    free = free_by_volume()
    result = ReliefResult(start_days, start_days, free, free, target)
    days = start_days
    verdicts = Verdicts()
    while (pressed := _under(free, target)) and days > min_days:
        age = oldest_age_days(days)
        if age is None:
            raise PressureNotRelieved(
                f"disk still {_describe(free)} after cutting retention from {start_days} to {days} days, and"
                f" no row is left that a shorter retention deletes; the target is {target}%. Free space by"
                " other means."
            )
        # A row `age` days old goes at any retention under its age (a row exactly at the cutoff stays).
        days = max(min_days, min(days - 1, math.ceil(age) - 1))
        deleted = clean_at(days)
        before, free = free, free_by_volume()
        result.steps.append({"retention_days": days, "free_percent": round(_lowest(free), 2), **deleted})
        result.final_days, result.free_after = days, free
        progress(f"emergency: retention {days} days -> {_describe(free)} (target {target}%)")
        verdicts.judge(pressed, deleted, before, free, names_files)
        files_deleted = deleted.get("files_deleted", 0)
        if reason := verdicts.give_up(_under(free, target), days, files_deleted, _describe(free), target):
            raise PressureNotRelieved(reason)
    if _under(free, target):
        raise PressureNotRelieved(
            f"disk still {_describe(free)} after cutting retention from {start_days} to {days} days"
            f" (MIN_RETENTION_DAYS={min_days}); the target is {target}%. Free space by other means"
            " or lower MIN_RETENTION_DAYS."
        )
    return result


def relieve_by_cleanup(
    engine: Engine,
    plan: CleanupPlan,
    passes: list[tuple[CleanupStats, FileCounts]],
    free_by_volume: Callable[[], dict[str, float]],
    min_days: int,
    target: float,
    progress: Callable[[str], None],
) -> ReliefResult:
    """`relieve_pressure` with whole cleanups of `plan` at shorter retentions; each pass's statistics (and
    its file step's counts) are appended to `passes` as it ends, so a caller can count them even when
    relief fails: a pass that fails part-way too, with what it had deleted before its error."""

    kinds = emergency_kinds(plan.registry, plan.delete_images, dict(plan.days_by_table))
    volume_of = volumes_by_kind(plan.storage_dirs, kinds)

    def volumes(counts: dict[str, int]) -> list[str]:
        return sorted({volume_of[kind] for kind, n in counts.items() if n and kind in volume_of})

    def clean_at(days: int) -> dict[str, Any]:
        step, files = cleanup_pass(engine, plan.with_retention(days), progress, passes.append)
        by_kind = {
            "thumbnail": step.thumbnails_deleted,
            "clip": step.clips_deleted,
            "image": step.images_deleted,
        }
        # Every table's rows (gpu_stats, logs and the policy file's too), not only events and detections.
        rows = sum(step.rows_deleted_by_table.values())
        return {
            "rows_deleted": rows,
            "files_deleted": sum(by_kind.values()),
            "bytes": step.space_reclaimed,
            "files_not_freed": sum(files.unfreed_by_kind.values()),
            # By the kind of each file, so a file of another volume never counts for this one.
            "volumes": volumes(by_kind),
            "unfreed_on": volumes(files.unfreed_by_kind),
        }

    def oldest_age_days(days: int) -> float | None:
        skip = dict(plan.days_by_table)  # tables with the run's own days keep them in emergency mode
        oldest = oldest_kept(engine, plan.registry, plan.with_retention(days).cutoff, skip)
        return None if oldest is None else (plan.reference_time - oldest).total_seconds() / 86400

    media = emergency_media(plan.registry, plan.delete_images, dict(plan.days_by_table))

    def names_files(volume: str) -> bool | None:
        try:
            return names_a_file(engine, [(t, m) for t, m in media if volume_of.get(m.kind) == volume])
        except DBAPIError as exc:
            # Either way the volume stays pressed, rather than the run failing without the marker the
            # sensor waits on.
            if is_query_cancelled(exc):
                # A table too large to answer within the statement timeout: taken as naming files, and
                # kept, since asking again would cost the whole timeout at every pass.
                within, answer = "the statement timeout", True
            elif is_lock_timeout(exc):
                # Even a plain SELECT waits behind an ACCESS EXCLUSIVE lock on a table or a partition of it
                # (the camera system's ALTER TABLE, a partition's DETACH or DROP), or behind a request for
                # one queued ahead of it: short-lived, so taken as naming files for this pass only.
                within, answer = "the lock timeout", None
            else:
                raise
            progress(
                f"emergency: could not tell within {within} whether a row still names a file on {volume};"
                " going on"
            )
            return answer

    return relieve_pressure(
        clean_at,
        free_by_volume,
        oldest_age_days,
        plan.retention_days,
        min_days,
        target,
        progress,
        names_files,
    )


def _under(free: dict[str, float], target: float) -> list[str]:
    """The volumes with less than `target` percent free."""
    return [volume for volume, percent in free.items() if percent < target]


def _lowest(free: dict[str, float]) -> float:
    return min(free.values(), default=100.0)


def _describe(free: dict[str, float]) -> str:
    """`12.3% free` for one volume; `12.3% free on /a, 40.0% on /b` for several."""
    if len(free) == 1:
        return f"{_lowest(free):.1f}% free"
    return "free: " + ", ".join(f"{percent:.1f}% on {volume}" for volume, percent in free.items())
