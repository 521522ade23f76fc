"""Storage roots that look unmounted: a queued file missing under one stays queued instead of being forgotten.

An unmounted volume leaves its mount point an empty directory (or, mounted below the root, no root at all).
Its files are not gone, only out of sight: counted as missing and dropped from the queue, no row or queue
entry would name them once the volume is back, and only the orphan sweep could find them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from ..files import StorageRoots
from ..scan import mount_points
from ..stats import FileCounts


@dataclass(frozen=True)
class OfflineRoots:
    """The storage roots whose missing files stay queued: missing or empty when the run was planned, or
    gone since in a way the run's own unlinks cannot explain."""

    roots: StorageRoots
    # resolved root -> the root as configured, which is what an operator recognises in a warning
    offline: dict[str, str] = field(default_factory=dict)
    # What the plan saw of each root (resolved), to tell later that its volume went: its device, and
    # whether it was itself a mount point.
    devices: dict[str, int] = field(default_factory=dict)
    mounted: frozenset[str] = frozenset()

    @classmethod
    def look(cls, roots: StorageRoots) -> OfflineRoots:
        """Look at each root now. A run looks once, when it is planned, before anything is unlinked: its own
        unlinks can empty a root whose files were all expired (a later share of the file step, a later
        emergency pass would take it for unmounted), and the dry run, which unlinks nothing, must decide
        as the real run does."""
        shown = _shown(roots)
        offline = {resolved: shown[resolved] for resolved in roots.roots if missing_or_empty(resolved)}
        return cls(roots, offline)

    @classmethod
    def during(
        cls,
        roots: StorageRoots,
        offline_at_plan: tuple[str, ...],
        devices_at_plan: tuple[tuple[str, int], ...] = (),
        mounted_at_plan: tuple[str, ...] = (),
    ) -> OfflineRoots:
        """The roots offline for a step of a run planned earlier (a share of the file step, an emergency
        pass, a re-execution hours later): those the plan found missing or empty, and those gone since.
        A step keeps looking as it goes (`holding`): a volume may go in the middle of a share."""
        shown = _shown(roots)
        known = cls(roots, {}, dict(devices_at_plan), frozenset(mounted_at_plan))
        for root in roots.roots:
            if root in offline_at_plan or known.gone(root):
                known.offline[root] = shown[root]
        return known

    def gone(self, root: str) -> bool:
        """Whether the root's volume went since the plan: its directory is gone, it is on another device
        (a volume mounted at it or above it is away), or it was a mount point and is one no more (a bind
        mount of the same file system). A root the run emptied itself is none of these."""
        try:
            device = os.stat(root).st_dev
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError:
            return False  # unreadable: the files' own outcomes report it
        if root in self.devices and device != self.devices[root]:
            return True
        return root in self.mounted and not is_mount(root)

    def holding(self, stored: str, resolved_dirs: dict[str, str] | None = None) -> str | None:
        """The offline root (as configured) a missing stored path lies under, or None. A root not offline
        yet is looked at again: its volume may have gone since the step began."""
        target = self.roots.contained_path(stored, resolved_dirs)
        if target is None:
            return None
        # The innermost root holding the path decides, should one root lie inside another.
        holders = [root for root in self.roots.roots if target.startswith(root.rstrip(os.sep) + os.sep)]
        innermost = max(holders, key=len, default=None)
        if innermost is None:
            return None
        if innermost not in self.offline and (self.devices or self.mounted) and self.gone(innermost):
            self.offline[innermost] = _shown(self.roots)[innermost]
        return self.offline.get(innermost)


def _shown(roots: StorageRoots) -> dict[str, str]:
    return dict(zip(roots.roots, roots.walk_roots or roots.roots, strict=False))


def root_devices(roots: StorageRoots) -> tuple[tuple[str, int], ...]:
    """The device of each root (resolved) that exists now."""
    devices = []
    for root in roots.roots:
        with contextlib.suppress(OSError):
            devices.append((root, os.stat(root).st_dev))
    return tuple(devices)


def mounted_roots(roots: StorageRoots) -> tuple[str, ...]:
    """The roots (resolved) that are mount points now."""
    return tuple(root for root in roots.roots if is_mount(root))


def is_mount(directory: str) -> bool:
    """A mount point: on another device than its parent (ismount), or in the kernel's list (which knows
    bind mounts of the same file system too)."""
    return os.path.ismount(directory) or directory in mount_points()


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
