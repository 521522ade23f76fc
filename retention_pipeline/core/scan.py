"""Walking the storage roots lazily: one open directory iterator per level, never a list of the tree."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass


class RootMissing(RuntimeError):
    """A storage root is missing or not a directory (an unmounted volume looks like this)."""


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


def check_roots(roots: list[str]) -> None:
    """Raise RootMissing naming every root that is not an existing directory."""
    missing = [root for root in roots if not os.path.isdir(root)]
    if missing:
        raise RootMissing(
            "storage root(s) missing or not a directory: "
            + ", ".join(missing)
            + ". An unmounted volume looks like this; mount it or fix the *_DIR settings."
        )


def walk_files(root: str, counts: ScanCounts) -> Iterator[ScannedFile]:
    """Every regular file under `root`, depth first, without following any symlink.

    A symlink (to a file or a directory) is skipped and counted: following one could lead out of the
    root, and deleting one would delete nobody's data.
    """
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
                    stack.append(os.scandir(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    yield ScannedFile(
                        entry.path, info.st_size, info.st_mtime, info.st_nlink, (info.st_dev, info.st_ino)
                    )
            except (PermissionError, FileNotFoundError):
                counts.unreadable_dirs += 1
    finally:
        for iterator in stack:
            iterator.close()
