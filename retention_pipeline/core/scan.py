"""Walking the storage roots lazily: one open directory iterator per level, never a list of the tree."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .files import StorageRoots, within

_OCTAL = re.compile(r"\\([0-7]{3})")


class RootMissing(RuntimeError):
    """A storage root is missing or not a directory (an unmounted volume looks like this)."""


class RootRefused(ValueError):
    """A storage root the sweep must not walk: it would take files that are not media for orphans."""


@dataclass(frozen=True)
class ScannedFile:
    """One regular file found under a root."""

    path: str  # absolute, as reached from the root (the spelling rows are likely to store)
    size: int
    mtime: float
    links: int = 1
    inode: tuple[int, int] = (0, 0)  # device and inode number


@dataclass
class ScanCounts:
    """What the walk met besides regular files."""

    symlinks_skipped: int = 0
    unreadable_dirs: int = 0
    protected_skipped: int = 0  # files the sweep must never delete (orphans.never_swept)
    mounts_skipped: int = 0  # directories another file system is mounted on: not entered


def mount_points() -> frozenset[str]:
    """Every mount point of this process's mount namespace (bind mounts too), from /proc/self/mountinfo;
    empty where there is none (the walk then knows mounts by their device number only)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
            # Field 5 is the mount point, with space, tab, newline and backslash written as octal escapes.
            return frozenset(
                _OCTAL.sub(lambda escape: chr(int(escape[1], 8)), line.split(" ")[4])
                for line in info
                if line.count(" ") >= 4
            )
    except OSError:
        return frozenset()


def check_roots(roots: list[str]) -> None:
    """Raise RootMissing naming every root that is not an existing directory."""
    missing = [root for root in roots if not os.path.isdir(root)]
    if missing:
        raise RootMissing(
            "storage root(s) missing or not a directory: "
            + ", ".join(missing)
            + ". An unmounted volume looks like this; mount it or fix the *_DIR settings."
        )


def check_sweep_roots(roots: StorageRoots) -> None:
    """check_roots, and raise RootRefused for a root that is MEDIA_ROOT or lies above it.

    Such a root holds more than media (the camera system's configuration, its models, the policy file): no
    row names those files, so each would be an orphan. Settings refuse it too; this guards other callers.
    """
    check_roots(list(roots.walk_roots))
    media = {roots.media_root, roots.real_media_root or roots.media_root}
    for configured, real in zip(roots.walk_roots, roots.roots, strict=True):
        if any(within(m, configured) or within(m, real) for m in media):
            raise RootRefused(
                f"storage root {configured} is MEDIA_ROOT ({roots.media_root}) or contains it: the sweep"
                " would delete every file there no row names. Point THUMBNAIL_DIR, CLIPS_DIR and IMAGES_DIR"
                " at media directories."
            )


