"""Our runs in the camera system's job tracker: each op's stage, the failure hook, abandoned runs."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from .core.abandoned_jobs import KILLED_OR_LOST, RunOutcome, failed, settle_abandoned, succeeded
from .core.job_status import JobStatusBoard, JobTracker, redacted
from .core.orphans import OrphanStats
from .failed_runs import failure_reason, first_failure, step_failure_reason, tag_failure
from .history import JOB_NAME, SWEEP_REPORT_STEP, dry_run_of, logged_at, run_stats, step_metadata
from .run_processes import ACTIVE_STATUSES, process_alive

# Each op's share of the job's progress bar (from, to) and what the camera system's Jobs page says
# meanwhile. Ops that a multiprocess executor may run side by side only ever push the bar forward.
STAGES: dict[str, tuple[int, int, str]] = {
    "plan_cleanup": (0, 5, "Checking the database and the retention policy"),
    "purge_gpu_stats": (5, 10, "Deleting old GPU statistics"),
    "purge_logs": (10, 15, "Deleting old log lines"),
    "purge_detections": (15, 45, "Deleting old detections"),
    "purge_events": (45, 55, "Deleting old events"),
    "purge_declared_tables": (55, 60, "Deleting old rows of the policy file's tables"),
    "plan_file_chunks": (60, 60, "Deleting the files of deleted rows"),
    "delete_expired_files": (60, 90, "Deleting the files of deleted rows"),
    "report_cleanup": (90, 95, "Recording the statistics"),
    "relieve_disk_pressure": (95, 99, "Freeing disk space"),
    "plan_orphan_sweep": (0, 5, "Checking the storage roots"),
    "scan_orphaned_files": (5, 50, "Looking for files no row references"),
    "delete_orphaned_files": (50, 95, "Deleting orphaned files"),
    "report_orphan_sweep": (95, 99, "Recording the statistics"),
}
# A dry run deletes nothing: its stages say what they really do.
DRY_RUN_MESSAGES = {
    "purge_gpu_stats": "Dry run: counting old GPU statistics",
    "purge_logs": "Dry run: counting old log lines",
    "purge_detections": "Dry run: counting old detections",
    "purge_events": "Dry run: counting old events",
    "purge_declared_tables": "Dry run: counting old rows of the policy file's tables",
    "plan_file_chunks": "Dry run: counting the files of expired rows",
    "delete_expired_files": "Dry run: counting the files of expired rows",
    "relieve_disk_pressure": "Dry run: finishing",
    "delete_orphaned_files": "Dry run: counting orphaned files a real run would delete",
}
CANCELED = "The run was canceled in Dagster."


# One board per run in this process, so a Redis that is down is reported once per run, not once per op.
_BOARDS: dict[tuple[JobTracker, str], JobStatusBoard] = {}
_BOARDS_KEPT = 8
# Files each share of a run's file step has handled, by share: the shares' sum moves the bar.
_FILES_HANDLED: weakref.WeakKeyDictionary[JobStatusBoard, dict[str, int]] = weakref.WeakKeyDictionary()


def _board(
    tracker: JobTracker, instance: dg.DagsterInstance, job_name: str, run_id: str, log: Any
) -> JobStatusBoard:
    if (board := _BOARDS.get((tracker, run_id))) is not None:
        return board
    # Not the run's create_timestamp, hours off on a PostgreSQL instance outside UTC.
    created = logged_at(instance, run_id) or datetime.now(UTC)
    board = JobStatusBoard(tracker, job_name, run_id, created, log.warning)
    while len(_BOARDS) >= _BOARDS_KEPT:
        del _BOARDS[next(iter(_BOARDS))]
    _BOARDS[(tracker, run_id)] = board
    return board


class Stage:
    """One op's part of the run's progress bar."""

    def __init__(self, board: JobStatusBoard, op_name: str, dry_run: bool) -> None:
        self.board = board
        self.low, self.high, message = STAGES[op_name]
        self.message = DRY_RUN_MESSAGES.get(op_name, message) if dry_run else message

    def done(self) -> None:
        """This op's part is done (written at once, not throttled)."""
        self.board.running(self.high, self.message)

    def share(self, done: float) -> None:
        """Move the bar within this op's part: `done` of the op's work is done (0 to 1)."""
        self.board.progress(round(self.low + (self.high - self.low) * done), self.message)

    def files(self, chunk_key: str, queued: int) -> Callable[[int], None]:
        """The file step's bar for one share: the part of all `queued` files that the shares run in this
        process have handled (under a multiprocess executor a share's process knows only its own)."""
        handled = _FILES_HANDLED.setdefault(self.board, {})

        def report(files: int) -> None:
            handled[chunk_key] = files
            if queued > 0:
                self.share(min(1.0, sum(handled.values()) / queued))

        return report


