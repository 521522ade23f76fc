"""Database faults in the middle of a real data_cleanup run (through Dagster): a row lock held by the camera
system, a lock held past every retry, backends terminated by the server. The run retries with backoff and
completes, or fails cleanly with the error in its run log; the invariants hold either way, and one more
normal run finishes the job.
"""

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from retention_pipeline.core import db, purge
from retention_pipeline.core.db import write_transaction
from retention_pipeline.core.lock import ExclusiveRunLock, RunLockBusy
from retention_pipeline.core.schema import detections, events, retention_file_queue
from retention_pipeline_tests.dagster_helpers import execute, failure_messages, plan_config
from retention_pipeline_tests.factories import CameraWorld

from .invariants import Policy, Snapshot, take_snapshot, verify_finished_run, verify_interrupted_run
from .worlds import Recorder, Recording, plant_sentinels

BATCH_SIZE = 5
_THIS_DATABASE = "datname = current_database()"
TERMINATE_JOB_BACKENDS = text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    f" WHERE application_name = 'retention_pipeline' AND {_THIS_DATABASE}"
)
JOB_BACKEND_WAITING_FOR_A_LOCK = text(
    "SELECT pid FROM pg_stat_activity"
    f" WHERE application_name = 'retention_pipeline' AND wait_event_type = 'Lock' AND {_THIS_DATABASE}"
)
RUN_LOCK_HOLDER = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@pytest.fixture
def observer(world: CameraWorld) -> Iterator[Engine]:
    """The test's own connections, not named 'retention_pipeline', so terminating the job's spares them."""
    engine = create_engine(world.engine.url, pool_pre_ping=True)
    yield engine
    engine.dispose()


def _scalars(engine: Engine, statement) -> list:
    with engine.connect() as conn:
        return list(conn.execute(statement).scalars())


def _count(engine: Engine, table) -> int:
    return int(_scalars(engine, select(func.count()).select_from(table))[0])


def _wait_until(condition: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def _config(world: CameraWorld, waits_to_watch: bool = False) -> dict:
    """The run's plan. `waits_to_watch`: batches without a time cap, so a batch waits for a writer's row
    lock up to lock_timeout (500 ms) at a time, long enough for the observer's polling to see it on a
    loaded machine; a capped batch waits 40 ms (test_batch_time_cap holds that)."""
    return plan_config(
        dry_run=False,
        reference_time=world.now.isoformat(),
        batch_size=BATCH_SIZE,
        delete_images=True,
        **({"transaction_target_ms": 0} if waits_to_watch else {}),
    )


def _run_log(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))


