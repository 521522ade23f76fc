"""A step interrupted (the UI's Terminate, SIGTERM, Ctrl-C) after it had deleted rows or files: its figures
are counted, and the run still stops as an interrupted run does."""

from typing import Any

import dagster as dg

from .core.purge import Interrupted

# Runs of this process one of whose steps was interrupted (a run worker runs one run; a few ids at most).
_INTERRUPTED: set[str] = set()


def counted_interruption(
    context: dg.OpExecutionContext, exc: Interrupted[Any], figures: dict[str, Any]
) -> dg.Failure:
    """The failure an interrupted step raises in place of the interrupt, with `figures`: what it had
    deleted. Dagster records an interrupt's step failure without metadata, a Failure's with it, which
    `committed_counts` (the run's tags, `status`) reads, and runs the failure hook on it.

    A Failure does not stop the run as the interrupt would: a terminated run is CANCELING, which ends it
    CANCELED all the same, and a multiprocess executor stops launching steps itself on the signal; but the
    in-process executor would go on to the next step (another file share, a purge beside the chain), so
    this process remembers the run and `stop_if_interrupted` interrupts that step at its start.
    """
    _INTERRUPTED.add(context.run_id)
    return dg.Failure(
        description=f"interrupted ({type(exc.interrupt).__name__}): its figures are what it had deleted",
        metadata=figures,
        allow_retries=False,
    )


def stop_if_interrupted(context: dg.OpExecutionContext) -> None:
    """Interrupt a step of a run whose earlier step this process saw interrupted (see counted_interruption):
    Dagster then ends the run as the interrupted run it is."""
    if context.run_id in _INTERRUPTED:
        raise dg.DagsterExecutionInterruptedError(f"an earlier step of run {context.run_id} was interrupted")
