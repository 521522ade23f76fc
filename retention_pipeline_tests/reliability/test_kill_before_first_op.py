"""`retention-pipeline run` stopped in its first moments, after Dagster created its run but before its first
op took the run lock and noted its process in the run's log: SIGKILLed there, the run is judged dead and the
next run proceeds; alive there, it still keeps a second run from starting beside it.

The CLI is frozen (SIGSTOP) the moment its run reaches the wanted status, and the test checks that the first
op has not noted its process in the run's log yet, so the point is reached whatever the machine's speed.
"""

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy.exc

from retention_pipeline.cli import EXIT_BUSY
from retention_pipeline.history import JOB_NAME
from retention_pipeline.run_processes import PROCESS_EVENT
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import CameraWorld

from .invariants import Policy, take_snapshot, verify_finished_run
from .launcher import Cli, CliProcess
from .worlds import Recorder, Recording

pytestmark = both_shapes

ATTEMPTS = 5
SEED = 20261207


def _noted_by_an_op(instance: dg.DagsterInstance, run_id: str) -> bool:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    return any(record.event_log_entry.user_message.startswith(PROCESS_EVENT) for record in records)


def _frozen_run(
    cli: Cli,
    instance: dg.DagsterInstance,
    status: dg.DagsterRunStatus,
    *argv: str,
    refill: Callable[[], None] = lambda: None,
) -> tuple[CliProcess, dg.DagsterRun]:
    """A CLI run frozen when its run is at `status`, before any op noted its process (retried if too late).

    A try caught too late runs to its end; `refill` then records new expired rows, so that the frozen run
    still has something it could have deleted.
    """
    for _ in range(ATTEMPTS):
        known = {run.run_id for run in instance.get_runs()}
        process = cli.start("run", "--json", *argv)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = [run for run in instance.get_runs(limit=3) if run.run_id not in known]
            if runs and runs[0].status == status:
                os.kill(process.pid, signal.SIGSTOP)
                break
            if runs and runs[0].status not in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTED):
                break  # finished before it could be frozen
            time.sleep(0.001)
        else:
            raise AssertionError(f"no {status.value} run in 60s:\n{process.log()[-3000:]}")
        try:
            run = instance.get_run_by_id(runs[0].run_id)
            assert run is not None
            if run.status == status and not _noted_by_an_op(instance, run.run_id):
                return process, run
        except sqlalchemy.exc.OperationalError:
            # Frozen while holding a lock of the instance's SQLite storage ("locking protocol"): a killed
            # process would release it, a stopped one does not, and nothing else could read the runs.
            pass
        os.kill(process.pid, signal.SIGCONT)  # too late: let it finish and try again
        assert process.wait() == 0, process.log()[-3000:]
        refill()
    raise AssertionError(
        f"the CLI's run never caught at {status.value} before its first op, {ATTEMPTS} tries"
    )


@pytest.fixture
def dagster_instance(dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with dg.DagsterInstance.get() as instance:
        yield instance


AMOUNT = Recording(detections=60, events=20, gpu_stats=20, logs=20)


@pytest.fixture
def recorder(live_world: CameraWorld) -> Recorder:
    recorder = Recorder(live_world, seed=SEED)
    recorder.record(AMOUNT)
    return recorder


@pytest.fixture
def cli(recorder: Recorder, live_world: CameraWorld, dagster_home: Path, tmp_path: Path) -> Cli:
    return Cli(live_world, dagster_home, tmp_path / "cli", DELETE_IMAGES="true")


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTED])
def test_a_run_killed_before_its_first_op_does_not_block_the_next(
    cli: Cli, recorder: Recorder, dagster_instance: dg.DagsterInstance, status: dg.DagsterRunStatus
):
    policy = Policy.of(cli.world, delete_images=True)
    process, killed = _frozen_run(cli, dagster_instance, status, refill=lambda: recorder.record(AMOUNT))
    # Taken while it is frozen: a try caught too late (retried) deleted what had expired before it.
    before = take_snapshot(cli.world.engine, [cli.world.media])
    process.kill()
    assert process.wait() == -signal.SIGKILL
    assert take_snapshot(cli.world.engine, [cli.world.media]) == before

    status_now = cli.start("status", "--json")
    assert status_now.wait() == 0, status_now.log()[-3000:]
    assert json.loads(status_now.stdout())["running"] is False

    following = cli.start("run", "--json")
    assert following.wait() == 0, following.stdout() + following.log()[-3000:]
    after = take_snapshot(cli.world.engine, [cli.world.media])
    verify_finished_run(policy, before, after, json.loads(following.stdout()))
    statuses = {run.run_id: run.status for run in dagster_instance.get_runs(dg.RunsFilter(job_name=JOB_NAME))}
    assert statuses.pop(killed.run_id) == dg.DagsterRunStatus.FAILURE
    # The following run, and any try caught too late, succeeded.
    assert set(statuses.values()) == {dg.DagsterRunStatus.SUCCESS}


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTED])
def test_a_live_run_before_its_first_op_still_keeps_a_second_from_starting(
    cli: Cli, dagster_instance: dg.DagsterInstance, status: dg.DagsterRunStatus
):
    process, live = _frozen_run(cli, dagster_instance, status, "--dry-run")
    try:
        second = cli.start("run", "--json")
        assert second.wait() == EXIT_BUSY, second.log()[-3000:]
        assert json.loads(second.stdout())["error"].startswith(
            f"another retention run is in progress ({live.run_id}, {status.value})"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
    assert process.wait() == 0, process.log()[-3000:]
    assert json.loads(process.stdout())["dry_run"] is True
    # The second run was refused before Dagster created it; the frozen run, and any try caught too late,
    # succeeded.
    runs = dagster_instance.get_runs(dg.RunsFilter(job_name=JOB_NAME))
    assert live.run_id in {run.run_id for run in runs}
    assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
