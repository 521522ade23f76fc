"""Overlapping launches through a live Dagster: two GraphQL submissions of data_cleanup at the same moment,
and the daily schedule's tick while the first of them runs. The run queue (dagster.yaml's tag limit on
`retention_pipeline/exclusive`) must keep them apart: each later run waits in QUEUED and starts only
after the one before has ended; the first deletes everything expired, the later ones find nothing.

`dagster dev` (webserver, daemon, code server) runs with a temporary DAGSTER_HOME holding a copy of the
repository's dagster.yaml, pointed at the test's camera database and media (see browser/helpers.py).

How the schedule fires: the daemon ticks once a minute at the cron time, and this world's cutoffs are
fixed in the past, so waiting for a real tick would cost a minute and need the real clock. Instead the
webserver evaluates the tick (the `scheduleDryRun` mutation behind the UI's "Test schedule"): the code
server computes `daily_data_cleanup`'s run request at the tick time with the live instance, as for the
daemon's `_schedule_runs_at_time`. The request is then submitted as the daemon's `_create_scheduler_run`
does (its tags plus the hidden `.dagster/scheduled_execution_time`) into the same queued run coordinator.
Only the tick bookkeeping (a `dagster/tick` tag, a tick record) differs from a daemon launch. Evaluating
with `dg.build_schedule_context` in the test process instead would read the test's environment, not the
code server's.
"""

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Barrier
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient
from sqlalchemy.engine import Engine

from retention_pipeline.history import recent_cleanup_runs
from retention_pipeline_tests.browser.helpers import LOCATION, DagsterServer, dagster_dev
from retention_pipeline_tests.conftest import NOW
from retention_pipeline_tests.dagster_helpers import environment_for, plan_config
from retention_pipeline_tests.factories import CameraWorld

from .invariants import Policy, take_snapshot, verify_finished_run
from .worlds import Recorder, Recording, analyze, plant_sentinels

# dagster_graphql 1.13's own client calls gql in a way gql 4 deprecates; nothing this project can change.
pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning")

JOB = "data_cleanup"
REPOSITORY = "__repository__"
SCHEDULE = "daily_data_cleanup"
# Small enough that the first run deletes for several seconds: without the queue the runs would overlap.
BATCH_SIZE = 10
RUN_TIMEOUT = 180
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
ACTIVE = {"STARTING", "STARTED"}
# Counters a run that finds nothing left to do must report as zero.
CHANGES = (
    "events_deleted",
    "alerts_deleted",
    "detections_deleted",
    "gpu_stats_deleted",
    "logs_deleted",
    "thumbnails_deleted",
    "images_deleted",
    "clips_deleted",
    "space_reclaimed",
    "files_missing",
    "files_refused",
    "files_failed",
    "files_kept_shared",
)

SCHEDULE_DRY_RUN = """
mutation($selector: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick { evaluationResult {
      skipReason error { message } runRequests { runConfigYaml tags { key value } } } }
    ... on PythonError { message }
  }
}"""
RUN_STATUSES = """
query($ids: [String!]) {
  runsOrError(filter: {runIds: $ids}) { ... on Runs { results { runId status } } }
}"""


def _client(server: DagsterServer) -> DagsterGraphQLClient:
    address = urlsplit(server.url)
    return DagsterGraphQLClient(str(address.hostname), port_number=address.port)


def _submit_at_once(server: DagsterServer, run_config: dict[str, Any], copies: int = 2) -> list[str]:
    """Submissions released together by a barrier, each on its own client and connection."""
    barrier = Barrier(copies)

    def submit(client: DagsterGraphQLClient) -> str:
        barrier.wait()
        return client.submit_job_execution(
            JOB, LOCATION, REPOSITORY, run_config=run_config, tags={"test": "overlap"}
        )

    with ThreadPoolExecutor(copies) as pool:
        return list(pool.map(submit, [_client(server) for _ in range(copies)]))


def _launch_scheduled_tick(server: DagsterServer, tick: datetime) -> str:
    """Evaluate daily_data_cleanup at `tick` in the code server and submit its one run request."""
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "scheduleName": SCHEDULE}
    answer = server.graphql(SCHEDULE_DRY_RUN, {"selector": selector, "timestamp": tick.timestamp()})
    result = answer["scheduleDryRun"].get("evaluationResult")
    assert result is not None, answer
    # Documented: a tick during a retention run is not skipped; its run waits in the queue.
    assert result["skipReason"] is None and result["error"] is None, result
    (request,) = result["runRequests"]
    tags = {tag["key"]: tag["value"] for tag in request["tags"]}
    tags[".dagster/scheduled_execution_time"] = tick.isoformat()
    return _client(server).submit_job_execution(
        JOB,
        LOCATION,
        REPOSITORY,
        run_config=dg.config_from_yaml_strings([request["runConfigYaml"]]),
        tags=tags,
    )


def _statuses(server: DagsterServer, run_ids: list[str]) -> dict[str, str]:
    data = server.graphql(RUN_STATUSES, {"ids": run_ids})
    return {run["runId"]: run["status"] for run in data["runsOrError"]["results"]}


