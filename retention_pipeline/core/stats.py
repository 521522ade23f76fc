"""What a cleanup run did (or, for a dry run, would do), measured rather than estimated."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import Any


@dataclass
class RowCounts:
    """Rows deleted by one purge step, with the longest transaction it held."""

    deleted: int = 0
    children_deleted: int = 0  # alerts of deleted events
    files_queued: int = 0
    batches: int = 0
    retries: int = 0
    longest_transaction_ms: float = 0.0

    def add_batch(self, deleted: int, seconds: float, children: int = 0, queued: int = 0) -> None:
        self.deleted += deleted
        self.children_deleted += children
        self.files_queued += queued
        self.batches += 1
        self.longest_transaction_ms = max(self.longest_transaction_ms, seconds * 1000)

    def add_overrun(self, seconds: float) -> None:
        """A batch cut off at its time cap and rolled back: repeated smaller, and its locks were held."""
        self.add_failed_attempt(seconds)

    def add_failed_attempt(self, seconds: float) -> None:
        """A batch rolled back and repeated (cut off, or a transient error): its locks were held too."""
        self.retries += 1
        self.longest_transaction_ms = max(self.longest_transaction_ms, seconds * 1000)

    @classmethod
    def merge(cls, parts: list[RowCounts]) -> RowCounts:
        """The sum of several purges (the policy tables of one step), with the longest transaction of any."""
        total = cls()
        for part in parts:
            total.deleted += part.deleted
            total.children_deleted += part.children_deleted
            total.files_queued += part.files_queued
            total.batches += part.batches
            total.retries += part.retries
            total.longest_transaction_ms = max(total.longest_transaction_ms, part.longest_transaction_ms)
        return total


@dataclass
class FileCounts:
    """Files removed from disk (or that a dry run would remove), by outcome."""

    thumbnails_deleted: int = 0
    images_deleted: int = 0
    clips_deleted: int = 0
    space_reclaimed: int = 0
    files_missing: int = 0
    files_refused: int = 0
    files_failed: int = 0
    files_kept_shared: int = 0
    # Storage root (as configured) that was missing or empty -> its missing files, which stayed queued
    # (not counted in files_missing): an unmounted volume's files are out of sight, not gone.
    roots_offline: dict[str, int] = field(default_factory=dict)
    # Kind (thumbnail, image, clip) -> its files handled but not freed: missing, refused, failed, kept
    # shared or left queued under an offline root. Emergency mode tells by it which volume a pass
    # touched without gaining room there; the totals above stay as reported.
    unfreed_by_kind: dict[str, int] = field(default_factory=dict)
    refused_examples: list[str] = field(default_factory=list)
    failed_examples: list[str] = field(default_factory=list)

    thumbnail_bytes: int = 0
    image_bytes: int = 0
    clip_bytes: int = 0

    def count_deleted(self, kind: str, freed: int) -> None:
        kind = _counted_kind(kind)
        plural = {"thumbnail": "thumbnails", "image": "images", "clip": "clips"}[kind]
        setattr(self, f"{plural}_deleted", getattr(self, f"{plural}_deleted") + 1)
        setattr(self, f"{kind}_bytes", getattr(self, f"{kind}_bytes") + freed)
        self.space_reclaimed += freed

    def count_unfreed(self, kind: str) -> None:
        kind = _counted_kind(kind)
        self.unfreed_by_kind[kind] = self.unfreed_by_kind.get(kind, 0) + 1

    @classmethod
    def merge(cls, parts: list[FileCounts]) -> FileCounts:
        """The sum of the file step's shares."""
        total = cls()
        for part in parts:
            for name, value in vars(part).items():
                if isinstance(value, list):
                    for example in value:
                        total.note(getattr(total, name), example)
                elif isinstance(value, dict):
                    merged = getattr(total, name)
                    for key, n in value.items():
                        merged[key] = merged.get(key, 0) + n
                else:
                    setattr(total, name, getattr(total, name) + value)
        return total

    def note(self, examples: list[str], text: str, keep: int = 20) -> None:
        # Only a handful of examples are kept so memory stays bounded on a run with millions of files.
        if len(examples) < keep:
            examples.append(text)


def _counted_kind(kind: str) -> str:
    return kind if kind in ("thumbnail", "image") else "clip"


