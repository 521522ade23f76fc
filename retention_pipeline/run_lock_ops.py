"""How an op holds the database's run lock: which executor shares it between steps, and its failures."""

from typing import Any

import dagster as dg
from sqlalchemy.engine import Engine

from .core.lock import RunLockBusy, RunLockLost
from .resources import CameraSystemResource
from .run_processes import record_process
from .tags import RUN_LOCK_BUSY

# The job's own executor, and the one `execute_in_process` (the CLI, tests) puts in its place.
IN_PROCESS_EXECUTORS = {"in_process", "execute_in_process_executor"}


def lock_busy(exc: RunLockBusy) -> dg.Failure:
    """The failure of a step refused the database's run lock, marked so the CLI exits EXIT_BUSY."""
    return dg.Failure(description=str(exc), metadata={RUN_LOCK_BUSY: True}, allow_retries=False)


def lock_lost(exc: RunLockLost, metadata: dict[str, Any] | None = None) -> dg.Failure:
    """The failure of a step whose run lost the database's run lock; a retry would find it lost again.
    `metadata`: what the step committed before."""
    return dg.Failure(description=str(exc), metadata=metadata, allow_retries=False)


def runs_in_process(context: dg.OpExecutionContext) -> bool:
    """Whether every step of this run runs in the run worker, sharing one resource (and so one lock)."""
    executor = context.job_def.executor_def.name
    if executor == dg.multi_or_in_process_executor.name:
        # The run config chooses; left out, it is multiprocess.
        run_config: dict[str, Any] = dict(context.run_config)
        return "in_process" in ((run_config.get("execution") or {}).get("config") or {})
    return executor in IN_PROCESS_EXECUTORS


def claimed_engine(
    context: dg.OpExecutionContext, camera_system: CameraSystemResource, beside_the_chain: bool = False
) -> Engine:
    """The camera database, with this run holding its run lock and tagged with its process.

    Every op that deletes or reads what it deletes asks, not only plan_cleanup: a re-execution from
    failure runs only the failed step and those after it, and must hold the lock and note its process
    whichever step that is. `beside_the_chain`: an op a multiprocess executor may run beside the chain
    (GPU stats, logs, the file step); there it would be refused the lock its own run holds in another
    step process, so it goes without (design.md, "One run at a time").
    """
    in_process = runs_in_process(context)
    if beside_the_chain and not in_process:
        return camera_system.engine()
    try:
        # Only the in-process executor runs every step in the run worker, whose pid lives as long as the
        # run; a step process of another executor exits while its run goes on, and its pid would make
        # the run look dead to `blocking_runs`.
        if camera_system.claim_exclusive_run() and in_process:
            record_process(context.instance, context.run_id)
    except RunLockBusy as exc:
        raise lock_busy(exc) from None
    except RunLockLost as exc:
        raise lock_lost(exc) from None
    return camera_system.engine()
