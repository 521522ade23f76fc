"""A step interrupted (the UI's Terminate, SIGTERM, Ctrl-C) after it had deleted rows or files: its figures
are recorded beside the interrupt, which goes on to Dagster unchanged, so the run ends as an interrupted run
always has."""

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dagster as dg
from dagster._core.events import EngineEventData
from dagster._utils.interrupts import capture_interrupts

from .core.purge import Interrupted
from .failed_runs import tag_failure
from .history import dry_run_of
from .tags import INTERRUPTED_STEP

INTERRUPTED_EVENT = "retention step interrupted"


class Known:
    """What an op knows it has deleted: a row purge's `committed`, filled batch by batch, from the start;
    else `counts`, set once its core call has returned."""

    def __init__(self, counts: Any = None) -> None:
        self.counts = counts


@contextlib.contextmanager
def counted_if_interrupted(
    context: dg.OpExecutionContext, figures: Callable[[Any], Mapping[str, Any]], counts: Any = None
) -> Iterator[Known]:
    """Record `figures(...)` if the op is interrupted: of the counts an `Interrupted` from the file drain
    carries, else of the op's `Known.counts` as they are at the interrupt (`counts` to begin with: a row
    purge's, which its loop fills in place); then re-raise the interrupt itself.

    Turned into a `Failure`, the interrupt would change how the run ends (a step failure where Dagster says
    the run was interrupted, a retry of the run where there was none, the in-process executor going on to
    the next step); re-raised, the run is CANCELED when terminated, failed as interrupted otherwise.
    """
    known = Known(counts)
    try:
        yield known
    except Interrupted as exc:
        _record(context, figures(exc.counts))
        raise exc.interrupt from None
    except BaseException as exc:
        if not isinstance(exc, Exception) and known.counts is not None:
            _record(context, figures(known.counts))
        raise


def _record(context: dg.OpExecutionContext, figures: Mapping[str, Any]) -> None:
    """An engine event with the step's figures, which `committed_counts` (the tags, `status`) reads, and the
    run's tags as the failure hook would set them: Dagster runs no hook for an interrupted step."""
    step = context.get_step_execution_context().step.key
    # A second interrupt (Ctrl-C twice) waits: the first one is raised after this anyway.
    with capture_interrupts():
        try:
            # A dry run's figures are what it had counted: nothing was deleted.
            done = (
                "had counted (dry run)" if dry_run_of(dict(context.dagster_run.run_config)) else "had deleted"
            )
            context.instance.report_engine_event(
                f"{INTERRUPTED_EVENT}: {step} {done} {dict(figures)}",
                context.dagster_run,
                EngineEventData(metadata={INTERRUPTED_STEP: step, **figures}),
                step_key=step,
            )
            tag_failure(context.instance, context.run_id)
        except Exception as exc:  # the interrupt matters more than its figures
            with contextlib.suppress(Exception):
                context.log.warning(f"could not record what the interrupted step had deleted: {exc}")
