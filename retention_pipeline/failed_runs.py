"""What a failed run says of itself: its failing step and why, and the counts its steps committed."""

from __future__ import annotations

import traceback

import dagster as dg
from dagster._core.execution.plan.objects import StepFailureData
from dagster._core.storage.legacy_storage import LegacyRunStorage
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
from dagster._serdes import serialize_value
from dagster_shared.error import SerializableErrorInfo
from sqlalchemy import and_

from .history import PRESSURE_STEP, committed_counts, dry_run_of, interrupted_steps
from .tags import FAILED_STEP_TAG, partial_headline


def error_reason(error: BaseException | SerializableErrorInfo | None) -> str:
    """What went wrong, in the error's own words: Dagster wraps an op's exception in "Error occurred while
    executing op …", which says nothing; the exception it wraps (its cause) does."""
    if isinstance(error, BaseException):
        error = SerializableErrorInfo.from_traceback(traceback.TracebackException.from_exception(error))
    if error is None:
        return "an unknown error"
    while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    message = error.message.strip()
    # The message starts with the exception's qualified class name, noise beside its own words.
    head, _, rest = message.partition(": ")
    own_words = rest.strip() if head.rsplit(".", 1)[-1] == error.cls_name else message
    # SQLAlchemy appends the statement and its parameters (long, and in the run's event log anyway).
    own_words = own_words.split("\n[SQL: ", 1)[0].strip()
    return own_words or error.cls_name or "an unknown error"


def failure_reason(
    step: str, description: str | None, error: BaseException | SerializableErrorInfo | None
) -> str:
    """One failed step as the job tracker, the CLI and the next run's settling all word it: a `Failure`'s
    description, else the cause of the error."""
    return f"{step} failed: {description or error_reason(error)}"


def step_failure_reason(step: str, data: StepFailureData) -> str:
    user = data.user_failure_data
    return failure_reason(step, user.description if user else None, data.error)


def first_failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str, StepFailureData] | None:
    """The first step this run saw fail (its own, not a parent run's), with its failure."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.step_key:
            return event.step_key, event.step_failure_data
    return None


def failed_step(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The first step this run saw fail, or interrupted: an interrupted step records what it had deleted
    (interruptions.py) before Dagster logs its failure, and its tags are due from then on."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1).records
    failures = [
        (r.storage_id, e.step_key) for r in records if (e := r.event_log_entry.dagster_event) and e.step_key
    ]
    firsts = failures[:1] + [
        (storage_id, step) for storage_id, step, _ in interrupted_steps(instance, run_id)[:1]
    ]
    return min(firsts)[1] if firsts else None


def tag_failure(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Tag a failed run with its first failed (or interrupted) step and the counts every step has committed
    so far (the failing ones' from their `Failure` metadata); returns the tags ({} if no step has failed)."""
    failed = failed_step(instance, run_id)
    run = instance.get_run_by_id(run_id)
    if failed is None or run is None:
        return {}
    # relieve_disk_pressure tags the total of every pass itself, even when it fails, over report_cleanup's
    # tags: the steps' counts would put back the figures from before the emergency passes.
    counts = {} if failed == PRESSURE_STEP else committed_counts(instance, run_id)
    tags = {**partial_headline(dry_run_of(dict(run.run_config)), counts), FAILED_STEP_TAG: failed}
    instance.add_run_tags(run_id, tags)
    return tags


@dg.success_hook
def retag_failed_run(context: dg.HookContext) -> None:
    """A step that succeeds in a run where another one failed (or was interrupted): the run's tags gain
    what it committed (ops that do not depend on the failed step still run, after the failure hook tagged
    the run). In a run with no failure, a `failed_step` tag copied from the parent run (a re-execution) is
    dropped."""
    try:
        if failed_step(context.instance, context.run_id) is not None:
            tag_failure(context.instance, context.run_id)
        else:
            drop_run_tag(context.instance, context.run_id, FAILED_STEP_TAG)
    except Exception as exc:  # the tags are a courtesy; the step has succeeded
        context.log.warning(f"could not update the run's tags after a failed step: {exc}")


def drop_run_tag(instance: dg.DagsterInstance, run_id: str, key: str) -> None:
    """Remove one tag from a run. Dagster has only `add_run_tags`; this does what it does (the run's
    serialized body and the tags table) with the key taken out. Storage other than SQL keeps the tag,
    which `status` then ignores for a successful run."""
    run = instance.get_run_by_id(run_id)
    if run is None or key not in run.tags:
        return
    storage = instance.run_storage
    if isinstance(storage, LegacyRunStorage):
        storage = storage._storage.run_storage
    if not isinstance(storage, SqlRunStorage):
        return
    kept = {name: value for name, value in run.tags.items() if name != key}
    with storage.connect() as conn:
        conn.execute(
            RunsTable.update()
            .where(RunsTable.c.run_id == run_id)
            .values(run_body=serialize_value(run.with_tags(kept)))
        )
        conn.execute(
            RunTagsTable.delete().where(and_(RunTagsTable.c.run_id == run_id, RunTagsTable.c.key == key))
        )