def start_stage(context: dg.OpExecutionContext, tracker: JobTracker) -> Stage:
    """Tell the job tracker this op has started; a run's first op also settles the records of runs of
    either job that ended without finishing theirs."""
    board = _board(tracker, context.instance, context.job_name, context.run_id, context.log)
    stage = Stage(board, context.op_def.name, dry_run_of(dict(context.run_config)))
    if context.op_def.name in ("plan_cleanup", "plan_orphan_sweep"):
        settle_abandoned(tracker, lambda run_id: run_outcome(context.instance, run_id), _settling(board))
        board.pending(stage.message)
    else:
        board.running(stage.low, stage.message)
    return stage


def _settling(board: JobStatusBoard) -> Callable[[Exception], None]:
    """Trouble settling other runs' records: the run's one warning about the job tracker (Redis down fails
    the settling first), but not the board's quiet spell, which would silence this run's own record."""
    where = redacted(board.tracker.url or "")
    return lambda exc: board.warn_once(
        f"could not settle the job tracker's records of earlier runs at {where}: {exc}"
    )


def run_outcome(instance: dg.DagsterInstance, run_id: str) -> RunOutcome | None:
    """How a run ended, as Dagster tells it; None while it is still going or Dagster cannot tell: a run
    this instance does not know may be live in another one (another deployment, the CLI's own
    DAGSTER_HOME) sharing the Redis; its record expires by itself if it is not (UNFINISHED_TTL_S)."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return None
    if run.status in ACTIVE_STATUSES:
        return failed(KILLED_OR_LOST) if process_alive(instance, run) is False else None
    if run.status == dg.DagsterRunStatus.SUCCESS:
        stats = run_stats(instance, run_id) if run.job_name == JOB_NAME else _sweep_stats(instance, run_id)
        return succeeded(stats or None)
    if run.status == dg.DagsterRunStatus.CANCELED:
        return failed(CANCELED)
    if run.status == dg.DagsterRunStatus.FAILURE:
        return failed(_failure_reason(instance, run_id) or KILLED_OR_LOST)
    return None


def _sweep_stats(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    report = step_metadata(instance, run_id, SWEEP_REPORT_STEP)
    return {name: report[name] for name in OrphanStats.__dataclass_fields__ if name in report}


def _failure_reason(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Its first failed step and that step's error, worded as `publish_failure` words it, else the run's
    own failure message (a run failed from outside, e.g. by `blocking_runs`)."""
    if failed := first_failure(instance, run_id):
        return step_failure_reason(*failed)
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records:
        if (event := record.event_log_entry.dagster_event) is not None:
            return event.message
    return None


def finish(stage: Stage, result: Mapping[str, Any], message: str) -> None:
    """The run's last op succeeded: the record becomes `completed` with the run's statistics."""
    stage.board.completed(result, message)


@dg.failure_hook(required_resource_keys={"camera_system"})
def publish_failure(context: dg.HookContext) -> None:
    """A failed op fails the run: its tags say which step and what was committed, and the job tracker's
    record becomes `failed` with the op's message."""
    error = context.op_exception
    reason = failure_reason(context.op.name, getattr(error, "description", None), error)
    try:
        tracker = context.resources.camera_system.job_tracker()
        board = _board(tracker, context.instance, context.job_name, context.run_id, context.log)
        # An emergency run's failure carries the total of its passes, which the record keeps too.
        total = (getattr(error, "metadata", None) or {}).get("run_total")
        board.failed(reason, getattr(total, "value", None))
    except Exception as exc:  # bad settings already fail the run with their own message
        context.log.warning(f"could not publish the failure to the job tracker: {exc}")
    try:
        tag_failure(context.instance, context.run_id)
    except Exception as exc:  # the run has failed already; its tags are a courtesy
        context.log.warning(f"could not tag the failed run with its step and counts: {exc}")
