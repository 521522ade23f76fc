"""One function per cleanup step, each honouring the plan's dry_run; the Dagster ops call these."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Table, inspect
from sqlalchemy.engine import Engine

from . import purge, queries
from .files import StorageRoots
from .plan import CleanupPlan
from .references import blocking_references_message, references_to_parents
from .schema import ensure_bookkeeping, gpu_stats, logs
from .stats import CleanupStats, FileCounts, RowCounts
from .sweep import drain_file_queue, preview_file_deletions, queue_ranges

Progress = Callable[[str], None]

# The columns retention reads or filters on; the camera system's tables may hold many more.
REQUIRED_COLUMNS = {
    "events": {"id", "started_at", "clip_path"},
    "detections": {"id", "file_path", "thumbnail_path", "detected_at"},
    "event_detections": {"event_id", "detection_id"},
    "alerts": {"id", "event_id"},
    "gpu_stats": {"id", "recorded_at"},
    "logs": {"id", "timestamp"},
}


class SchemaError(RuntimeError):
    """The database lacks a table or column retention needs."""


def schema_problems(engine: Engine) -> list[str]:
    """The tables and columns retention needs that the database lacks."""
    inspector = inspect(engine)
    tables = set(inspector.get_table_names())
    problems = []
    for table, needed in REQUIRED_COLUMNS.items():
        if table not in tables:
            problems.append(f"table {table!r} is missing")
            continue
        have = {column["name"] for column in inspector.get_columns(table)}
        if missing := needed - have:
            problems.append(f"table {table!r} lacks column(s) {', '.join(sorted(missing))}")
    return problems


def prepare_database(engine: Engine) -> None:
    """Check the camera tables retention needs and that nothing would refuse their deletes, then create
    the bookkeeping queue if missing."""
    if problems := schema_problems(engine):
        raise SchemaError(
            f"{engine.url.render_as_string(hide_password=True)} is not a camera system database: "
            + "; ".join(problems)
            + ". Check DATABASE_URL."
        )
    # Refused before the first batch: a NO ACTION reference found half-way would leave a run that stopped
    # with part of its batches committed.
    if blocked := blocking_references_message(references_to_parents(engine)):
        raise SchemaError(f"{engine.url.render_as_string(hide_password=True)}: {blocked}")
    ensure_bookkeeping(engine)


def _advising_indexes(engine: Engine, parent: str, run: Callable[[], RowCounts]) -> RowCounts:
    """Run a purge; if even one-row batches overran, name the unindexed foreign keys that make a row slow."""
    try:
        return run()
    except purge.BatchTooSlow as exc:
        slow = [r for r in references_to_parents(engine) if r.parent == parent and r.slows_deletes]
        if not slow:
            raise
        advice = " ".join(r.index_advice(engine.dialect.name) for r in slow)
        raise purge.BatchTooSlow(
            f"{exc} Each deleted {parent} row makes the database scan every row of"
            f" {', '.join(r.table for r in slow)}, whose foreign key has no index: {advice}",
            exc.counts,
        ) from None


def clean_detections(engine: Engine, plan: CleanupPlan, progress: Progress) -> RowCounts:
    """Delete (or count) expired detections, queueing their files."""
    if plan.dry_run:
        return RowCounts(deleted=purge.count_rows(engine, queries.count_expired_detections(plan.cutoff)))
    return _advising_indexes(
        engine,
        "detections",
        lambda: purge.purge_detections(
            engine,
            plan.cutoff,
            plan.batch_size,
            plan.delete_images,
            progress,
            plan.progress_interval_seconds,
            plan.transaction_target_s,
        ),
    )


def clean_events(engine: Engine, plan: CleanupPlan, progress: Progress) -> RowCounts:
    """Delete (or count) expired events with their alerts and links, queueing their clips."""
    if plan.dry_run:
        return RowCounts(
            deleted=purge.count_rows(engine, queries.count_expired_events(plan.cutoff)),
            children_deleted=purge.count_rows(engine, queries.count_alerts_of_expired_events(plan.cutoff)),
        )
    return _advising_indexes(
        engine,
        "events",
        lambda: purge.purge_events(
            engine,
            plan.cutoff,
            plan.batch_size,
            progress,
            plan.progress_interval_seconds,
            plan.transaction_target_s,
        ),
    )


def clean_gpu_stats(engine: Engine, plan: CleanupPlan, progress: Progress) -> RowCounts:
    """Delete (or count) GPU statistics older than the data cutoff."""
    return _clean_table(engine, plan, gpu_stats, "recorded_at", plan.cutoff, progress)


def clean_logs(engine: Engine, plan: CleanupPlan, progress: Progress) -> RowCounts:
    """Delete (or count) log lines older than the log cutoff."""
    return _clean_table(engine, plan, logs, "timestamp", plan.log_cutoff, progress)


def _clean_table(
    engine: Engine,
    plan: CleanupPlan,
    table: Table,
    column: str,
    cutoff: datetime,
    progress: Progress,
) -> RowCounts:
    if plan.dry_run:
        return RowCounts(deleted=purge.count_rows(engine, queries.count_expired_rows(table, column, cutoff)))
    return purge.purge_rows(
        engine,
        table,
        column,
        cutoff,
        plan.batch_size,
        progress,
        plan.progress_interval_seconds,
        plan.transaction_target_s,
    )


@dataclass(frozen=True)
class FileChunk:
    """A share of the file step: a range of the durable queue, or the whole dry-run preview."""

    after_id: int = 0
    last_id: int | None = None  # None: to the end of the queue
    preview: bool = False

    @property
    def key(self) -> str:
        """A name for Dagster's mapping key."""
        return "preview" if self.preview else f"ids_{self.after_id}_{self.last_id or 'end'}"


def file_chunks(engine: Engine, plan: CleanupPlan, size: int) -> Iterator[FileChunk]:
    """How the file step splits: queue ranges of `size` files, or one preview for a dry run."""
    if plan.dry_run:
        yield FileChunk(preview=True)
        return
    for after_id, last_id in queue_ranges(engine, size):
        yield FileChunk(after_id, last_id)


def clean_files(
    engine: Engine, plan: CleanupPlan, progress: Progress, chunk: FileChunk | None = None
) -> FileCounts:
    """Delete the files of deleted rows (dry run: of the rows that would be deleted); one chunk or all."""
    roots = StorageRoots.from_dirs(plan.media_root, plan.storage_dirs)
    if plan.dry_run:
        return preview_file_deletions(
            engine, roots, plan.cutoff, plan.delete_images, progress, plan.progress_interval_seconds
        )
    chunk = chunk or FileChunk()
    return drain_file_queue(
        engine, roots, progress, chunk.after_id, chunk.last_id, plan.progress_interval_seconds
    )


def run_cleanup(engine: Engine, plan: CleanupPlan, progress: Progress | None = None) -> CleanupStats:
    """The whole data_cleanup in the job's order, without Dagster (tests, benchmark)."""
    progress = progress or (lambda _message: None)
    detections = clean_detections(engine, plan, progress)
    events = clean_events(engine, plan, progress)
    files = clean_files(engine, plan, progress)
    return CleanupStats.combine(
        dry_run=plan.dry_run,
        cutoff=plan.cutoff,
        log_cutoff=plan.log_cutoff,
        detections=detections,
        events=events,
        gpu_stats=clean_gpu_stats(engine, plan, progress),
        logs=clean_logs(engine, plan, progress),
        files=files,
        duration_seconds=(datetime.now(UTC) - plan.planned_at).total_seconds(),
    )