def walk_files(
    root: str,
    counts: ScanCounts,
    pruned: Callable[[str], bool] | None = None,
    mounts: frozenset[str] = frozenset(),
) -> Iterator[ScannedFile]:
    """Every regular file under `root`, depth first, without following any symlink, nor entering a
    directory for which `pruned` (given its path as reached from the root) is true, nor one another file
    system is mounted on (in `mounts`, real paths, or on another device than the root).

    A symlink (to a file or a directory) is skipped and counted: following one could lead out of the
    root, and deleting one would delete nobody's data. A mount is skipped and counted as `find -xdev`
    would: a volume or a bind mount under a root (a database's data directory, another system's share)
    holds files no row names that are not ours to judge.
    """
    device = os.stat(root).st_dev
    real_root = os.path.realpath(root)
    stack = [os.scandir(root)]
    try:
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop().close()
                continue
            try:
                if entry.is_symlink():
                    counts.symlinks_skipped += 1
                elif entry.is_dir(follow_symlinks=False):
                    if pruned is not None and pruned(entry.path):
                        continue
                    real = real_root + entry.path[len(root) :]  # no symlink followed below the root
                    if real in mounts or entry.stat(follow_symlinks=False).st_dev != device:
                        counts.mounts_skipped += 1
                        continue
                    stack.append(os.scandir(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    yield ScannedFile(
                        entry.path, info.st_size, info.st_mtime, info.st_nlink, (info.st_dev, info.st_ino)
                    )
            except OSError:  # permissions, gone meanwhile, a stale handle, an I/O error: not looked into
                counts.unreadable_dirs += 1
    finally:
        for iterator in stack:
            iterator.close()


def walk_roots(
    roots: StorageRoots,
    counts: ScanCounts,
    per_root: dict[str, dict[str, float]],
    protected: tuple[str, ...] = (),
    unswept: tuple[str, ...] = (),
) -> Iterator[ScannedFile]:
    """Every file of the roots once, counted per root in `per_root` (`protected`: real paths of files or
    directories never yielded, counted; `unswept`: real paths of directories not entered at all)."""
    protected_files = set(protected)
    protected_dirs = tuple(os.path.join(p, "") for p in protected)
    unswept_set = set(unswept)
    real_of = dict(zip(roots.walk_roots, roots.roots, strict=True))
    # Each store's totals: a file counts for the innermost root holding it (THUMBNAIL_DIR=data with
    # CLIPS_DIR=data/clips: a clip is the clips' even when the walk of data reaches it), and a file with
    # several names in one store once, as the cleanup counts freed bytes.
    first_of = {real: root for root, real in reversed(real_of.items()) if real not in unswept_set}
    stores = sorted(
        ((os.path.join(real, ""), root) for real, root in first_of.items()), key=len, reverse=True
    )
    for _, root in stores:
        per_root.setdefault(root, {"files": 0, "bytes": 0, "oldest_mtime": 0.0})
    counted: dict[str, set[tuple[int, int]]] = {}
    mounts = mount_points()
    for root in _outermost(roots, unswept, mounts):
        real_root = real_of[root]
        if real_root in unswept_set:
            # Also a root this sweep leaves alone (IMAGES_DIR = THUMBNAIL_DIR without include_images):
            # its files cannot be told apart, so none are taken for orphans.
            continue

        # The walk follows no symlink below the root, so a real path is the root's plus the rest.
        def pruned(path: str, root: str = root, real_root: str = real_root) -> bool:
            return real_root + path[len(root) :] in unswept_set

        for found in walk_files(root, counts, pruned if unswept else None, mounts):
            real = real_root + found.path[len(root) :]
            if protected and (real in protected_files or real.startswith(protected_dirs)):
                counts.protected_skipped += 1
                continue
            store = next((r for prefix, r in stores if real.startswith(prefix)), root)
            totals = per_root[store]
            totals["files"] += 1
            if found.links == 1 or found.inode not in (seen := counted.setdefault(store, set())):
                totals["bytes"] += found.size
                if found.links > 1:
                    seen.add(found.inode)
            if not totals["oldest_mtime"] or found.mtime < totals["oldest_mtime"]:
                totals["oldest_mtime"] = found.mtime
            yield found


def _outermost(
    roots: StorageRoots, unswept: tuple[str, ...] = (), mounts: frozenset[str] = frozenset()
) -> list[str]:
    """The roots to walk: one of each directory named twice, none inside another (each file once) unless
    an unswept directory or another file system lies between them (the outer walk does not enter those,
    so the inner root is walked on its own: CLIPS_DIR=data/clips its own volume under THUMBNAIL_DIR=data)."""
    resolved = [os.path.join(real, "") for real in roots.roots]
    between = [os.path.join(u, "") for u in unswept] + [os.path.join(m, "") for m in mounts]

    unswept_roots = {os.path.join(u, "") for u in unswept}

    def walked_within(real: str, other: str) -> bool:
        return (
            real.startswith(other)
            and real != other
            and other not in unswept_roots  # a root the sweep leaves out is not walked at all
            and not any(real.startswith(u) and u.startswith(other) and u != other for u in between)
            and _device(real) == _device(other)
        )

    return [
        root
        for i, (root, real) in enumerate(zip(roots.walk_roots, resolved, strict=True))
        if not any(
            (other == real and j < i) or walked_within(real, other) for j, other in enumerate(resolved)
        )
    ]


def _device(directory: str) -> int | None:
    try:
        return os.stat(directory).st_dev
    except OSError:
        return None
