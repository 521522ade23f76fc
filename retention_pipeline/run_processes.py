"""Which retention runs are still going: each run notes the process that runs it, and a run whose process
is gone is dead, whatever Dagster still says of it (the default run launcher cannot tell)."""

import os
import socket
from typing import Any

import dagster as dg
from dagster._core.events import EngineEventData

from .core.processes import start_identity, still_running
from .tags import EXCLUSIVE_TAGS

PROCESS_EVENT = "retention run process"
# Dagster's own engine events carry a "pid" too; these keys are ours alone.
PID_KEY, HOST_KEY = "retention_run_pid", "retention_run_host"
STARTED_KEY = "retention_run_process_started"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def record_process(
    instance: dg.DagsterInstance, run_id: str, pid: int | None = None, started: str | None = None
) -> None:
    """Note in the run's event log which process runs it, so a later check can tell whether it died.

    An engine event, not a tag: the Runs page shows every tag as a chip, and this is bookkeeping. With the
    pid goes the process's start identity (`started`: the pid's own by default), so a pid another process
    got later is not taken for the run's.
    """
    pid = os.getpid() if pid is None else pid
    started = start_identity(pid) if started is None else started
    run = instance.get_run_by_id(run_id)
    metadata: dict[str, Any] = {PID_KEY: pid, HOST_KEY: socket.gethostname()}
    if started is not None:
        metadata[STARTED_KEY] = started
    instance.report_engine_event(
        f"{PROCESS_EVENT}: pid {pid} on {socket.gethostname()}", run, EngineEventData(metadata=metadata)
    )


def recorded_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, str] | None:
    """The last process `record_process` noted for a run (pid, host), if any."""
    noted = _noted_process(instance, run_id)
    return None if noted is None else (int(noted[PID_KEY]), str(noted[HOST_KEY]))


def _noted_process(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any] | None:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    for record in reversed(records):
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        if data is not None and PID_KEY in data.metadata and HOST_KEY in data.metadata:
            return {key: value.value for key, value in data.metadata.items()}
    return None


def process_alive(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool | None:
    """True/False for a run whose process on this host was recorded, None when it cannot tell."""
    noted = _noted_process(instance, run.run_id)
    if noted is None or noted[HOST_KEY] != socket.gethostname():
        return None
    started = noted.get(STARTED_KEY)  # runs recorded before start identities were: the pid alone
    return still_running(int(noted[PID_KEY]), None if started is None else str(started))


def active_runs(
    instance: dg.DagsterInstance, **selection: Any
) -> tuple[list[dg.DagsterRun], list[dg.DagsterRun]]:
    """The queued and in-progress runs `selection` (RunsFilter's fields) picks, as (live, dead): dead are
    those noted on this host whose process is gone; runs it cannot judge count as live."""
    live: list[dg.DagsterRun] = []
    dead: list[dg.DagsterRun] = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES, **selection)):
        run = record.dagster_run
        (dead if process_alive(instance, run) is False else live).append(run)
    return live, dead


def blocking_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Retention runs still in progress; runs whose process died are marked failed instead.

    Every retention run notes its pid and host when it starts (see `record_process`). A
    run whose process is gone (killed, host crashed and rebooted) would otherwise stay STARTED forever
    (the default run launcher cannot check its worker's health) and hold the one concurrency slot of
    the exclusive tag: it must not become a stale lock.
    """
    live, dead = active_runs(instance, tags=EXCLUSIVE_TAGS)
    for run in dead:
        instance.report_run_failed(run, "The process running this run is gone (killed).")
    return live
