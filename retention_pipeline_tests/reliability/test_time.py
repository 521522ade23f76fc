"""Time (issue 4, scenario 7): a schedule tick on a DST change day in Europe/Berlin, a camera database that
stores naive timestamps, and a run retried an hour after its tick. Every run is data_cleanup launched as the
scheduler daemon launches it (the schedule's run config and tags); the invariants (a)-(e) hold afterwards.
"""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from sqlalchemy import DateTime, MetaData, column, insert, table, text
from sqlalchemy.engine import Engine

from retention_pipeline.core import cleanup
from retention_pipeline.core.lock import ExclusiveRunLock, RunLockBusy
from retention_pipeline.core.schema import UTCDateTime, camera_metadata
from retention_pipeline.definitions import defs
from retention_pipeline.history import PLAN_STEP, REPORT_STEP, step_metadata
from retention_pipeline.ops import SCHEDULED_TIME_TAG
from retention_pipeline.schedules import build_daily_schedule
from retention_pipeline.settings import Settings
from retention_pipeline_tests.dagster_helpers import environment_for, execute, failure_messages
from retention_pipeline_tests.factories import (
    CLIPS,
    IMAGES,
    LOG_RETENTION_DAYS,
    RETENTION_DAYS,
    THUMBS,
    CameraWorld,
)

from .invariants import (
    Policy,
    Snapshot,
    assert_no_problems,
    check_complete,
    check_safe,
    check_stats,
    take_snapshot,
    verify_finished_run,
    verify_interrupted_run,
)
from .worlds import Recorder, Recording, plant_sentinels

BERLIN = ZoneInfo("Europe/Berlin")
SECOND = timedelta(seconds=1)
EDGE = (-SECOND, timedelta(0), SECOND)  # just expired, exactly at the cutoff (kept), just retained
# The ticks Dagster's cron iteration yields for "30 2 * * *" in Europe/Berlin (checked on dagster 1.13.27),
# and the cutoffs they must give: RETENTION_DAYS x 24 h before the tick's instant.
DST_TICKS = {
    # 02:30 does not exist on the spring-forward day: the schedule fires at 03:00 CEST.
    "spring-forward": (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), datetime(2026, 2, 27, 1, 0, tzinfo=UTC)),
    # 02:30 happens twice on the fall-back day: the schedule fires once, at 02:30 CET.
    "fall-back": (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), datetime(2026, 9, 25, 1, 30, tzinfo=UTC)),
}
# Spellings other writers store naive UTC in SQLite's text columns; julianday() must read them all.
SQLITE_SPELLINGS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f")


def served_data_cleanup() -> dg.JobDefinition:
    """data_cleanup as the code location serves it; its resources read the environment at run time."""
    return defs.resolve_job_def("data_cleanup")


