"""The file step's thin ops: split the durable queue into shares, delete one share's files."""

from collections.abc import Iterator

import dagster as dg

from .core import cleanup
from .core.lock import RunLockLost
from .core.plan import CleanupPlan
from .core.purge import FilesFailed, offline_warnings
from .core.stats import FileCounts, RowCounts
from .failed_runs import error_reason
from .interruptions import counted_if_interrupted
from .ops import op_stage
from .resources import CameraSystemResource
from .run_lock_ops import claimed_engine, lock_lost, runs_in_process
from .tags import FILE_FIGURES


@dg.op(
    description="Split the file step into shares of the durable queue (one preview share for a dry run).",
    out=dg.DynamicOut(cleanup.FileChunk),
)
def plan_file_chunks(
    context: dg.OpExecutionContext,
    plan: CleanupPlan,
    detections: RowCounts,
    declared: dict[str, RowCounts],
    gpu_stats: RowCounts,
    logs: RowCounts,
    camera_system: CameraSystemResource,
) -> Iterator[dg.DynamicOutput[cleanup.FileChunk]]:
    # Runs after every row purge that can queue files (a policy may give gpu_stats or logs files too), so
    # every file of every deleted row is queued; on a parallel executor none is left for the next run.
    engine = claimed_engine(context, camera_system, beside_the_chain=True)
    op_stage(context, camera_system)
    parallel = not runs_in_process(context)
    for chunk in cleanup.file_chunks(engine, plan, parallel):
        yield dg.DynamicOutput(chunk, mapping_key=chunk.key)


@dg.op(description="Delete one share of queued files that no surviving row references.")
def delete_expired_files(
    context: dg.OpExecutionContext,
    plan: CleanupPlan,
    chunk: cleanup.FileChunk,
    camera_system: CameraSystemResource,
) -> FileCounts:
    engine = claimed_engine(context, camera_system, beside_the_chain=True)
    stage = op_stage(context, camera_system)
    # Interrupted in the drain or after it (its warnings are writes to the event log, where an interrupt
    # may land), the share records the files it had deleted.
    with counted_if_interrupted(context, _file_figures) as known:
        try:
            counts = cleanup.clean_files(
                engine, plan, context.log.info, chunk, stage.files(chunk.key, chunk.queued)
            )
        except FilesFailed as exc:
            # The chunks handled before the failure deleted their files: the run's tags and `status` count
            # them. The error stays the failure's cause; a lost lock is not retried, as everywhere.
            figures = _file_figures(exc.counts)
            if isinstance(exc, RunLockLost):
                raise lock_lost(exc, figures) from exc.error
            raise dg.Failure(description=error_reason(exc.error), metadata=figures) from exc.error
        except RunLockLost as exc:
            raise lock_lost(exc) from None
        known.counts = counts
        for path in counts.refused_examples:
            context.log.warning(f"refused to delete a path outside the storage roots: {path!r}")
        for path in counts.failed_examples:
            context.log.warning(f"could not delete {path!r} (permissions, or not a regular file)")
        for warning in offline_warnings(counts, plan.dry_run):
            context.log.warning(warning)
        # What this share deleted, for a run that fails later: its tags and `status` add the shares up.
        context.add_output_metadata(_file_figures(counts))
    return counts


def _file_figures(counts: FileCounts) -> dict[str, int]:
    return {name: getattr(counts, name) for name in FILE_FIGURES}