@dataclass(frozen=True)
class CleanupStats:
    """The numbers one data_cleanup run reports; field names are the public contract."""

    dry_run: bool
    cutoff: datetime
    log_cutoff: datetime
    events_deleted: int
    alerts_deleted: int
    detections_deleted: int
    gpu_stats_deleted: int
    logs_deleted: int
    thumbnails_deleted: int
    images_deleted: int
    clips_deleted: int
    space_reclaimed: int
    files_missing: int
    files_refused: int
    files_failed: int
    files_kept_shared: int
    db_retries: int
    longest_transaction_ms: float
    duration_seconds: float
    # Every purged table, built-in and declared by the policy file -> rows deleted (dry run: would be).
    rows_deleted_by_table: dict[str, int] = field(default_factory=dict)
    # Every purged table -> the cutoff its rows were deleted at (see `applied_cutoffs`).
    cutoffs_by_table: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> list[str]:
        """Every reported field, in report order."""
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: datetimes as ISO 8601 UTC strings."""
        out = asdict(self)
        out["cutoff"] = self.cutoff.isoformat()
        out["log_cutoff"] = self.log_cutoff.isoformat()
        out["cutoffs_by_table"] = {name: at.isoformat() for name, at in self.cutoffs_by_table.items()}
        out["duration_seconds"] = round(self.duration_seconds, 3)
        out["longest_transaction_ms"] = round(self.longest_transaction_ms, 1)
        return out

    def then(self, later: CleanupStats) -> CleanupStats:
        """This report followed by a later pass of the same run (emergency mode's shorter retentions):
        counts add up, the cutoffs are the later pass's, the longest transaction is either's."""
        counts = {
            f.name: getattr(self, f.name) + getattr(later, f.name)
            for f in fields(self)
            if type(getattr(self, f.name)) is int  # the counts (not dry_run, a bool)
        }
        by_table = dict(self.rows_deleted_by_table)
        for name, deleted in later.rows_deleted_by_table.items():
            by_table[name] = by_table.get(name, 0) + deleted
        return replace(
            self,
            **counts,
            cutoff=later.cutoff,
            log_cutoff=later.log_cutoff,
            cutoffs_by_table=later.cutoffs_by_table,
            longest_transaction_ms=max(self.longest_transaction_ms, later.longest_transaction_ms),
            # A later pass's duration runs from the run's planning too, so it covers the earlier one.
            duration_seconds=max(self.duration_seconds, later.duration_seconds),
            rows_deleted_by_table=by_table,
        )

    @classmethod
    def combine(
        cls,
        *,
        dry_run: bool,
        cutoffs: Mapping[str, datetime],
        detections: RowCounts,
        events: RowCounts,
        gpu_stats: RowCounts,
        logs: RowCounts,
        files: FileCounts,
        duration_seconds: float,
        declared: dict[str, RowCounts] | None = None,
    ) -> CleanupStats:
        """Fold the per-step counts into one report; `cutoffs` as `applied_cutoffs` gives them."""
        by_table = {"detections": detections, "events": events, **(declared or {})}
        by_table |= {"gpu_stats": gpu_stats, "logs": logs}
        steps = tuple(by_table.values())
        return cls(
            dry_run=dry_run,
            cutoff=cutoffs["events"],
            log_cutoff=cutoffs["logs"],
            events_deleted=events.deleted,
            alerts_deleted=events.children_deleted,
            detections_deleted=detections.deleted,
            gpu_stats_deleted=gpu_stats.deleted,
            logs_deleted=logs.deleted,
            thumbnails_deleted=files.thumbnails_deleted,
            images_deleted=files.images_deleted,
            clips_deleted=files.clips_deleted,
            space_reclaimed=files.space_reclaimed,
            files_missing=files.files_missing,
            files_refused=files.files_refused,
            files_failed=files.files_failed,
            files_kept_shared=files.files_kept_shared,
            db_retries=sum(s.retries for s in steps),
            longest_transaction_ms=max(s.longest_transaction_ms for s in steps),
            duration_seconds=duration_seconds,
            rows_deleted_by_table={name: counts.deleted for name, counts in by_table.items()},
            cutoffs_by_table=dict(cutoffs),
        )


def applied_cutoffs(cutoffs: Iterable[tuple[str, str, datetime]]) -> dict[str, datetime]:
    """The cutoff each table's rows go at, from every rule's (table, column, cutoff): on the column of the
    table's first rule, the latest of the rules there (a row goes when any rule says so); a rule on
    another column of the table as `table.column`. `cutoff` reports events', `log_cutoff` logs'."""
    applied: dict[str, datetime] = {}
    first_column: dict[str, str] = {}
    for table, column, cutoff in cutoffs:
        name = table if first_column.setdefault(table, column) == column else f"{table}.{column}"
        applied[name] = max(cutoff, applied.get(name, cutoff))
    return applied
