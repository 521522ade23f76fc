"""The orphan sweep's safety stops: signs that deleting what it found would be a mistake (an empty or wrong
database, unmounted or wrong roots), checked after the whole scan and before any file is deleted."""

from __future__ import annotations

from .orphans import OrphanPolicy, OrphanStats


class SafetyStop(RuntimeError):
    """The sweep would delete suspiciously much; nothing was deleted."""


def safety_stop_reason(stats: OrphanStats, policy: OrphanPolicy) -> str | None:
    """Why deleting these orphans looks like a mistake (wrong or empty database, wrong roots), if it does."""
    if stats.files_scanned == 0 and stats.rows_missing_files:
        return (
            f"the storage roots hold no files while {stats.rows_missing_files} rows reference files in"
            " them: is the volume mounted?"
        )
    if stats.files_scanned and stats.referencing_rows == 0:
        return (
            f"the database has no rows referencing media while the roots hold {stats.files_scanned}"
            " files: a fresh or wrong DATABASE_URL would make every file look orphaned"
        )
    if stats.files_scanned and stats.orphans_found / stats.files_scanned > policy.max_orphan_fraction:
        share = stats.orphans_found / stats.files_scanned
        return (
            f"{stats.orphans_found} of {stats.files_scanned} files ({share:.0%}) look orphaned, more than"
            f" max_orphan_fraction {policy.max_orphan_fraction:.0%}: check MEDIA_ROOT and the *_DIR settings"
        )
    if stats.orphan_bytes > policy.max_delete_bytes:
        return (
            f"the orphans hold {stats.orphan_bytes} bytes, more than max_delete_bytes"
            f" {policy.max_delete_bytes}"
        )
    return None


def check_safety(stats: OrphanStats, policy: OrphanPolicy) -> str | None:
    """Raise SafetyStop for a real run (unless forced); return the reason, if any, for the report."""
    reason = safety_stop_reason(stats, policy)
    if reason and not policy.dry_run and not policy.force:
        raise SafetyStop(f"orphan sweep stopped, nothing deleted: {reason}. Set force: true to override.")
    return reason
