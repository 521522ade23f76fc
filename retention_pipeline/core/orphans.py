"""The orphaned-file sweep: files under the storage roots that no row references.

Streaming design, so memory stays flat at millions of files: the roots are walked lazily, files are
checked against the database REFERENCE_CHUNK at a time (under every spelling a row may use), and orphans
are written to a CSV manifest on disk. Only when the whole scan has passed the safety stops is the
manifest read back, chunk by chunk, re-checked against the database and deleted.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError
from sqlalchemy.engine import Engine

from .files import HardLinks, Outcome, StorageRoots, remove_file
from .options import OrphanSweepOptions, readable
from .purge import CHECK_CHUNK, REFERENCE_CHUNK, chunked, referenced_paths
from .queries import path_checks
from .scan import ScanCounts, check_sweep_roots, walk_roots
from .tables import Registry

Progress = Callable[[str], None]


class OrphanPolicy(OrphanSweepOptions):
    """The operator's options and whose media columns reference files; validated on creation."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    registry: Registry = Field(default_factory=Registry, exclude=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ValueError(f"Invalid orphan sweep configuration: {readable(exc)}") from None


@dataclass(frozen=True)
class OrphanSweepPlan:
    """One sweep: its policy, the roots it scans, when it started and where its manifest goes;
    `never_swept`: files and directories it must not consider even under a root (see `never_swept`);
    `unswept`: the configured roots it does not sweep, never entered from another (see `unswept_roots`)."""

    policy: OrphanPolicy
    roots: StorageRoots
    started_at: datetime
    manifest: Path
    never_swept: tuple[str, ...] = ()
    unswept: tuple[str, ...] = ()


def unswept_roots(media_root: Path, configured: Iterable[Path], roots: StorageRoots) -> tuple[str, ...]:
    """The real paths of the `configured` storage roots that `roots` does not sweep (IMAGES_DIR without
    include_images), for the walk to leave out where they lie inside a swept root (THUMBNAIL_DIR=data
    beside IMAGES_DIR=data/images): their files are no orphans of this sweep."""
    every = StorageRoots.from_dirs(media_root, configured).roots
    return tuple(dict.fromkeys(real for real in every if real not in roots.roots))


# What SQLite keeps beside a database file (rollback journal, WAL, shared memory) and our run lock.
_DATABASE_SIDECARS = ("", "-journal", "-wal", "-shm", ".retention-lock")