class LockHolder(threading.Thread):
    """Holds what the camera system would while writing: on PostgreSQL a row lock on one detection, on
    SQLite the database's write lock.

    It takes the lock once `begin_when()` is true, then keeps it until `hold_from()` is true and `seconds`
    more have passed, or until `release` is set.
    """

    def __init__(
        self,
        engine: Engine,
        detection_id: int,
        seconds: float = 60,
        begin_when: Callable[[], bool] = lambda: True,
        hold_from: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(daemon=True)
        self.engine, self.detection_id, self.seconds = engine, detection_id, seconds
        self.begin_when, self.hold_from = begin_when, hold_from
        self.locked, self.release = threading.Event(), threading.Event()

    def run(self) -> None:
        _wait_until(lambda: self.release.is_set() or self.begin_when())
        with write_transaction(self.engine) as conn:
            row = detections.c.id == self.detection_id
            conn.execute(select(detections.c.id).where(row).with_for_update())
            conn.execute(detections.update().where(row).values(object_type="locked"))
            self.locked.set()
            _wait_until(lambda: self.release.is_set() or self.hold_from())
            self.release.wait(self.seconds)
            conn.rollback()

    def __enter__(self) -> "LockHolder":
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release.set()
        self.join()


class Scene:
    """A recorded world with sentinels, and the snapshots around a disturbed run."""

    def __init__(self, world: CameraWorld, tmp_path: Path, detections: int = 80) -> None:
        self.world = world
        self.outside = plant_sentinels(world, tmp_path)
        Recorder(world, seed=detections).record(
            Recording(detections=detections, events=detections // 4, gpu_stats=20, logs=20)
        )
        self.policy = Policy.of(world, delete_images=True)
        self.before = self.snapshot()

    def snapshot(self) -> Snapshot:
        return take_snapshot(self.world.engine, [self.world.media, self.outside])

    def expired_detection(self, position: float) -> int:
        """An expired detection that the batches reach about `position` (0..1) of the way through."""
        expired = sorted(self.policy.expired(self.before).detections)
        return expired[int(position * (len(expired) - 1))]

    def verify(self, result: dg.ExecuteInProcessResult) -> Snapshot:
        after = self.snapshot()
        if result.success:
            verify_finished_run(
                self.policy, self.before, after, result.output_for_node("report_cleanup").as_dict()
            )
        else:
            verify_interrupted_run(self.policy, self.before, after)
        return after

    def finish_and_verify(self) -> None:
        """One more normal run completes whatever the disturbed one left, keeping every promise."""
        before = self.snapshot()
        stats = self.world.run(delete_images=True)
        verify_finished_run(self.policy, before, self.snapshot(), stats.as_dict())


def _writers_lock(scene: Scene, observer: Engine, seconds: float = 60) -> LockHolder:
    """A lock in the job's way. PostgreSQL: a row lock taken before the run, counted from the moment a
    batch waits on it. SQLite: the write lock, taken once the run has begun deleting (so the batches,
    not the start-up, meet it).
    """

    def a_batch_is_waiting() -> bool:
        return bool(_scalars(observer, JOB_BACKEND_WAITING_FOR_A_LOCK))

    def deleting_has_begun() -> bool:
        return _count(observer, detections) < len(scene.before.detections)

    target = scene.expired_detection(0.5)
    if scene.world.engine.dialect.name == "postgresql":
        return LockHolder(observer, target, seconds, hold_from=a_batch_is_waiting)
    return LockHolder(scene.world.engine, target, seconds, begin_when=deleting_has_begun)


def test_a_batch_that_meets_a_writers_lock_waits_or_retries_and_the_run_completes(
    world: CameraWorld, tmp_path: Path, instance: dg.DagsterInstance, observer: Engine
):
    scene = Scene(world, tmp_path)
    # Held 1.5 s: past PostgreSQL's lock_timeout (500 ms), within SQLite's busy timeout (10 s).
    with _writers_lock(scene, observer, seconds=1.5) as holder:
        result = execute(world, instance, _config(world, waits_to_watch=True))

    assert holder.locked.is_set()
    assert result.success, failure_messages(result)
    scene.verify(result)
    stats = result.output_for_node("report_cleanup")
    if world.engine.dialect.name == "postgresql":
        assert stats.db_retries >= 1
        assert "transient database error, retrying the batch" in _run_log(instance, result)
    else:
        assert stats.longest_transaction_ms >= 1000  # the batch waited for the writer, then went on


def test_a_lock_held_past_every_retry_fails_the_run_cleanly_and_the_next_run_finishes(
    world: CameraWorld,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    observer: Engine,
    monkeypatch: pytest.MonkeyPatch,
):
    # Shorter waits so that giving up takes a second, not a minute; the logic is unchanged.
    monkeypatch.setattr(purge.pacing, "RETRY_DELAYS_S", (0.05, 0.05, 0.1))
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(db, "PG_LOCK_TIMEOUT_MS", 200)
    scene = Scene(world, tmp_path)
    with _writers_lock(scene, observer) as holder:
        result = execute(world, instance, _config(world))
        scene.verify(result)

    assert holder.locked.is_set()
    assert not result.success
    message = failure_messages(result)
    assert "lock timeout" in message or "database is locked" in message, message
    assert "transient database error, retrying the batch" in _run_log(instance, result)
    scene.finish_and_verify()


def test_backends_terminated_mid_run_are_retried_and_the_run_completes(
    postgresql_only: None, world: CameraWorld, tmp_path: Path, instance: dg.DagsterInstance, observer: Engine
):
    scene = Scene(world, tmp_path, detections=200)
    terminated: list[str] = []

    def terminate(moment: str) -> None:
        if _scalars(observer, TERMINATE_JOB_BACKENDS):  # one row per backend ended
            terminated.append(moment)

    def fault_injector(holder: LockHolder) -> None:
        # 1. A batch in flight: it waits on the held row lock when the server ends its backend.
        if _wait_until(lambda: bool(_scalars(observer, JOB_BACKEND_WAITING_FOR_A_LOCK))):
            terminate("a detections batch waiting for a row lock")
        holder.release.set()
        # 2. Every job connection (the run lock's too) while events are purged, 3. and while files go.
        events_before = len(scene.before.events)
        if _wait_until(lambda: _count(observer, events) < events_before - 10):
            terminate("purging events")
        queued = _count(observer, retention_file_queue)
        if _wait_until(lambda: _count(observer, retention_file_queue) < queued):
            terminate("draining the file queue")

    with LockHolder(observer, scene.expired_detection(0.3)) as holder:
        injector = threading.Thread(target=fault_injector, args=(holder,))
        injector.start()
        result = execute(world, instance, _config(world, waits_to_watch=True))
        injector.join()

    assert terminated[:2] == ["a detections batch waiting for a row lock", "purging events"], terminated
    assert result.success, failure_messages(result)
    assert result.output_for_node("report_cleanup").db_retries >= 1
    scene.verify(result)
    scene.finish_and_verify()


def _run_that_loses_its_lock_session(
    world: CameraWorld, tmp_path: Path, instance: dg.DagsterInstance, observer: Engine
) -> tuple[dg.ExecuteInProcessResult, bool, int]:
    """A run whose advisory-lock session the server terminates while a batch waits on a row lock.

    Meanwhile a second run (the test) tries to take the database's run lock. Returns the first run's
    result, whether the second got the lock, and how many rows the first deleted while the second held it.
    """
    scene = Scene(world, tmp_path, detections=40)
    second = ExclusiveRunLock(world.engine)
    outcome = {"acquired": False, "deleted_meanwhile": 0}

    def second_run(holder: LockHolder) -> None:
        try:
            if not _wait_until(lambda: bool(_scalars(observer, JOB_BACKEND_WAITING_FOR_A_LOCK))):
                return
            for lock_session in _scalars(observer, RUN_LOCK_HOLDER):
                _scalars(observer, text(f"SELECT pg_terminate_backend({int(lock_session)})"))
            try:
                second.acquire()
            except RunLockBusy:
                return
            outcome["acquired"] = True
            remaining = _count(observer, detections)
            holder.release.set()
            time.sleep(1.5)  # the second run's turn: the first should have stopped by now
            outcome["deleted_meanwhile"] = remaining - _count(observer, detections)
            second.release()
        finally:
            holder.release.set()

    with LockHolder(observer, scene.expired_detection(0.3)) as holder:
        contender = threading.Thread(target=second_run, args=(holder,))
        contender.start()
        result = execute(world, instance, _config(world, waits_to_watch=True))
        contender.join()
    scene.verify(result)
    scene.finish_and_verify()
    return result, bool(outcome["acquired"]), int(outcome["deleted_meanwhile"])


def test_a_run_that_loses_its_lock_session_never_overlaps_with_another_run(
    postgresql_only: None, world: CameraWorld, tmp_path: Path, instance: dg.DagsterInstance, observer: Engine
):
    _result, second_got_the_lock, deleted_meanwhile = _run_that_loses_its_lock_session(
        world, tmp_path, instance, observer
    )

    assert second_got_the_lock
    assert deleted_meanwhile == 0, f"the first run deleted {deleted_meanwhile} detections without its lock"


def test_a_run_that_loses_its_lock_to_another_run_fails_cleanly_naming_the_cause(
    postgresql_only: None, world: CameraWorld, tmp_path: Path, instance: dg.DagsterInstance, observer: Engine
):
    result, _second_got_the_lock, _deleted = _run_that_loses_its_lock_session(
        world, tmp_path, instance, observer
    )

    assert not result.success
    assert "lost its lock" in failure_messages(result), failure_messages(result)
    teardown_errors = [
        event.message for event in result.all_events if "Teardown of resources" in (event.message or "")
    ]
    assert teardown_errors == []
