"""The promises every reliability scenario checks, on snapshots of the world taken around a run.

(a) no row the retention rule keeps is deleted;
(b) no file referenced by a surviving row is deleted;
(c) no file outside the storage roots is touched, nor a file inside them that no deleted row owned;
(d) after one more normal run every expired row, and every file of every deleted row, is gone;
(e) the reported statistics match what actually changed.

After a run that did not finish (killed, failed), (d) is replaced by "nothing is lost": every file of a
deleted row is gone or still waiting in the durable queue, so the next run can finish the job.

The oracle here is written from the README's rules, not from the product's code: which rows expire
(a detection expires when it is old or linked to an expired event, unless linked to a retained one), and
which stored paths may be deleted (inside a storage root after resolving the directories; a final
symlink only if it points inside a root too).
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine

from retention_pipeline.core.schema import (
    alerts,
    detections,
    event_detections,
    events,
    gpu_stats,
    logs,
    retention_file_queue,
)
from retention_pipeline_tests.factories import CameraWorld


@dataclass(frozen=True)
class FileState:
    """What `lstat` says about one directory entry."""

    kind: str  # "file", "dir", "link" or "other"
    size: int
    inode: int
    links: int
    mtime_ns: int
    target: str | None = None  # where a symlink points, as written


@dataclass(frozen=True)
class Snapshot:
    """Every row retention can touch, the durable queue, and every entry of the watched directories."""

    events: Mapping[int, tuple[datetime, str | None]]  # id -> (started_at, clip_path)
    detections: Mapping[int, tuple[datetime, str, str | None]]  # id -> (detected_at, file, thumbnail)
    links: frozenset[tuple[int, int]]  # (event_id, detection_id)
    alerts: Mapping[int, int]  # id -> event_id
    gpu_stats: Mapping[int, datetime]
    logs: Mapping[int, datetime]
    queue: Mapping[str, str]  # stored path -> kind
    files: Mapping[str, FileState]  # absolute path -> state

    def rows(self, table: str) -> set[int]:
        return set(getattr(self, table))


ROW_TABLES = ("events", "detections", "alerts", "gpu_stats", "logs")


def take_snapshot(engine: Engine, watched: Iterable[Path]) -> Snapshot:
    """Read the rows and walk the watched directories (never following a symlink)."""
    with engine.connect() as conn:
        snapshot_rows = {
            "events": {r.id: (r.started_at, r.clip_path) for r in conn.execute(select(events))},
            "detections": {
                r.id: (r.detected_at, r.file_path, r.thumbnail_path) for r in conn.execute(select(detections))
            },
            "links": frozenset(
                (r.event_id, r.detection_id)
                for r in conn.execute(select(event_detections.c.event_id, event_detections.c.detection_id))
            ),
            "alerts": {r.id: r.event_id for r in conn.execute(select(alerts.c.id, alerts.c.event_id))},
            "gpu_stats": {r.id: r.recorded_at for r in conn.execute(select(gpu_stats))},
            "logs": {r.id: r.timestamp for r in conn.execute(select(logs))},
            "queue": {},
        }
        if inspect(conn).has_table(retention_file_queue.name):
            q = retention_file_queue.c
            snapshot_rows["queue"] = {r.path: r.kind for r in conn.execute(select(q.path, q.kind))}
    return Snapshot(files=snapshot_files(watched), **snapshot_rows)


def snapshot_files(watched: Iterable[Path]) -> dict[str, FileState]:
    """Every entry under the watched directories, by absolute path (symlinks are not followed)."""
    files: dict[str, FileState] = {}
    for top in watched:
        for folder, dirs, names in os.walk(os.path.realpath(top)):
            for name in dirs + names:
                path = os.path.join(folder, name)
                files[path] = _state(path)
    return files


def _state(path: str) -> FileState:
    info = os.lstat(path)
    mode = info.st_mode
    kind = "dir" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "file"
    if not (stat.S_ISDIR(mode) or stat.S_ISLNK(mode) or stat.S_ISREG(mode)):
        kind = "other"
    target = os.readlink(path) if kind == "link" else None
    return FileState(kind, info.st_size, info.st_ino, info.st_nlink, info.st_mtime_ns, target)


@dataclass(frozen=True)
class Expired:
    """The ids the retention rule deletes from one snapshot."""

    events: set[int]
    detections: set[int]
    alerts: set[int]
    gpu_stats: set[int]
    logs: set[int]


@dataclass(frozen=True)
class Policy:
    """The retention rule and the storage roots one run works with."""

    cutoff: datetime
    log_cutoff: datetime
    media_root: str
    roots: tuple[str, ...]
    delete_images: bool = False

    @classmethod
    def of(cls, world: CameraWorld, delete_images: bool = False) -> Policy:
        return cls(
            cutoff=world.cutoff,
            log_cutoff=world.log_cutoff,
            media_root=os.path.abspath(world.media),
            roots=tuple(os.path.realpath(root) for root in world.settings().storage_roots),
            delete_images=delete_images,
        )

    # --- rows --------------------------------------------------------------------------------------
    def expired(self, snap: Snapshot) -> Expired:
        old_events = {i for i, (at, _clip) in snap.events.items() if at < self.cutoff}
        linked: dict[int, set[int]] = defaultdict(set)
        for event_id, detection_id in snap.links:
            linked[detection_id].add(event_id)
        old_detections = {
            i
            for i, (at, _image, _thumb) in snap.detections.items()
            if (at < self.cutoff or linked[i] & old_events) and not linked[i] - old_events
        }
        return Expired(
            events=old_events,
            detections=old_detections,
            alerts={i for i, event_id in snap.alerts.items() if event_id in old_events},
            gpu_stats={i for i, at in snap.gpu_stats.items() if at < self.cutoff},
            logs={i for i, at in snap.logs.items() if at < self.log_cutoff},
        )

    def owned(self, snap: Snapshot, detection_ids: Iterable[int], event_ids: Iterable[int]) -> dict[str, str]:
        """{stored path: kind} of the files the run must delete with these rows ('clip' < 'image' < ...)."""
        kinds: dict[str, str] = {}

        def add(path: str | None, kind: str) -> None:
            if path and (path not in kinds or kind < kinds[path]):
                kinds[path] = kind

        for i in detection_ids:
            _at, image, thumbnail = snap.detections[i]
            add(thumbnail, "thumbnail")
            if self.delete_images:
                add(image, "image")
        for i in event_ids:
            add(snap.events[i][1], "clip")
        return kinds

    def referenced(self, snap: Snapshot) -> set[str]:
        """Where on disk the rows of a snapshot point (every spelling resolved to one path)."""
        stored = [clip for _at, clip in snap.events.values()]
        for _at, image, thumbnail in snap.detections.values():
            stored += [image, thumbnail]
        return {where for path in stored if path and (where := self.where(path)) is not None}

    # --- paths -------------------------------------------------------------------------------------
    def where(self, stored: str) -> str | None:
        """The entry a stored path names, directories resolved as the OS does ('..' after symlinks)."""
        if not stored.strip() or "\x00" in stored:
            return None
        joined = os.path.join(self.media_root, stored)
        name = os.path.basename(joined)
        if name in ("", ".", ".."):
            return None
        try:
            return os.path.join(os.path.realpath(os.path.dirname(joined)), name)
        except (OSError, ValueError):
            return None

    def inside(self, path: str) -> bool:
        return any(path.startswith(root + os.sep) for root in self.roots)

    def is_root_or_above(self, path: str) -> bool:
        return any(root == path or root.startswith(path + os.sep) for root in self.roots)

    def deletable(self, stored: str, snap: Snapshot) -> str | None:
        """The path a run may unlink for this stored path, or None when it must refuse it."""
        where = self.where(stored)
        if where is None or not self.inside(where):
            return None
        state = snap.files.get(where)
        if state is not None and state.kind == "link" and state.target is not None:
            pointed = os.path.realpath(os.path.join(os.path.dirname(where), state.target))
            if not self.inside(pointed):
                return None
        return where


# --- the checks ------------------------------------------------------------------------------------
def check_safe(policy: Policy, before: Snapshot, after: Snapshot) -> list[str]:
    """(a), (b) and (c): nothing was deleted that the rules keep, whatever state the run ended in."""
    problems = []
    expired = policy.expired(before)
    for table in ROW_TABLES:
        kept = before.rows(table) - getattr(expired, table)
        if lost := kept - after.rows(table):
            problems.append(f"(a) {len(lost)} {table} rows the rule keeps were deleted: {sorted(lost)[:5]}")
    kept_links = {
        (e, d)
        for e, d in before.links
        if e in before.events and e not in expired.events and d not in expired.detections
    }
    if lost_links := kept_links - after.links:
        problems.append(
            f"(a) {len(lost_links)} links between kept rows were deleted: {sorted(lost_links)[:5]}"
        )

    for where in sorted(policy.referenced(after)):
        state, now = before.files.get(where), after.files.get(where)
        if state is not None and (now is None or now.inode != state.inode):
            problems.append(f"(b) {where} is referenced by a surviving row but was deleted")

    deleted_detections = before.rows("detections") - after.rows("detections")
    deleted_events = before.rows("events") - after.rows("events")
    owned = {*policy.owned(before, deleted_detections, deleted_events), *before.queue}
    may_go = {where for stored in owned if (where := policy.deletable(stored, before)) is not None}
    for path, state in sorted(before.files.items()):
        now = after.files.get(path)
        if state.kind == "dir" or policy.is_root_or_above(path):
            # A directory's mtime moves when an entry goes; only the directory itself must stay.
            if now is None or now.inode != state.inode:
                problems.append(f"(c) directory {path} was removed or replaced")
        elif not policy.inside(path):
            if now != state:
                problems.append(f"(c) {path} is outside the storage roots but was touched: {state} -> {now}")
        elif now is None and path not in may_go:
            problems.append(f"(c) {path} was deleted, but no deleted row (or queued path) owned it")
    return problems


def check_files_accounted(
    policy: Policy,
    before: Snapshot,
    after: Snapshot,
    *,
    allow_queued: bool,
    undeletable: Iterable[str] = (),
) -> list[str]:
    """Every file of a row deleted since `before` (and every path queued then) is gone from disk,
    still referenced by a surviving row, or (with allow_queued) still waiting in the queue.
    """
    problems = []
    deleted_detections = before.rows("detections") - after.rows("detections")
    deleted_events = before.rows("events") - after.rows("events")
    owned = {*policy.owned(before, deleted_detections, deleted_events), *before.queue}
    still_referenced = policy.referenced(after)
    skip = set(undeletable)
    for stored in sorted(owned):
        where = policy.deletable(stored, before)
        if where is None or where in still_referenced or where in skip:
            continue  # refused, kept for a surviving row, or known to be undeletable
        state = before.files.get(where)
        if state is None or state.kind == "dir" or where not in after.files:
            continue  # never there, someone else's directory, or deleted as promised
        if allow_queued and stored in after.queue:
            continue
        problems.append(f"(d) {stored!r} belonged to a deleted row but is still on disk and not queued")
    return problems


def check_complete(
    policy: Policy, before: Snapshot, after: Snapshot, undeletable: Iterable[str] = ()
) -> list[str]:
    """(d) after a normal run: no expired row is left, the queue is empty, and every file it owned is gone."""
    problems = []
    expired = policy.expired(after)
    for table in ROW_TABLES:
        if left := getattr(expired, table):
            problems.append(f"(d) {len(left)} expired {table} rows are still there: {sorted(left)[:5]}")
    skip = set(undeletable)
    # A file whose unlink was refused stays queued on purpose, for the next run to try again.
    if queued := sorted(p for p in after.queue if policy.deletable(p, before) not in skip):
        problems.append(f"(d) {len(queued)} files are still queued: {queued[:5]}")
    return problems + check_files_accounted(
        policy, before, after, allow_queued=False, undeletable=undeletable
    )


def check_stats(
    policy: Policy,
    before: Snapshot,
    after: Snapshot,
    stats: Mapping[str, Any],
    removed_by_others: Iterable[str] = (),
) -> list[str]:
    """(e) the run's report matches the difference between the snapshots around it."""
    problems = []
    row_fields = {
        "events_deleted": "events",
        "alerts_deleted": "alerts",
        "detections_deleted": "detections",
        "gpu_stats_deleted": "gpu_stats",
        "logs_deleted": "logs",
    }
    for field, table in row_fields.items():
        actual = len(before.rows(table) - after.rows(table))
        if stats[field] != actual:
            problems.append(f"(e) {field} reported {stats[field]}, but {actual} {table} rows went")

    deleted_detections = before.rows("detections") - after.rows("detections")
    deleted_events = before.rows("events") - after.rows("events")
    owned = policy.owned(before, deleted_detections, deleted_events)
    handled = {**owned, **before.queue}
    kind_at: dict[str, str] = {}
    for stored, kind in handled.items():
        if (where := policy.where(stored)) is not None:
            kind_at[where] = min(kind, kind_at.get(where, kind))
    others = set(removed_by_others)
    gone = {
        path: state
        for path, state in before.files.items()
        if state.kind != "dir" and path not in after.files and path not in others
    }
    counted = {"thumbnail": 0, "image": 0, "clip": 0}
    for path in gone:
        if path not in kind_at:
            problems.append(f"(e) {path} disappeared but was not a file of this run")
        else:
            counted[kind_at[path]] += 1
    for kind, field in (
        ("thumbnail", "thumbnails_deleted"),
        ("image", "images_deleted"),
        ("clip", "clips_deleted"),
    ):
        if stats[field] != counted[kind]:
            problems.append(f"(e) {field} reported {stats[field]}, but {counted[kind]} {kind} files went")

    by_inode: dict[int, list[FileState]] = defaultdict(list)
    for state in gone.values():
        by_inode[state.inode].append(state)
    freed = sum(states[0].size for states in by_inode.values() if len(states) >= states[0].links)
    if stats["space_reclaimed"] != freed:
        problems.append(
            f"(e) space_reclaimed reported {stats['space_reclaimed']}, but {freed} bytes were freed"
        )

    outcomes = (
        "thumbnails_deleted",
        "images_deleted",
        "clips_deleted",
        "files_missing",
        "files_refused",
        "files_failed",
        "files_kept_shared",
    )
    if (total := sum(stats[field] for field in outcomes)) != len(handled):
        problems.append(f"(e) {total} file outcomes reported for {len(handled)} distinct paths handled")
    return problems


def assert_no_problems(problems: list[str]) -> None:
    assert not problems, "invariants violated:\n  " + "\n  ".join(problems[:30])


def verify_finished_run(
    policy: Policy,
    before: Snapshot,
    after: Snapshot,
    stats: Mapping[str, Any] | None,
    *,
    removed_by_others: Iterable[str] = (),
    undeletable: Iterable[str] = (),
) -> None:
    """(a)-(e) for a run that completed: safe, complete, and truthfully reported."""
    problems = check_safe(policy, before, after)
    problems += check_complete(policy, before, after, undeletable=undeletable)
    if stats is not None:
        problems += check_stats(policy, before, after, stats, removed_by_others=removed_by_others)
    assert_no_problems(problems)


def verify_interrupted_run(policy: Policy, before: Snapshot, after: Snapshot) -> None:
    """(a)-(c) and "nothing lost" for a run that did not finish."""
    problems = check_safe(policy, before, after)
    problems += check_files_accounted(policy, before, after, allow_queued=True)
    assert_no_problems(problems)