def never_swept(engine: Engine, *paths: str | Path) -> tuple[str, ...]:
    """The real paths the sweep must never delete, whatever roots it is given: a SQLite database with
    its sidecar files, and `paths`, files or directories (Dagster's home, which holds the run history and
    the manifest; the policy file).

    No row names them, so under a root (THUMBNAIL_DIR=data beside data/retention.db) they would look
    like orphans, and the share-based safety stops do not notice one file among thousands.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    protected = [os.path.realpath(p) for p in paths]
    if database and database != ":memory:" and not database.startswith("file:"):
        real = os.path.realpath(database)
        protected += [real + suffix for suffix in _DATABASE_SIDECARS]
    return tuple(protected)


@dataclass
class OrphanStats:
    """What the sweep found and did; a dry run predicts `orphans_deleted` and `bytes_reclaimed`."""

    dry_run: bool = True
    files_scanned: int = 0
    orphans_found: int = 0
    orphan_bytes: int = 0
    orphans_deleted: int = 0
    bytes_reclaimed: int = 0
    skipped_too_young: int = 0
    skipped_changed: int = 0  # another file at the path by the delete phase (see delete_orphans)
    kept_newly_referenced: int = 0
    files_missing: int = 0
    files_failed: int = 0
    symlinks_skipped: int = 0
    unreadable_dirs: int = 0  # directories the walk could not list: their files were not looked at
    mounts_skipped: int = 0  # directories under a root another file system is mounted on: not entered
    protected_skipped: int = 0  # the database's own files, Dagster's home (see never_swept)
    rows_missing_files: int = 0
    referencing_rows: int = 0
    report_csv: str = ""
    # root -> files, bytes and oldest mtime found there (for the media assets' observations)
    per_root: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scan_for_orphans(
    engine: Engine,
    roots: StorageRoots,
    policy: OrphanPolicy,
    manifest: Path,
    now: datetime,
    progress: Progress,
    protected: tuple[str, ...] = (),
    unswept: tuple[str, ...] = (),
) -> OrphanStats:
    """Walk the roots, write every orphan old enough to the CSV manifest, and count everything
    (`protected`: real paths of files, or directories, never counted as orphans; `unswept`: real paths
    of directories not walked, see `unswept_roots`)."""
    check_sweep_roots(roots)
    stats = OrphanStats(dry_run=policy.dry_run, report_csv=str(manifest))
    oldest_allowed = (now - timedelta(hours=policy.min_age_hours)).timestamp()
    scan_counts = ScanCounts()
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open("w", newline="", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "size", "mtime", "device", "inode"])
        walk = walk_roots(roots, scan_counts, stats.per_root, protected, unswept)
        for chunk in chunked(walk, REFERENCE_CHUNK):
            stats.files_scanned += len(chunk)
            referenced = referenced_paths(engine, roots, [f.path for f in chunk], policy.registry)
            for found in chunk:
                if found.path in referenced:
                    continue
                if found.mtime > oldest_allowed:
                    stats.skipped_too_young += 1
                    continue
                stats.orphans_found += 1
                stats.orphan_bytes += found.size
                writer.writerow([found.path, found.size, found.mtime, *found.inode])
            progress(f"scanned {stats.files_scanned} files, {stats.orphans_found} orphans so far")
    stats.symlinks_skipped = scan_counts.symlinks_skipped
    stats.unreadable_dirs = scan_counts.unreadable_dirs
    stats.mounts_skipped = scan_counts.mounts_skipped
    stats.protected_skipped = scan_counts.protected_skipped
    with engine.connect() as conn:
        stats.referencing_rows = int(
            conn.execute(path_checks.count_referencing_rows(policy.registry)).scalar_one()
        )
    stats.rows_missing_files = count_rows_missing_files(engine, roots, policy.registry, unswept)
    return stats


def delete_orphans(
    engine: Engine,
    roots: StorageRoots,
    policy: OrphanPolicy,
    stats: OrphanStats,
    now: datetime,
    progress: Progress,
    still_ours: Callable[[], object] = lambda: None,
) -> OrphanStats:
    """Delete the manifest's orphans that are still unreferenced and unchanged; count every outcome.
    `still_ours` raises when the run lost its lock: called before each chunk's unlinks, as the sweep
    commits nothing a lost lock could refuse.

    A dry run goes through the same checks and asks `remove_file` what each unlink would do (a directory
    the pipeline may not write to fails it), so its numbers are the real run's.
    """
    oldest_allowed = (now - timedelta(hours=policy.min_age_hours)).timestamp()
    links = HardLinks()
    with open(stats.report_csv, newline="", errors="surrogateescape") as handle:  # names as on disk
        rows = csv.DictReader(handle)
        # Checked again right before the unlinks, in small chunks: a row written since the scan makes its
        # file live again, and one unlinked at a time, a large chunk would leave seconds for such a row.
        for chunk in chunked(rows, CHECK_CHUNK):
            # Each check resolves folders afresh (spellings.Spellings lives for one check), so a directory
            # swapped for a symlink since the scan is spelled as it is now.
            referenced = referenced_paths(engine, roots, [row["path"] for row in chunk], policy.registry)
            still_ours()
            for row in chunk:
                path = row["path"]
                if path in referenced:
                    stats.kept_newly_referenced += 1
                    continue
                try:
                    info = os.lstat(path)
                except OSError:
                    info = None  # remove_file counts it (missing, or refused)
                if info is not None and info.st_mtime > oldest_allowed:  # rewritten since the scan
                    stats.skipped_too_young += 1
                    continue
                if info is not None and (info.st_dev, info.st_ino) != (int(row["device"]), int(row["inode"])):
                    # Not the file scanned (a folder on the way replaced by a symlink, a file moved in with
                    # its old time): the reference check above was about another file.
                    stats.skipped_changed += 1
                    continue
                outcome, freed = remove_file(roots, path, dry_run=policy.dry_run, links=links)
                if outcome is Outcome.DELETED:
                    stats.orphans_deleted += 1
                    stats.bytes_reclaimed += freed
                elif outcome is Outcome.MISSING:
                    stats.files_missing += 1
                else:
                    stats.files_failed += 1
            done = "would delete" if policy.dry_run else "deleted"
            progress(f"{done} {stats.orphans_deleted} of {stats.orphans_found} orphans")
    return stats


def count_rows_missing_files(
    engine: Engine, roots: StorageRoots, registry: Registry | None = None, unswept: tuple[str, ...] = ()
) -> int:
    """Stored paths inside the scanned roots whose file is not on disk (reported, never acted on)."""
    unswept_dirs = tuple(os.path.join(u, "") for u in unswept)
    missing = 0
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=CHECK_CHUNK).execute(
            path_checks.select_every_referenced_path(registry or Registry())
        )
        for (stored,) in result:
            if "\x00" in stored or os.path.lexists(os.path.join(roots.media_root, stored)):
                continue
            target = roots.unlink_target(stored)
            if target is not None and not target.startswith(unswept_dirs):  # the sweep's files only
                missing += 1
    return missing


def orphan_report_rows(manifest: str, limit: int) -> list[dict[str, str]]:
    """The first `limit` orphans of the manifest, for a table on the run page."""
    with open(manifest, newline="", errors="backslashreplace") as handle:  # readable, not exact
        return list(islice(csv.DictReader(handle), limit))