class TimeScene:
    """A recorded world with sentinels whose `now` is a schedule tick, so its cutoff is the tick's."""

    def __init__(self, engine: Engine, tmp_path: Path, tick: datetime) -> None:
        self.world = CameraWorld(engine, tmp_path / "media", now=tick)
        self.outside = plant_sentinels(self.world, tmp_path)
        Recorder(self.world, seed=7).record(Recording(detections=30, events=8, gpu_stats=10, logs=10))
        self.policy = Policy.of(self.world, delete_images=True)

    def snapshot(self) -> Snapshot:
        return take_snapshot(self.world.engine, [self.world.media, self.outside])

    def launch(self, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance, cleanup_time: str):
        """The run config and tags the daemon creates the run with at this tick of daily_data_cleanup."""
        env = {
            **environment_for(self.world),
            "CLEANUP_TIMEZONE": "Europe/Berlin",
            "CLEANUP_TIME": cleanup_time,
            "RETENTION_DAYS": str(RETENTION_DAYS),
            "LOG_RETENTION_DAYS": str(LOG_RETENTION_DAYS),
            "CLEANUP_BATCH_SIZE": "4",
            "DELETE_IMAGES": "true",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        schedule = build_daily_schedule(Settings.from_env())
        tick = self.world.now.astimezone(BERLIN)  # the daemon passes the tick in the schedule's zone
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        [request] = schedule.evaluate_tick(context).run_requests or []
        # What dagster/_scheduler/scheduler.py (_create_scheduler_run) adds to the request's tags.
        tags = {**request.tags, "dagster/schedule_name": schedule.name}
        return request.run_config, {**tags, SCHEDULED_TIME_TAG: tick.astimezone(UTC).isoformat()}

    def finish_and_verify(self) -> None:
        """(d): one more normal run leaves nothing expired, and keeps every promise."""
        before = self.snapshot()
        stats = self.world.run(delete_images=True)
        verify_finished_run(self.policy, before, self.snapshot(), stats.as_dict())


def reported(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    return step_metadata(instance, run_id, REPORT_STEP)


def cutoffs(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    """The cutoff as the plan and the report show it on the run page, from whichever of them ran."""
    shown = (step_metadata(instance, run_id, step) for step in (PLAN_STEP, REPORT_STEP))
    return {meta["cutoff"] for meta in shown if "cutoff" in meta}


@pytest.mark.parametrize(("tick", "expected_cutoff"), DST_TICKS.values(), ids=DST_TICKS.keys())
def test_a_tick_on_a_dst_change_day_cuts_off_exactly_retention_days_before_the_tick_instant(
    engine: Engine,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tick: datetime,
    expected_cutoff: datetime,
):
    scene = TimeScene(engine, tmp_path, tick)
    world = scene.world
    edge = {at: (world.detection(expected_cutoff + at), world.event(expected_cutoff + at)) for at in EDGE}
    for at in EDGE:
        world.gpu(expected_cutoff + at)
        world.log(world.log_cutoff + at)
    run_config, tags = scene.launch(monkeypatch, instance, cleanup_time="02:30")
    before = scene.snapshot()

    result = execute(world, instance, run_config, tags)

    assert result.success, failure_messages(result)
    after = scene.snapshot()
    assert cutoffs(instance, result.run_id) == {expected_cutoff.isoformat()}
    kept = {at for at, (d, e) in edge.items() if d in after.detections and e in after.events}
    files = {at: [*before.detections[d][1:], before.events[e][1]] for at, (d, e) in edge.items()}
    on_disk = {at for at, paths in files.items() if all(world.exists(path) for path in paths)}
    gone = {at for at, paths in files.items() if not any(world.exists(path) for path in paths)}
    assert kept == on_disk == {timedelta(0), SECOND} and gone == {-SECOND}
    verify_finished_run(scene.policy, before, after, reported(instance, result.run_id))
    scene.finish_and_verify()


@pytest.fixture
def naive_engine(engine: Engine) -> Iterator[Engine]:
    """The camera tables rebuilt with naive timestamp columns (TIMESTAMP WITHOUT TIME ZONE on PostgreSQL).

    On PostgreSQL the database's default time zone is Europe/Berlin, as initdb sets it on a German machine:
    a session that keeps that default reads every naive UTC value as Berlin time, one or two hours off.
    """
    naive = MetaData()
    for camera_table in camera_metadata.sorted_tables:
        for copied in camera_table.to_metadata(naive).columns:
            if isinstance(copied.type, UTCDateTime):
                copied.type = DateTime(timezone=False)
    camera_metadata.drop_all(engine)
    naive.create_all(engine)
    if engine.dialect.name != "postgresql":
        yield engine
        return
    with engine.begin() as conn:
        database = engine.dialect.identifier_preparer.quote(
            conn.execute(text("SELECT current_database()")).scalar()
        )
        conn.execute(text(f"ALTER DATABASE {database} SET timezone TO 'Europe/Berlin'"))
    engine.dispose()  # sessions opened from now on get the new default
    try:
        yield engine
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER DATABASE {database} RESET timezone"))


def _insert_naive(engine: Engine, name: str, **values: Any) -> int:
    """A row written as another writer would: the timestamps go to the driver as they are."""
    raw = table(name, column("id"), *(column(key) for key in values))
    with engine.begin() as conn:
        return int(conn.execute(insert(raw).values(**values).returning(raw.c.id)).scalar_one())


def _naive_spellings(engine: Engine, at: datetime) -> list[object]:
    wall = at.astimezone(UTC).replace(tzinfo=None)
    return [wall.strftime(f) for f in SQLITE_SPELLINGS] if engine.dialect.name == "sqlite" else [wall]


def test_naive_timestamps_are_taken_as_utc_on_both_sides_of_the_cutoff(
    naive_engine: Engine, tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    tick, _expected_cutoff = DST_TICKS["fall-back"]
    scene = TimeScene(naive_engine, tmp_path, tick)
    world = scene.world
    edge: dict[timedelta, set[tuple[str, int]]] = {at: set() for at in EDGE}
    for at in EDGE:
        for n, value in enumerate(_naive_spellings(naive_engine, world.cutoff + at)):
            name = f"naive{EDGE.index(at)}_{n}"
            event = _insert_naive(
                naive_engine,
                "events",
                batch_id="b",
                camera_id="cam1",
                started_at=value,
                clip_path=world.file(f"{CLIPS}/{name}.mp4"),
            )
            detection = _insert_naive(
                naive_engine,
                "detections",
                camera_id="cam1",
                detected_at=value,
                media_type="image",
                file_path=world.file(f"{IMAGES}/{name}.jpg"),
                thumbnail_path=world.file(f"{THUMBS}/{name}.jpg"),
            )
            gpu = _insert_naive(naive_engine, "gpu_stats", recorded_at=value)
            log_at = _naive_spellings(naive_engine, world.log_cutoff + at)[n]
            log = _insert_naive(naive_engine, "logs", timestamp=log_at, level="INFO", message="m")
            edge[at] |= {("events", event), ("detections", detection), ("gpu_stats", gpu), ("logs", log)}
    run_config, tags = scene.launch(monkeypatch, instance, cleanup_time="02:30")
    before = scene.snapshot()

    result = execute(world, instance, run_config, tags)

    assert result.success, failure_messages(result)
    after = scene.snapshot()
    present = {
        (name, row) for name in ("events", "detections", "gpu_stats", "logs") for row in after.rows(name)
    }
    assert {at for at, rows in edge.items() if rows <= present} == {timedelta(0), SECOND}
    assert not edge[-SECOND] & present
    verify_finished_run(scene.policy, before, after, reported(instance, result.run_id))
    scene.finish_and_verify()


def _crashing_while_purging_events(clean_table: Callable[..., Any]) -> Callable[..., Any]:
    """clean_table, crashing when it comes to events."""

    def crashing(engine: Engine, plan: Any, table: str, *args: Any) -> Any:
        if table == "events":
            raise RuntimeError("simulated crash: the database went away while events were purged")
        return clean_table(engine, plan, table, *args)

    return crashing


def _probing_the_run_lock(clean_table: Callable[..., Any], seen: list[str]) -> Callable[..., Any]:
    """clean_table, first noting for events whether another run could take the database's run lock now."""

    def probing(engine: Engine, plan: Any, table: str, *args: Any) -> Any:
        if table != "events":
            return clean_table(engine, plan, table, *args)
        other = ExclusiveRunLock(engine)
        try:
            other.acquire()
        except RunLockBusy:
            seen.append("held")
        else:
            other.release()
            seen.append("free")
        return clean_table(engine, plan, table, *args)

    return probing


@pytest.mark.parametrize("strategy", ["from_failure", "all_steps"])
def test_a_retry_an_hour_after_the_tick_keeps_the_cutoff_of_the_first_attempt(
    engine: Engine,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
):
    # The product reads no clock once a run has its tick, so no clock is frozen: the tick is an hour
    # in the past, which makes the retry's wall clock an hour (and up to a minute) later than its tick.
    tick = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    scene = TimeScene(engine, tmp_path, tick)
    world = scene.world
    run_config, tags = scene.launch(monkeypatch, instance, cleanup_time=f"{tick.astimezone(BERLIN):%H:%M}")
    job = dg.reconstructable(served_data_cleanup)
    first_before = scene.snapshot()
    with monkeypatch.context() as crash:
        crash.setattr(cleanup, "clean_table", _crashing_while_purging_events(cleanup.clean_table))
        first = dg.execute_job(job, instance, run_config=run_config, tags=tags, raise_on_error=False)
    assert not first.success
    verify_interrupted_run(scene.policy, first_before, scene.snapshot())

    # Recorded during that hour: young at the tick, though older than "now - RETENTION_DAYS" by now.
    young = [world.detection(world.cutoff + timedelta(minutes=m)) for m in (1, 30, 59)]
    young_event = world.event(world.cutoff + timedelta(minutes=30))
    retry_before = scene.snapshot()
    if strategy == "from_failure":  # the daemon's automatic retries: reuses the steps that succeeded
        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    else:  # "Re-execute all" in the UI: plan_cleanup fixes its cutoff again
        options = dg.ReexecutionOptions(parent_run_id=first.run_id)
    parent = instance.get_run_by_id(first.run_id)
    assert parent is not None
    # Retries copy the parent's run config and tags (use_parent_run_tags=True in the daemon and the UI);
    # execute_job copies only the config, so the tags are passed as the daemon would pass them.
    retry_tags = {k: v for k, v in parent.tags.items() if k != "dagster/failure_reason"}
    lock_while_retrying: list[str] = []
    with monkeypatch.context() as probe:
        probe.setattr(cleanup, "clean_table", _probing_the_run_lock(cleanup.clean_table, lock_while_retrying))
        retry = dg.execute_job(
            job, instance, reexecution_options=options, tags=retry_tags, raise_on_error=False
        )

    assert retry.success, failure_messages(retry)
    assert lock_while_retrying == ["held"], "the retry deleted events without holding the run lock"
    after = scene.snapshot()
    assert cutoffs(instance, first.run_id) == cutoffs(instance, retry.run_id) == {world.cutoff.isoformat()}
    assert set(young) <= set(after.detections) and young_event in after.events
    report = reported(instance, retry.run_id)
    # A retry from failure reports the reused steps' counts too: its report covers both attempts.
    since = first_before if strategy == "from_failure" else retry_before
    problems = check_safe(scene.policy, retry_before, after)
    problems += check_complete(scene.policy, retry_before, after)
    assert_no_problems(problems + check_stats(scene.policy, since, after, report))
    scene.finish_and_verify()