def _launch_and_watch(
    server: DagsterServer, tick: datetime, run_config: dict[str, Any]
) -> tuple[list[str], str, list[dict[str, str]]]:
    """Two manual runs at once, the schedule's once one of them runs; every status seen until all end."""
    run_ids = _submit_at_once(server, run_config)
    scheduled: str | None = None
    seen: list[dict[str, str]] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        statuses = _statuses(server, run_ids)
        seen.append(statuses)
        if scheduled is None and "STARTED" in statuses.values():
            scheduled = _launch_scheduled_tick(server, tick)
            run_ids.append(scheduled)
        elif scheduled is not None and set(statuses.values()) <= TERMINAL:
            return run_ids, scheduled, seen
        assert time.monotonic() < deadline, f"runs not finished after {RUN_TIMEOUT}s: {statuses}\n" + (
            server.log_tail()
        )
        time.sleep(0.2)


@dataclass(frozen=True)
class Timeline:
    run_id: str
    status: str
    enqueued: float  # RUN_ENQUEUED: submitted into the queue
    launched: float  # RUN_STARTING: the coordinator took it off the queue
    ended: float
    failures: tuple[str, ...]
    tags: Mapping[str, str]


def _timeline(instance: dg.DagsterInstance, run_id: str) -> Timeline:
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.end_time is not None, run_id
    when: dict[dg.DagsterEventType, float] = {}
    failures = []
    for entry in instance.get_records_for_run(run_id).records:
        event = entry.event_log_entry.dagster_event
        if event is not None:
            when.setdefault(event.event_type, entry.event_log_entry.timestamp)
            if event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_failure_data.error:
                failures.append(f"{event.step_key}: {event.step_failure_data.error.message.strip()}")
    return Timeline(
        run_id,
        record.dagster_run.status.value,
        when[dg.DagsterEventType.RUN_ENQUEUED],
        when[dg.DagsterEventType.RUN_STARTING],
        record.end_time,
        tuple(failures),
        record.dagster_run.tags,
    )


def test_overlapping_launches_queue_one_after_another_and_only_the_first_deletes(
    engine: Engine, tmp_path: Path, dagster_home: Path
):
    # The tick (and so the world's `now`) sits twelve hours from the real clock: the running daemon
    # must not fire a real tick of its own during the test.
    clock = (datetime.now(UTC) + timedelta(hours=12)).time().replace(second=0, microsecond=0)
    tick = datetime.combine(NOW.date(), clock, UTC)
    world = CameraWorld(engine, tmp_path / "media", now=tick)
    outside = plant_sentinels(world, tmp_path)
    Recorder(world, seed=4).record(Recording(detections=2500, events=500, gpu_stats=400, logs=400))
    analyze(world)
    policy = Policy.of(world, delete_images=True)
    before = take_snapshot(engine, [world.media, outside])
    settings = {
        "CLEANUP_TIME": f"{tick:%H:%M}",
        "CLEANUP_TIMEZONE": "UTC",
        "CLEANUP_BATCH_SIZE": str(BATCH_SIZE),
        "DELETE_IMAGES": "true",
    }
    manual = plan_config(
        dry_run=False, reference_time=tick.isoformat(), batch_size=BATCH_SIZE, delete_images=True
    )

    with dagster_dev(dagster_home, environment_for(world), env_overrides=settings) as server:
        run_ids, scheduled, seen = _launch_and_watch(server, tick, manual)
    after = take_snapshot(engine, [world.media, outside])

    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        timelines = sorted((_timeline(instance, r) for r in run_ids), key=lambda t: t.launched)
        reports = {row["run_id"]: row for row in recent_cleanup_runs(instance, limit=10)}

    # Never two at once, whether by the statuses seen live or by the instance's timestamps; each later
    # run was already waiting in the queue while the one before it ran.
    overlapping = [statuses for statuses in seen if sum(s in ACTIVE for s in statuses.values()) > 1]
    assert not overlapping, f"two runs active at once: {overlapping[0]}"
    first, *later = timelines
    for earlier, following in zip(timelines, later, strict=False):
        assert following.launched >= earlier.ended, f"runs overlapped: {earlier} {following}"
        assert following.enqueued < earlier.ended, f"not queued behind the run before: {following}"
        assert any(s.get(following.run_id) == "QUEUED" and ACTIVE & set(s.values()) for s in seen)
    # The tick met a live run: the schedule's stale-run check (blocking_runs) must not have failed it.
    assert all(run.status == "SUCCESS" for run in timelines), timelines

    schedule_tags = next(run.tags for run in timelines if run.run_id == scheduled)
    assert schedule_tags["dagster/schedule_name"] == SCHEDULE
    assert schedule_tags[".dagster/scheduled_execution_time"] == tick.isoformat()
    # Every run measured the same cutoff from the tick: the manual runs by config, the schedule by tick.
    assert {reports[r]["cutoff"] for r in run_ids} == {world.cutoff.isoformat()}
    assert not any(reports[r]["dry_run"] for r in run_ids)

    # (a)-(e) for the three runs together: the first did all the work and reported it truthfully, the
    # later ones found nothing left and said so.
    verify_finished_run(policy, before, after, reports[first.run_id])
    for run in later:
        assert {field: reports[run.run_id][field] for field in CHANGES} == dict.fromkeys(CHANGES, 0)

    # (d) once more: one more normal run has nothing left to do, and keeps every promise doing it.
    stats = world.run(delete_images=True)
    verify_finished_run(policy, after, take_snapshot(engine, [world.media, outside]), stats.as_dict())
    assert {field: stats.as_dict()[field] for field in CHANGES} == dict.fromkeys(CHANGES, 0)
