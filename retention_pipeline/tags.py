"""Run tags: the one the run queue needs, and each run's headline figures as chips on the Runs page."""

from __future__ import annotations

from .core.labels import human_bytes
from .core.orphans import OrphanStats
from .core.stats import CleanupStats

# dagster.yaml limits runs carrying this tag to one at a time, across every retention job. It is the only
# bookkeeping tag on our runs: which process runs a run is an engine event in its log (history.py).
EXCLUSIVE_TAG = "retention_pipeline/exclusive"
EXCLUSIVE_TAGS = {EXCLUSIVE_TAG: "true"}
FAILED_STEP_TAG = "failed_step"
# Failure metadata of a step refused the database's run lock: the CLI exits EXIT_BUSY on it.
RUN_LOCK_BUSY = "run_lock_busy"
# Failure metadata of a step refused by invalid configuration: the CLI exits EXIT_BAD_CONFIG on it.
INVALID_CONFIG = "invalid_configuration"
# Metadata of the engine event an interrupted step records with what it had deleted (interruptions.py):
# the step's key, beside its figures.
INTERRUPTED_STEP = "retention_interrupted_step"
CLEANUP_HEADLINE = ("dry_run", "events_deleted", "detections_deleted", "files_deleted", "space_reclaimed")
# The file step's figures, in its shares' output metadata: what a failed run's files_deleted adds up.
FILE_FIGURES = ("thumbnails_deleted", "images_deleted", "clips_deleted", "space_reclaimed")
SWEEP_HEADLINE = ("dry_run", "orphans_found", "orphans_deleted", "bytes_reclaimed")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def cleanup_headline(stats: CleanupStats) -> dict[str, str]:
    """A data_cleanup run's figures as tags (strings; sizes for people, exact bytes stay in metadata)."""
    return {
        "dry_run": _flag(stats.dry_run),
        "events_deleted": str(stats.events_deleted),
        "detections_deleted": str(stats.detections_deleted),
        "files_deleted": str(stats.thumbnails_deleted + stats.images_deleted + stats.clips_deleted),
        "space_reclaimed": human_bytes(stats.space_reclaimed),
    }


def sweep_headline(stats: OrphanStats) -> dict[str, str]:
    """An orphaned_file_cleanup run's figures as tags."""
    return {
        "dry_run": _flag(stats.dry_run),
        "orphans_found": str(stats.orphans_found),
        "orphans_deleted": str(stats.orphans_deleted),
        "bytes_reclaimed": human_bytes(stats.bytes_reclaimed),
    }


def partial_headline(dry_run: bool | None, counts: dict[str, int]) -> dict[str, str]:
    """What a failed run can still say: whether it was a dry run, and the headline figures of the counts
    its steps committed (CleanupStats' or OrphanStats' names; figures no step reported are left out)."""
    tags = {} if dry_run is None else {"dry_run": _flag(dry_run)}
    for name in ("events_deleted", "detections_deleted", "orphans_found"):
        if name in counts:
            tags[name] = str(counts[name])
    if files := [counts[name] for name in FILE_FIGURES[:3] if name in counts]:
        tags["files_deleted"] = str(sum(files))
    if "space_reclaimed" in counts:
        tags["space_reclaimed"] = human_bytes(counts["space_reclaimed"])
    return tags
