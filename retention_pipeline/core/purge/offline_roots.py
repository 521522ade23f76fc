"""Storage roots that look unmounted: a queued file missing under one stays queued instead of being forgotten.

An unmounted volume leaves its mount point an empty directory (or, mounted below the root, no root at all).
Its files are not gone, only out of sight: counted as missing and dropped from the queue, no row or queue
entry would name them once the volume is back, and only the orphan sweep could find them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..files import StorageRoots
from ..scan import mount_points
from ..stats import FileCounts


@dataclass(frozen=True)
class OfflineRoots:
    """The storage roots that were missing or empty when a drain or its preview began."""

    roots: StorageRoots
    # resolved root -> the root as configured, which is what an operator recognises in a warning
    offline: dict[str, str] = field(default_factory=dict)

    @classmethod
    def look(cls, roots: StorageRoots) -> OfflineRoots:
        """Look at each root now. A run looks once, when it is planned, before anything is unlinked: its own
        unlinks can empty a root whose files were all expired (a later share of the file step, a later
        emergency pass would take it for unmounted), and the dry run, which unlinks nothing, must decide
        as the real run does."""
        shown = roots.walk_roots if len(roots.walk_roots) == len(roots.roots) else roots.roots
        offline = {
            resolved: configured
            for resolved, configured in zip(roots.roots, shown, strict=True)
            if missing_or_empty(resolved)
        }
        return cls(roots, offline)

    @classmethod
    def during(
        cls, roots: StorageRoots, offline_at_plan: tuple[str, ...], mounted_at_plan: tuple[str, ...]
    ) -> OfflineRoots:
        """The roots offline for a step of a run planned earlier (a share of the file step, an emergency
        pass, a re-execution hours later): those the plan found missing or empty, and those that went
        since in a way the run's own unlinks cannot explain (the directory gone, or a mount point at
        planning that is one no more). A root the run emptied itself is still mounted, so it is online."""
        offline = set(offline_at_plan)
        mounts = mount_points()
        for root in roots.roots:
            if not os.path.isdir(root) or (root in mounted_at_plan and not _is_mount(root, mounts)):
                offline.add(root)
        shown = dict(zip(roots.roots, roots.walk_roots or roots.roots, strict=False))
        return cls(roots, {resolved: shown.get(resolved, resolved) for resolved in offline})

    def holding(self, stored: str, resolved_dirs: dict[str, str] | None = None) -> str | None:
        """The offline root (as configured) a stored path lies under, or None."""
        if not self.offline:
            return None
        target = self.roots.contained_path(stored, resolved_dirs)
        if target is None:
            return None
        # The innermost root holding the path decides, should one root lie inside another.
        holders = [root for root in self.roots.roots if target.startswith(root.rstrip(os.sep) + os.sep)]
        innermost = max(holders, key=len, default=None)
        return self.offline.get(innermost) if innermost is not None else None


def mounted_roots(roots: StorageRoots) -> tuple[str, ...]:
    """The roots (resolved) that are mount points now: one that is not at a later step was unmounted."""
    mounts = mount_points()
    return tuple(root for root in roots.roots if _is_mount(root, mounts))


def _is_mount(directory: str, mounts: frozenset[str]) -> bool:
    # The kernel's list knows bind mounts of the same file system too; ismount, other devices.
    return directory in mounts or os.path.ismount(directory)


def missing_or_empty(directory: str) -> bool:
    """True for a directory that does not exist or holds no entry at all (what an unmounted mount point
    looks like); False when it cannot be read, which the files' own outcomes then report."""
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is None
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False


def offline_warnings(counts: FileCounts, dry_run: bool) -> list[str]:
    """One line per storage root whose missing files stayed queued (dry run: would stay)."""
    stay = "a real run would keep its {} files queued" if dry_run else "its {} queued files stay queued"
    return [
        f"storage root {root} is missing or empty: is its volume mounted? {stay.format(n)}"
        " (not counted as missing) for the next run"
        for root, n in sorted(counts.roots_offline.items())
    ]
