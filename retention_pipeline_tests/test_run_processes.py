"""Which runs are still going: a run whose recorded process is gone (or whose pid another process got)
is neither shown as running nor kept as in progress."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.utils import make_new_run_id

from retention_pipeline import run_processes
from retention_pipeline.core.processes import pid_namespace, start_identity, still_running
from retention_pipeline.history import cleanup_status
from retention_pipeline.job_tracker import run_outcome
from retention_pipeline.jobs import data_cleanup
from retention_pipeline.run_processes import (
    PID_NAMESPACE_KEY,
    PROCESS_TAG,
    blocking_runs,
    process_tags,
    record_process,
)
from retention_pipeline.settings import Settings
from retention_pipeline.tags import EXCLUSIVE_TAGS


def _started(instance: dg.DagsterInstance) -> dg.DagsterRun:
    return instance.create_run_for_job(data_cleanup, status=dg.DagsterRunStatus.STARTED, tags=EXCLUSIVE_TAGS)


def _tags_of_an_exited_process(run_id: str) -> dict[str, str]:
    """The tags a CLI process gave the run `run_id` it created, the process being gone since."""
    code = (
        "import json; from retention_pipeline.run_processes import process_tags;"
        f" print(json.dumps(process_tags({run_id!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def _exited_pid() -> int:
    exited = subprocess.Popen(["true"])
    exited.wait()
    return exited.pid


def test_status_does_not_call_a_run_whose_process_is_gone_running(instance):
    dead = _started(instance)
    record_process(instance, dead.run_id, pid=_exited_pid())

    status = cleanup_status(instance, Settings(), limit=5)

    assert status["running"] is False
    assert status["last_run"]["status"] == status["runs"][0]["status"] == "ABANDONED"
    # Reading the status changes nothing: the next run or tick fails it, as before.
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.STARTED


def test_status_calls_a_run_whose_process_lives_running(instance):
    dead, alive = _started(instance), _started(instance)
    record_process(instance, dead.run_id, pid=_exited_pid())
    record_process(instance, alive.run_id)

    status = cleanup_status(instance, Settings(), limit=5)

    assert status["running"] is True
    assert {row["run_id"]: row["status"] for row in status["runs"]} == {
        dead.run_id: "ABANDONED",
        alive.run_id: "STARTED",
    }


def test_a_dead_runs_pid_taken_by_another_process_does_not_keep_it_in_progress(instance):
    original = subprocess.Popen(["sleep", "30"])
    started = start_identity(original.pid)
    original.kill()
    original.wait()
    time.sleep(0.05)  # start times count clock ticks: the next process starts in a later one
    other = subprocess.Popen(["sleep", "30"])  # stands for the process that got the dead run's pid
    try:
        dead, alive = _started(instance), _started(instance)
        record_process(instance, dead.run_id, pid=other.pid, started=started)
        record_process(instance, alive.run_id, pid=other.pid)

        outcome = run_outcome(instance, dead.run_id)
        blocking = blocking_runs(instance)
    finally:
        other.kill()
        other.wait()

    assert outcome is not None and not outcome.completed
    assert [run.run_id for run in blocking] == [alive.run_id]
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE


def test_without_proc_a_live_pid_is_all_there_is_to_go_by(tmp_path: Path):
    no_proc = tmp_path / "no_proc"

    assert start_identity(os.getpid(), no_proc) is None
    assert pid_namespace(no_proc) is None
    assert still_running(os.getpid(), "some-boot:12345", no_proc) is True
    assert still_running(_exited_pid(), "some-boot:12345", no_proc) is False
    assert still_running(os.getpid(), None) is True


def test_a_process_start_identity_is_its_own_and_stable():
    mine = start_identity(os.getpid())

    assert mine is not None and mine == start_identity(os.getpid())
    assert still_running(os.getpid(), mine) is True
    assert still_running(os.getpid(), "another-boot:" + mine.rpartition(":")[2]) is False


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTED])
def test_a_run_tagged_at_creation_by_a_process_now_gone_is_dead_before_any_op_notes_it(instance, status):
    # As the CLI does: tagged with its process from its creation, then killed before its first op.
    dead_id, alive_id = make_new_run_id(), make_new_run_id()
    tags = {**EXCLUSIVE_TAGS, **_tags_of_an_exited_process(dead_id)}
    instance.create_run_for_job(data_cleanup, run_id=dead_id, status=status, tags=tags)
    instance.create_run_for_job(
        data_cleanup, run_id=alive_id, status=status, tags={**EXCLUSIVE_TAGS, **process_tags(alive_id)}
    )

    status_before = cleanup_status(instance, Settings(), limit=5)
    blocking = blocking_runs(instance)

    assert {row["run_id"]: row["status"] for row in status_before["runs"]} == {
        dead_id: "ABANDONED",
        alive_id: status.value,
    }
    assert [run.run_id for run in blocking] == [alive_id]
    assert instance.get_run_by_id(dead_id).status == dg.DagsterRunStatus.FAILURE


def test_a_process_tag_copied_from_another_run_says_nothing_of_this_one(instance):
    # A re-execution or retry of a CLI run may carry its parent's tags, the parent's long-gone pid with them.
    parent_id = make_new_run_id()
    copied = {**EXCLUSIVE_TAGS, **_tags_of_an_exited_process(parent_id)}
    waiting = instance.create_run_for_job(data_cleanup, status=dg.DagsterRunStatus.NOT_STARTED, tags=copied)
    started = instance.create_run_for_job(data_cleanup, status=dg.DagsterRunStatus.STARTED, tags=copied)

    blocking = blocking_runs(instance)

    assert {run.run_id for run in blocking} == {waiting.run_id, started.run_id}
    assert instance.get_run_by_id(started.run_id).status == dg.DagsterRunStatus.STARTED


# No pid namespace has inode 1 (those of the proc filesystem start far above): one this test is not in.
ANOTHER_NAMESPACE = "pid:[1]"


def _noted_in(namespace: str | None, tags: dict[str, str]) -> dict[str, str]:
    """`tags` with their process noted in pid namespace `namespace` ("": its noter could not read it; None:
    noted before namespaces were)."""
    note = json.loads(tags[PROCESS_TAG])
    note.pop(PID_NAMESPACE_KEY)
    if namespace is not None:
        note[PID_NAMESPACE_KEY] = namespace
    return {**tags, PROCESS_TAG: json.dumps(note)}


@pytest.mark.parametrize("instance_fixture", ["instance", "postgres_instance"])
def test_a_run_noted_in_another_pid_namespace_is_not_judged_by_this_ones_pids(
    instance_fixture: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
):
    # Containers sharing a host name (host networking, a pod's containers) but not a pid namespace: the
    # noted pid is no process here, yet the run may well be alive in its own container.
    instance = request.getfixturevalue(instance_fixture)
    assert pid_namespace() not in (None, ANOTHER_NAMESPACE)
    ids = {name: make_new_run_id() for name in ("other", "unreadable", "here", "before")}
    namespaces = {"other": ANOTHER_NAMESPACE, "unreadable": "", "here": pid_namespace(), "before": None}
    for name, run_id in ids.items():
        tags = {**EXCLUSIVE_TAGS, **_noted_in(namespaces[name], _tags_of_an_exited_process(run_id))}
        instance.create_run_for_job(
            data_cleanup, run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags
        )
    # The same, noted by a first op (the run's log) rather than by the CLI's tag.
    logged = _started(instance)
    with monkeypatch.context() as patched:
        patched.setattr(run_processes, "pid_namespace", lambda: ANOTHER_NAMESPACE)
        record_process(instance, logged.run_id, pid=_exited_pid())

    status = cleanup_status(instance, Settings(), limit=10)
    blocking = blocking_runs(instance)

    alive = {ids["other"], ids["unreadable"], logged.run_id}
    assert status["running"] is True
    assert {row["run_id"]: row["status"] for row in status["runs"]} == {
        **dict.fromkeys(alive, "STARTED"),
        ids["here"]: "ABANDONED",
        ids["before"]: "ABANDONED",
    }
    assert {run.run_id for run in blocking} == alive
    assert {run_id: instance.get_run_by_id(run_id).status for run_id in [*ids.values(), logged.run_id]} == {
        **dict.fromkeys(alive, dg.DagsterRunStatus.STARTED),
        ids["here"]: dg.DagsterRunStatus.FAILURE,
        ids["before"]: dg.DagsterRunStatus.FAILURE,
    }
