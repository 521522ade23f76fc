"""Our runs in the camera system's job tracker: each op's stage, the failure hook, abandoned runs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from .core.job_status import JobStatusBoard, JobTracker, fail_abandoned
from .history import ACTIVE_STATUSES, tag_failure

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


# One board per run in this process, so a Redis that is down is reported once per run, not once per op.
_BOARDS: dict[tuple[JobTracker, str], JobStatusBoard] = {}
_BOARDS_KEPT = 8


def _board(
    tracker: JobTracker, instance: dg.DagsterInstance, job_name: str, run_id: str, log: Any
) -> JobStatusBoard:
    if (board := _BOARDS.get((tracker, run_id))) is not None:
        return board
    record = instance.get_run_record_by_id(run_id)
    created = record.create_timestamp if record else datetime.now(UTC)
    board = JobStatusBoard(tracker, job_name, run_id, created.astimezone(UTC), log.warning)
    while len(_BOARDS) >= _BOARDS_KEPT:
        del _BOARDS[next(iter(_BOARDS))]
    _BOARDS[(tracker, run_id)] = board
    return board


class Stage:
    """One op's part of the run's progress bar."""

    def __init__(self, board: JobStatusBoard, op_name: str) -> None:
        self.board = board
        self.low, self.high, self.message = STAGES[op_name]

    def done(self) -> None:
        """This op's part is done (written at once, not throttled)."""
        self.board.running(self.high, self.message)

    def share(self, done: float) -> None:
        """Move the bar within this op's part: `done` of the op's work is done (0 to 1)."""
        self.board.progress(round(self.low + (self.high - self.low) * done), self.message)


def start_stage(context: dg.OpExecutionContext, tracker: JobTracker) -> Stage:
    """Tell the job tracker this op has started; a run's first op also marks abandoned runs failed."""
    board = _board(tracker, context.instance, context.job_name, context.run_id, context.log)
    op_name = context.op_def.name
    if op_name in ("plan_cleanup", "plan_orphan_sweep"):
        fail_abandoned(
            tracker, context.job_name, lambda run_id: _still_running(context, run_id), board.trouble
        )
        board.pending(STAGES[op_name][2])
    else:
        board.running(STAGES[op_name][0], STAGES[op_name][2])
    return Stage(board, op_name)


def _still_running(context: dg.OpExecutionContext, run_id: str) -> bool:
    run = context.instance.get_run_by_id(run_id)
    return run is not None and run.status in ACTIVE_STATUSES


def finish(stage: Stage, result: Mapping[str, Any], message: str) -> None:
    """The run's last op succeeded: the record becomes `completed` with the run's statistics."""
    stage.board.completed(result, message)


@dg.failure_hook(required_resource_keys={"camera_system"})
def publish_failure(context: dg.HookContext) -> None:
    """A failed op fails the run: its tags say which step and what was committed, and the job tracker's
    record becomes `failed` with the op's message."""
    error = context.op_exception
    description = getattr(error, "description", None) or str(error) or type(error).__name__
    try:
        tracker = context.resources.camera_system.settings().job_tracker
        board = _board(tracker, context.instance, context.job_name, context.run_id, context.log)
        board.failed(f"{context.op.name} failed: {description}")
    except Exception as exc:  # bad settings already fail the run with their own message
        context.log.warning(f"could not publish the failure to the job tracker: {exc}")
    try:
        failure_metadata = {k: v.value for k, v in (getattr(error, "metadata", None) or {}).items()}
        tag_failure(context.instance, context.run_id, context.op.name, failure_metadata)
    except Exception as exc:  # the run has failed already; its tags are a courtesy
        context.log.warning(f"could not tag the failed run with its step and counts: {exc}")
