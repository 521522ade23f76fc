"""How rows may spell one file: the names a reference check looks for.

A row may name a file relative to MEDIA_ROOT or absolute, through a symlinked storage root or MEDIA_ROOT or
by the real path, and through a symlinked directory inside a root (a camera's folder linked to another).
The check stages every such spelling of the paths it checks. Writers' noise (`//`, `/./`, a leading `./`)
is not spelled out here: the check compares each row's path with that noise removed
(`queries.path_checks.as_checked`), so the staged names are all in that form.
"""

from __future__ import annotations

import os
from functools import cached_property

from .files import StorageRoots, within
from .queries.path_checks import as_checked_text


class Spellings:
    """The spellings of stored paths for one reference check. Each folder's spellings, and the symlinked
    directories found above it, are worked out once per check and never kept longer, so a directory swapped
    for a symlink is seen by the next check."""

    def __init__(self, roots: StorageRoots) -> None:
        self.roots = roots
        self._folders: dict[str, tuple[str, ...]] = {}  # the text before a name -> its folder's spellings
        self._links: dict[str, tuple[tuple[str, str], ...]] = {}  # directory -> its symlinked subdirectories
        self._resolved: dict[str, str] = {}  # directory -> its real path

    def aliases(self, stored: str) -> list[str]:
        """The strings a row may use for the same file: as stored, absolute, relative to MEDIA_ROOT,
        through each symlink that reaches it or by its real path."""
        names = {stored, as_checked_text(stored)}
        if "\x00" not in stored and stored.strip():
            name = stored.rpartition(os.sep)[2]
            if name in ("", ".", ".."):  # normalising changes the last component: no shortcut
                folder, name = os.path.split(os.path.normpath(os.path.join(self.roots.media_root, stored)))
                spellings = self.folder_spellings(folder)
            else:
                # normpath is lexical and passes a plain last component through, so the text before the
                # name fixes the folder: one normalisation per directory instead of one per file.
                before = stored[: len(stored) - len(name)]
                spellings = self._folders.get(before) or self._folders.setdefault(
                    before,
                    self.folder_spellings(os.path.normpath(os.path.join(self.roots.media_root, before))),
                )
            names.update(spelling + name for spelling in spellings)
        return sorted(names)

    def folder_spellings(self, folder: str) -> tuple[str, ...]:
        """Every way a row may spell `folder` + separator (absolute, or relative to MEDIA_ROOT)."""
        prefix = self.roots.media_root.rstrip(os.sep) + os.sep
        spellings: set[str] = set()
        for spelled in self._absolute_spellings(folder):
            base = spelled if spelled.endswith(os.sep) else spelled + os.sep
            spellings.add(base)
            if base.startswith(prefix):
                spellings.add(base[len(prefix) :])
        return tuple(sorted(spellings))

    def _absolute_spellings(self, folder: str) -> set[str]:
        """`folder` as given, resolved, through each symlinked directory above it inside a root, and through
        each symlinked root or MEDIA_ROOT or not.

        Resolving only goes one way: a folder named by its real path must also get the spellings through
        the symlinks that reach it, or a row naming it that way would not keep the file.
        """
        real = self._resolved.get(folder) or self._resolved.setdefault(folder, os.path.realpath(folder))
        found = {folder, real}
        pairs = self._linked_prefixes + _both_ways(self._links_above(real))
        for _ in pairs:  # one substitution per round; nested links take a round each
            more = {
                other + spelled[len(one) :]
                for spelled in found
                for one, other in pairs
                if within(spelled, one)
            }
            if more <= found:
                break
            found |= more
        return found

    def _links_above(self, real: str) -> set[tuple[str, str]]:
        """(link, where it resolves) for each symlink, in a directory between `real`'s storage root and
        `real` itself, that points at `real` or a directory above it (`front_door -> cam_a`,
        `latest -> 2026-06`)."""
        links: set[tuple[str, str]] = set()
        for root in self.roots.roots:
            if real == root or not within(real, root):
                continue
            parts = os.path.relpath(real, root).split(os.sep)
            for depth in range(len(parts)):  # the root, then each directory down to real's parent
                links.update(
                    (link, target)
                    for link, target in self._linked_dirs(os.path.join(root, *parts[:depth]))
                    if within(real, target)
                )
        return links

    def _linked_dirs(self, directory: str) -> tuple[tuple[str, str], ...]:
        """(link, where it resolves) for each symlink in `directory` to a directory inside a storage root."""
        if (known := self._links.get(directory)) is not None:
            return known
        found = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if not entry.is_symlink():
                        continue
                    try:
                        # One stat through the link: links to files (common) cost no realpath.
                        if not entry.is_dir():
                            continue
                    except OSError:  # a loop, a target it may not look at: this link leads nowhere
                        continue
                    target = os.path.realpath(entry.path)
                    if any(within(target, root) for root in self.roots.roots):
                        found.append((entry.path, target))
        except OSError:
            pass  # unreadable or gone: nothing is known to link through it
        self._links[directory] = tuple(found)
        return self._links[directory]

    @cached_property
    def _linked_prefixes(self) -> tuple[tuple[str, str], ...]:
        # MEDIA_ROOT and each root, as configured and by the real path.
        roots = self.roots
        pairs = {
            (roots.media_root, roots.real_media_root or roots.media_root),
            *zip(roots.walk_roots, roots.roots, strict=False),  # no walk_roots unless built by from_dirs
        }
        return _both_ways(pairs)


def _both_ways(pairs: set[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Each (one spelling, the other) pair both ways round. A pair where one lies inside the other (a link
    to its own ancestor) is left out: its substitutions would never end."""
    linked = [(a, b) for a, b in sorted(pairs) if not within(a, b) and not within(b, a)]
    return tuple(linked + [(b, a) for a, b in linked])
