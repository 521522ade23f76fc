"""One function per cleanup step, each honouring the plan's dry_run; the Dagster ops call these."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from . import purge
from .db import named, table_names
from .files import StorageRoots
from .plan import CleanupPlan
from .policy import DeclaredRule, policy_problems, registry_with
from .privileges import privilege_problems
from .purge import drain_file_queue, preview_file_deletions, queue_ranges
from .purge.file_queue import FilesHandled
from .purge.offline_roots import OfflineRoots
from .queries import expiring, path_checks, queue
from .references import blocking_references_message, references_to_parents, with_cascades
from .schema import ensure_bookkeeping
from .stats import CleanupStats, FileCounts, RowCounts
from .tables import Registry

Progress = Callable[[str], None]


class SchemaError(RuntimeError):
    """The database lacks a table or column retention needs."""


def schema_problems(engine: Engine, registry: Registry | None = None) -> list[str]:
    """The tables and columns retention needs that the database lacks."""
    inspector = inspect(engine)
    tables = table_names(engine, inspector.get_table_names())
    problems = []
    for table, needed in (registry or Registry()).required_columns().items():
        if (listed := tables.get(named(engine, table))) is None:
            problems.append(f"table {table!r} is missing")
            continue
        have = {column["name"] for column in inspector.get_columns(listed)}
        if missing := needed - have:
            problems.append(f"table {table!r} lacks column(s) {', '.join(sorted(missing))}")
    return problems


def prepare_database(
    engine: Engine, policy: tuple[DeclaredRule, ...] = (), dry_run: bool = False, delete_images: bool = True
) -> None:
    """Check the camera tables retention needs (and the policy file's) and that nothing would refuse
    their deletes (for a real run, the role's rights too), then create the bookkeeping queue if
    missing."""
    if problems := policy_problems(engine, policy):
        raise SchemaError("; ".join(problems) + ". Nothing was deleted.")
    registry = registry_with(policy)
    if problems := schema_problems(engine, registry):
        raise SchemaError(
            f"{engine.url.render_as_string(hide_password=True)} is not a camera system database: "
            + "; ".join(problems)
            + ". Check DATABASE_URL."
        )
    # Refused before the first batch: a NO ACTION reference found half-way would leave a run that stopped
    # with part of its batches committed.
    if blocked := blocking_references_message(references_to_parents(engine, registry.names)):
        raise SchemaError(f"{engine.url.render_as_string(hide_password=True)}: {blocked}")
    # Refused here, not at the file step: by then the rows would be gone and their files stuck queued.
    if lacking := json_functions_problem(engine):
        raise SchemaError(f"{lacking}. Nothing was deleted.")
    # The same, and doctor's, words for a right missing; a dry run deletes nothing and is let run.
    if not dry_run and (
        lacking_rights := privilege_problems(
            engine, registry, set(inspect(engine).get_table_names()), delete_images
        )
    ):
        raise SchemaError("; ".join(lacking_rights) + ". Nothing was deleted.")
    ensure_bookkeeping(engine)


def json_functions_problem(engine: Engine) -> str | None:
    """SQLite: why the file step's reference check cannot run on this Python's SQLite library, or None."""
    if engine.dialect.name != "sqlite":
        return None
    try:
        with engine.connect() as conn:
            conn.execute(path_checks.probe_json_functions())
    except OperationalError:
        return (
            f"this Python's SQLite library ({sqlite3.sqlite_version}) has no JSON functions, which the"
            " reference check of the file step needs (built into SQLite since 3.38): run the pipeline"
            " with a Python whose sqlite3 module is newer"
        )
    return None


def _advising_indexes(engine: Engine, parent: str, run: Callable[[], RowCounts]) -> RowCounts:
    """Run a purge; if even one-row batches overran, name the unindexed foreign keys that make a row slow."""
    try:
        return run()
    except purge.BatchTooSlow as exc:
        slow = [r for r in references_to_parents(engine, [parent]) if r.parent == parent and r.slows_deletes]
        if not slow:
            raise
        advice = " ".join(statement for r in slow for statement in r.index_advice(engine))
        raise purge.BatchTooSlow(
            f"{exc} Each deleted {parent} row makes the database scan every row of"
            f" {', '.join(r.name for r in slow)}, whose foreign key has no index: {advice}",
            exc.counts,
        ) from None


def clean_table(
    engine: Engine,
    plan: CleanupPlan,
    table: str,
    progress: Progress,
    share: purge.Share | None = None,
    committed: RowCounts | None = None,
) -> RowCounts:
    """Delete (or count) the expired rows of one retention table, their children and their files' queue
    entries; for events, `children_deleted` counts their alerts. `committed`: the counts a real purge
    fills, batch by batch, so that they hold what it deleted even when it fails."""
    if plan.dry_run:
        expiry = with_cascades(engine, plan.expiry)
        counts = RowCounts(deleted=purge.count_rows(engine, expiring.count_expired(expiry, table)))
        if table == "events":
            counts.children_deleted = purge.count_rows(
                engine, expiring.count_alerts_of_expired_events(expiry)
            )
        return counts
    return _advising_indexes(
        engine,
        table,
        lambda: purge.purge_table(
            engine,
            table,
            plan.expiry,
            plan.batch_size,
            progress,
            plan.progress_interval_seconds,
            plan.transaction_target_s,
            plan.delete_images,
            share,
            committed,
        ),
    )


@dataclass(frozen=True)
class FileChunk:
    """A share of the file step: a range of the durable queue, or the whole dry-run preview."""

    after_id: int = 0
    last_id: int | None = None  # None: to the end of the queue
    preview: bool = False
    # Files queued in all the shares when they were planned (0: not known), which the progress bar spans.
    queued: int = 0

    @property
    def key(self) -> str:
        """A name for Dagster's mapping key."""
        return "preview" if self.preview else f"ids_{self.after_id}_{self.last_id or 'end'}"


# Files per share when the shares run in parallel and the run's file_chunk_size does not say.
PARALLEL_FILE_CHUNK = 50_000


def file_chunks(engine: Engine, plan: CleanupPlan, parallel: bool) -> Iterator[FileChunk]:
    """How the file step splits: queue ranges of the plan's file_chunk_size, or one preview for a dry run.
    Without a size, shares that run one after another (`parallel` false) are one: each share starts its
    drain's overlap of reference checks and unlinks again, which split shares pay in files/s and gain
    nothing for (the drain's memory is bounded by its own chunks, and a crash repeats none of it)."""
    if plan.dry_run:
        yield FileChunk(preview=True)
        return
    size = plan.file_chunk_size or (PARALLEL_FILE_CHUNK if parallel else None)
    ranges = list(queue_ranges(engine, size))
    with engine.connect() as conn:  # the ranges run to the end of the queue: every queued file is in one
        queued = int(conn.execute(queue.count_queued_files()).scalar() or 0)
    for after_id, last_id in ranges:
        yield FileChunk(after_id, last_id, queued=queued)


def clean_files(
    engine: Engine,
    plan: CleanupPlan,
    progress: Progress,
    chunk: FileChunk | None = None,
    files_handled: FilesHandled | None = None,
) -> FileCounts:
    """Delete the files of deleted rows (dry run: of the rows that would be deleted); one chunk or all.
    `files_handled` is told how many of the chunk's files are handled so far."""
    roots = StorageRoots.from_dirs(plan.media_root, plan.storage_dirs)
    offline = OfflineRoots.during(roots, plan.offline_roots, plan.root_devices, plan.mounted_roots)
    if plan.dry_run:
        return preview_file_deletions(
            engine, roots, plan.expiry, plan.delete_images, progress, plan.progress_interval_seconds, offline
        )
    chunk = chunk or FileChunk()
    return drain_file_queue(
        engine,
        roots,
        progress,
        chunk.after_id,
        chunk.last_id,
        plan.progress_interval_seconds,
        plan.registry,
        files_handled,
        offline,
    )


def run_cleanup(engine: Engine, plan: CleanupPlan, progress: Progress | None = None) -> CleanupStats:
    """The whole data_cleanup in the job's order, without Dagster (tests, benchmark)."""
    return cleanup_pass(engine, plan, progress)[0]


def cleanup_pass(
    engine: Engine,
    plan: CleanupPlan,
    progress: Progress | None = None,
    counted: Callable[[tuple[CleanupStats, FileCounts]], None] | None = None,
) -> tuple[CleanupStats, FileCounts]:
    """`run_cleanup`, with the file step's own counts (bytes by kind): one emergency pass. `counted` is
    given them when the pass ends, also when it fails or is interrupted part-way: then what its steps had
    committed (rows of the batches committed, files of the chunks handled), which is gone all the same."""
    progress = progress or (lambda _message: None)
    # Every purge before the file step, as in the job: a policy file may give gpu_stats or logs media
    # columns, whose files a drain that ran first would leave queued until the next run.
    order = ["detections", "events", *(entry.name for entry in plan.registry.declared), "gpu_stats", "logs"]
    rows = {table: RowCounts() for table in order}
    files = FileCounts()

    def so_far() -> tuple[CleanupStats, FileCounts]:
        return CleanupStats.combine(
            dry_run=plan.dry_run,
            cutoffs=plan.applied_cutoffs,
            detections=rows["detections"],
            events=rows["events"],
            gpu_stats=rows["gpu_stats"],
            logs=rows["logs"],
            declared={entry.name: rows[entry.name] for entry in plan.registry.declared},
            files=files,
            duration_seconds=(datetime.now(UTC) - plan.planned_at).total_seconds(),
        ), files

    try:
        for table in order:
            rows[table] = clean_table(engine, plan, table, progress, committed=rows[table])
        files = clean_files(engine, plan, progress)
    except BaseException as exc:
        if isinstance(exc, purge.FilesFailed | purge.Interrupted):
            files = exc.counts
        if counted is not None:
            counted(so_far())
        raise
    result = so_far()
    if counted is not None:
        counted(result)
    return result
