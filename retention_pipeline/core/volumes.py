"""The volumes emergency mode watches and presses: those where shortening retention deletes files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import String, exists, or_, select
from sqlalchemy.engine import Engine

from .purge.offline_roots import missing_or_empty
from .tables import DATA, MediaColumn, Registry, RetentionTable, column_of

# The storage roots in the order Settings.storage_roots gives them -> the kind of file kept there.
_ROOT_KINDS = ("thumbnail", "clip", "image")


def pressure_volumes(
    registry: Registry, delete_images: bool, storage_roots: Iterable[Path], own_days: Iterable[str] = ()
) -> tuple[str, ...]:
    """One path per volume (distinct st_dev) holding an online storage root whose files an emergency's
    shorter retention deletes.

    Only those volumes can gain room from it, so a disk that deleting data cannot relieve never triggers
    an emergency that would erase retention for nothing: a root on its own filesystem (IMAGES_DIR on
    /export/foscam) is measured there, the images root only when rows an emergency deletes store images
    (DELETE_IMAGES, or a policy column of a table following RETENTION_DAYS), and never a root that is
    missing or empty (an unmounted volume: its files stay queued, and its mount point's parent is not
    its volume). `own_days`: tables whose days the run fixes itself (`retention_days_by_table`).
    """
    by_kind = volumes_by_kind(storage_roots, emergency_kinds(registry, delete_images, own_days))
    return tuple(dict.fromkeys(by_kind.values()))


def emergency_kinds(registry: Registry, delete_images: bool, own_days: Iterable[str] = ()) -> set[str]:
    """The kinds of file in the tables whose rows a shorter RETENTION_DAYS deletes (images only with
    DELETE_IMAGES or a policy column): those with a rule following it, unless the run fixes their days,
    and those whose rows go by ON DELETE CASCADE with such a table's."""
    return {media.kind for _, media in emergency_media(registry, delete_images, own_days)}


def emergency_media(
    registry: Registry, delete_images: bool, own_days: Iterable[str] = ()
) -> list[tuple[RetentionTable, MediaColumn]]:
    """The media columns, with their tables, whose files a shorter RETENTION_DAYS deletes (see
    `emergency_kinds`)."""
    fixed = set(own_days)
    shortened = {
        entry.name
        for entry in registry.tables
        if entry.name not in fixed and any(rule.retention == DATA for rule in entry.rules)
    }
    while more := {
        entry.name
        for entry in registry.tables
        if entry.name not in shortened and any(parent in shortened for parent, _ in entry.cascades_from)
    }:
        shortened |= more
    return [
        (registry[name], media) for name in sorted(shortened) for media in registry[name].media(delete_images)
    ]


def names_a_file(engine: Engine, columns: Iterable[tuple[RetentionTable, MediaColumn]]) -> bool:
    """Whether any row of these tables names a file in these columns: one statement, each EXISTS stopping
    at its first hit (no path index needed; the camera system has none on its path columns)."""
    found = [
        exists().where(column.isnot(None), column != "")
        for entry, media in columns
        for column in [column_of(entry, media.column, String)]
    ]
    if not found:
        return False
    with engine.connect() as conn:
        return bool(conn.execute(select(or_(*found))).scalar())


def volumes_by_kind(storage_roots: Iterable[Path], kinds: set[str]) -> dict[str, str]:
    """kind of file (of `kinds`) -> the path standing for the volume its root lives on (the same path for
    every root of one volume, as `pressure_volumes` measures it); a root missing or empty has none. A root
    of another kind is never looked at: an images volume the cleanup does not delete from may be
    unreadable to it, or hang (stale NFS)."""
    first_on: dict[int, str] = {}
    by_kind = {}
    for kind, root in zip(_ROOT_KINDS, storage_roots, strict=True):
        path = Path(root).absolute()
        if kind in kinds and not missing_or_empty(str(path)):
            by_kind[kind] = first_on.setdefault(os.stat(path).st_dev, str(path))
    return by_kind
