"""SIGKILL `retention-pipeline run` at seeded random points, again and again: nothing it must keep is ever
lost, nothing it deleted is forgotten, and one more run finishes the job and reports it truthfully.

Each engine gets KILLS kill points (the first on `python -m retention_pipeline.cli run` itself, the rest
on forked CLI processes, see launcher.py), aimed at every phase of a run: the scan, between row batches
of each table, between the last commit and the file deletes, and during the file deletes. Between two
kills the cameras keep recording, so every killed run has a full run's work in front of it.
"""

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from retention_pipeline.history import JOB_NAME
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import CameraWorld

from .invariants import (
    ROW_TABLES,
    Policy,
    Snapshot,
    take_snapshot,
    verify_finished_run,
    verify_interrupted_run,
)
from .launcher import Cli, CliProcess
from .worlds import Recorder, Recording, plant_sentinels

pytestmark = both_shapes

KILLS = 10  # per engine
BATCH_SIZE = 20
SEED = 20260615

DURING_SCAN = "during the scan, before the first commit"
BETWEEN_BATCHES = "between row batches"
AFTER_COMMIT = "after the last row commit, before the file deletes"
DURING_FILES = "during the file deletes"
AFTER_FILES = "after the file deletes"
FINISHED = "finished before the kill point"


@dataclass(frozen=True)
class KillPoint:
    """Kill after the `occurrence`-th log line matching `line` (or the first deleted file), then `delay_s`."""

    aim: str
    line: str | None
    occurrence: int
    delay_s: float

    def reached(self, process: CliProcess, doomed_files: list[str]) -> bool:
        if self.line is None:
            return process.wait_for_vanished(doomed_files)
        return process.wait_for_line(self.line, self.occurrence)


def kill_point(rng: random.Random, n: int, batches: Callable[[str], int]) -> KillPoint:
    """The n-th kill point: the phases of a run in turn, each at a seeded random depth."""

    def nth_batch(table: str) -> int:
        return rng.randint(1, max(1, batches(table)))

    makers: list[Callable[[], KillPoint]] = [
        lambda: KillPoint(DURING_SCAN, r"deleting: rows before", 1, rng.uniform(0, 0.05)),
        lambda: KillPoint(
            BETWEEN_BATCHES, r"detections: batch \d+ ", nth_batch("detections"), rng.uniform(0, 0.02)
        ),
        lambda: KillPoint(DURING_FILES, None, 1, rng.uniform(0, 0.005)),
        lambda: KillPoint(
            BETWEEN_BATCHES, r"gpu_stats: batch \d+ ", nth_batch("gpu_stats"), rng.uniform(0, 0.02)
        ),
        # Within 10 ms: a fast machine may start deleting files ~100 ms after the events' last commit, and the
        # kill would then land among the files instead (the one draw keeps the seeded sequence as it was).
        lambda: KillPoint(AFTER_COMMIT, r"events: done", 1, rng.uniform(0, 0.01)),
        lambda: KillPoint(BETWEEN_BATCHES, r"logs: batch \d+ ", nth_batch("logs"), rng.uniform(0, 0.02)),
        lambda: KillPoint(BETWEEN_BATCHES, r"events: batch \d+ ", nth_batch("events"), rng.uniform(0, 0.02)),
    ]
    return makers[n % len(makers)]()


def wait_for_the_run_lock_to_be_free(world: CameraWorld, timeout: float = 10) -> None:
    """PostgreSQL ends a killed client's session (and its advisory lock) when it notices the closed socket,
    usually at once; a run started before that would rightly refuse to start. SQLite's flock goes with the
    process.
    """
    if world.engine.dialect.name != "postgresql":
        return
    held = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with world.engine.connect() as conn:
            if not conn.execute(held).scalar():
                return
        time.sleep(0.01)
    raise AssertionError(f"the killed run's advisory lock was still held after {timeout}s")


def phase_reached(policy: Policy, before: Snapshot, after: Snapshot) -> str:
    """Where in the run the kill landed, read from what changed."""
    rows_went = any(before.rows(table) - after.rows(table) for table in ROW_TABLES)
    files_went = any(state.kind != "dir" and path not in after.files for path, state in before.files.items())
    if files_went:
        return DURING_FILES if after.queue else AFTER_FILES
    if not rows_went:
        return DURING_SCAN
    expired_left = policy.expired(after)
    return BETWEEN_BATCHES if any(getattr(expired_left, t) for t in ROW_TABLES) else AFTER_COMMIT


def test_killed_runs_lose_nothing_and_one_more_run_finishes_the_job(
    live_world: CameraWorld, tmp_path: Path, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
):
    world = live_world
    engine_name = world.engine.dialect.name
    outside = plant_sentinels(world, tmp_path)
    recorder = Recorder(world, seed=SEED)
    recorder.record(Recording(detections=600, events=120, gpu_stats=200, logs=200))
    policy = Policy.of(world, delete_images=True)
    cli = Cli(world, dagster_home, tmp_path / "cli", CLEANUP_BATCH_SIZE=str(BATCH_SIZE), DELETE_IMAGES="true")
    rng = random.Random(f"{SEED}-{engine_name}")

    def snapshot() -> Snapshot:
        return take_snapshot(world.engine, [world.media, outside])

    landed: list[str] = []
    before = snapshot()
    for n in range(KILLS):
        if n:
            recorder.record()  # the cameras kept recording between two crashes
            before = snapshot()
        expired = policy.expired(before)
        batches = {table: len(getattr(expired, table)) // BATCH_SIZE for table in ROW_TABLES}
        point = kill_point(rng, n, batches.__getitem__)
        doomed = [
            where
            for stored in policy.owned(before, expired.detections, expired.events)
            if (where := policy.deletable(stored, before)) and where in before.files
        ]
        process = cli.start("run", "--json", how="exec" if n == 0 else "fork")
        if point.reached(process, rng.sample(doomed, min(40, len(doomed)))):
            time.sleep(point.delay_s)
            process.kill()
        code = process.wait()
        wait_for_the_run_lock_to_be_free(world)
        after = snapshot()
        if code == -signal.SIGKILL:
            verify_interrupted_run(policy, before, after)
            landed.append(phase_reached(policy, before, after))
        else:
            assert code == 0, process.log()[-3000:]
            verify_finished_run(policy, before, after, json.loads(process.stdout()))
            landed.append(FINISHED)
        before = after

    final = cli.start("run", "--json")
    assert final.wait() == 0, final.log()[-3000:]
    stats = json.loads(final.stdout())
    after = snapshot()
    verify_finished_run(policy, before, after, stats)
    assert (outside / "secret.txt").read_text() == "keep me"

    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with dg.DagsterInstance.get() as instance:
        statuses = Counter(run.status for run in instance.get_runs(dg.RunsFilter(job_name=JOB_NAME)))
    killed = KILLS - landed.count(FINISHED)
    assert statuses == {dg.DagsterRunStatus.FAILURE: killed, dg.DagsterRunStatus.SUCCESS: KILLS + 1 - killed}

    print(f"\n{engine_name}: kill points landed {dict(Counter(landed))}")
    assert {BETWEEN_BATCHES, AFTER_COMMIT, DURING_FILES} <= set(landed), landed
