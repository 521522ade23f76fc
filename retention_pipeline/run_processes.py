"""Which retention runs are still going: each run notes the process that runs it, and a run whose process
is gone is dead, whatever Dagster still says of it (the default run launcher cannot tell)."""

import json
import os
import socket
from typing import Any

import dagster as dg
from dagster._core.events import EngineEventData

from .core.processes import pid_namespace, start_identity, still_running
from .tags import EXCLUSIVE_TAGS

PROCESS_EVENT = "retention run process"
# Dagster's own engine events carry a "pid" too; these keys are ours alone.
PID_KEY, HOST_KEY = "retention_run_pid", "retention_run_host"
STARTED_KEY = "retention_run_process_started"
# The noter's pid namespace ("" where it could not read it): its pids mean nothing in another namespace.
PID_NAMESPACE_KEY = "retention_run_pid_namespace"
# The CLI's runs are born with their process in this tag, so that no moment of theirs goes unnoted.
# Dagster's GraphQL leaves out tags under ".dagster/": the Runs page shows no chip for it.
PROCESS_TAG = ".dagster/retention_run_process"
RUN_ID_KEY = "run_id"
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
    got later is not taken for the run's, and this process's pid namespace, in which any pid it notes is
    numbered.
    """
    pid = os.getpid() if pid is None else pid
    run = instance.get_run_by_id(run_id)
    metadata = _process_note(pid, start_identity(pid) if started is None else started)
    instance.report_engine_event(
        f"{PROCESS_EVENT}: pid {pid} on {socket.gethostname()}", run, EngineEventData(metadata=metadata)
    )


def process_tags(run_id: str) -> dict[str, str]:
    """The tag noting this process in the run `run_id` it is about to create and run in process itself
    (the CLI's `execute_in_process`), like `record_process` does, but from the run's very creation.

    `record_process` is first called by the first op, about a second after Dagster created the run
    (NOT_STARTED, then STARTED): a run killed in between would otherwise be noted nowhere and count as live
    forever. The note names its run, as a re-execution or an automatic retry may copy its parent's tags.
    """
    note = {RUN_ID_KEY: run_id, **_process_note(os.getpid(), start_identity(os.getpid()))}
    return {PROCESS_TAG: json.dumps(note)}


def _process_note(pid: int, started: str | None) -> dict[str, Any]:
    """What a note says of a process: its pid, host, pid namespace and (when known) start identity."""
    # The namespace is noted even when unreadable (""), so that a judge can tell such a note from one
    # written before namespaces were noted.
    note: dict[str, Any] = {
        PID_KEY: pid,
        HOST_KEY: socket.gethostname(),
        PID_NAMESPACE_KEY: pid_namespace() or "",
    }
    if started is not None:
        note[STARTED_KEY] = started
    return note


def recorded_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, str] | None:
    """The last process noted for a run (pid, host), if any."""
    run = instance.get_run_by_id(run_id)
    noted = None if run is None else _noted_process(instance, run)
    return None if noted is None else (int(noted[PID_KEY]), str(noted[HOST_KEY]))


def _noted_process(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, Any] | None:
    """The last process `record_process` noted in the run's log, else the one its creator tagged it with."""
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    for record in reversed(records):
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        if data is not None and PID_KEY in data.metadata and HOST_KEY in data.metadata:
            return {key: value.value for key, value in data.metadata.items()}
    return _tagged_process(run)


def _tagged_process(run: dg.DagsterRun) -> dict[str, Any] | None:
    try:
        note = json.loads(run.tags.get(PROCESS_TAG, "null"))
    except ValueError:
        return None
    # A copied tag names the run it was copied from: it says nothing of this one.
    if not isinstance(note, dict) or note.get(RUN_ID_KEY) != run.run_id:
        return None
    # Whoever launches a run may set any tag: a note that is not one is no note.
    return note if isinstance(note.get(PID_KEY), int) and isinstance(note.get(HOST_KEY), str) else None


def process_alive(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool | None:
    """True/False for a run whose process on this host and in this pid namespace was noted, None when it
    cannot tell (so the run counts as live: a live run judged dead would lose its slot)."""
    noted = _noted_process(instance, run)
    if noted is None or noted[HOST_KEY] != socket.gethostname():
        return None
    # Containers sharing a host name (host networking, a pod's containers) number their processes apart.
    # If either side could not read its namespace, they may differ too. A note from before namespaces were
    # noted has none: judged as it was, by pid, host and start identity.
    namespace = noted.get(PID_NAMESPACE_KEY)
    if namespace is not None and str(namespace) != (pid_namespace() or ""):
        return None
    started = noted.get(STARTED_KEY)  # runs recorded before start identities were: the pid alone
    return still_running(int(noted[PID_KEY]), None if started is None else str(started))


def active_runs(
    instance: dg.DagsterInstance, **selection: Any
) -> tuple[list[dg.DagsterRun], list[dg.DagsterRun]]:
    """The queued and in-progress runs `selection` (RunsFilter's fields) picks, as (live, dead): dead are
    those noted on this host and in this pid namespace whose process is gone; runs it cannot judge count
    as live."""
    live: list[dg.DagsterRun] = []
    dead: list[dg.DagsterRun] = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES, **selection)):
        run = record.dagster_run
        (dead if process_alive(instance, run) is False else live).append(run)
    return live, dead


def blocking_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Retention runs still in progress; runs whose process died are marked failed instead.

    Every retention run notes its pid, host and pid namespace: the CLI's from their creation
    (`process_tags`), the others when their first op takes the run lock (`record_process`). A run whose
    process is gone (killed, host crashed and rebooted) would otherwise stay STARTED forever (the default
    run launcher cannot check its worker's health) and hold the one concurrency slot of the exclusive tag:
    it must not become a stale lock.
    """
    live, dead = active_runs(instance, tags=EXCLUSIVE_TAGS)
    for run in dead:
        instance.report_run_failed(run, "The process running this run is gone (killed).")
    return live
