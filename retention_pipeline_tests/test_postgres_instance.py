"""The production shape: the Dagster instance itself stored in PostgreSQL (dagster-postgres)."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from retention_pipeline.core.job_status import job_key
from retention_pipeline.core.schema import events
from retention_pipeline.history import recent_cleanup_runs
from retention_pipeline.jobs import data_cleanup
from retention_pipeline.resources import DiskSpaceResource
from retention_pipeline.sensors import SENSOR_NAME, SENSOR_TAG, disk_pressure_sensor
from retention_pipeline_tests.conftest import RedisServer, postgres_instance_in
from retention_pipeline_tests.dagster_helpers import camera_resource, execute, failure_messages, plan_config
from retention_pipeline_tests.factories import CameraWorld


def test_job_runs_and_reports_on_an_instance_stored_in_postgresql(world: CameraWorld, postgres_instance):
    world.event(world.old(), alerts_count=1)
    world.event(world.recent())
    assert type(postgres_instance.run_storage).__name__ == "PostgresRunStorage"

    result = execute(
        world, postgres_instance, plan_config(dry_run=False, reference_time=world.now.isoformat())
    )

    assert result.success
    assert world.count(events) == 1
    [row] = recent_cleanup_runs(postgres_instance, limit=3)
    assert row["events_deleted"] == 1 and row["alerts_deleted"] == 1 and row["clips_deleted"] == 1


# Dagster stores a run's create_timestamp as the database's naive local time and reads it back as UTC.
WEST_AND_EAST_OF_UTC = ["America/New_York", "Asia/Tokyo"]


class StillFull(DiskSpaceResource):
    """5% free, whatever is deleted: filled by something a cleanup cannot delete."""

    def free_percent(self, path: str) -> float:
        return 5.0


@pytest.fixture(params=WEST_AND_EAST_OF_UTC)
def instance_outside_utc(
    request: pytest.FixtureRequest, postgres_database: str
) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance stored in a PostgreSQL database whose time zone is not UTC."""
    with postgres_instance_in(request.param) as instance:
        yield instance


def test_a_run_launched_by_hand_measures_its_cutoffs_from_its_launch_whatever_the_database_time_zone(
    world: CameraWorld, instance_outside_utc: dg.DagsterInstance
):
    launched = datetime.now(UTC)

    # No reference_time and no schedule tick: a run from the Launchpad or the CLI.
    result = execute(world, instance_outside_utc, plan_config(dry_run=True))

    assert result.success, failure_messages(result)
    cutoff = result.output_for_node("plan_cleanup").cutoff
    assert abs(cutoff - (launched - timedelta(days=30))) < timedelta(minutes=1)


def test_the_sensor_judges_a_run_that_gave_up_by_when_it_did_whatever_the_database_time_zone(
    world: CameraWorld, instance_outside_utc: dg.DagsterInstance
):
    for day in range(30):
        world.detection(world.now - timedelta(days=day, hours=12))
    had_room_before = datetime.now(UTC) - timedelta(minutes=10)
    gave_up = data_cleanup.execute_in_process(
        run_config=plan_config(dry_run=False, emergency=True, reference_time=world.now.isoformat()),
        resources={"camera_system": camera_resource(world), "disk": StillFull()},
        instance=instance_outside_utc,
        tags={SENSOR_TAG: SENSOR_NAME},
        raise_on_error=False,
    )
    assert not gave_up.success
    had_room_since = datetime.now(UTC) + timedelta(seconds=1)

    def evaluate(cursor: datetime) -> dg.RunRequest | dg.SkipReason:
        resources = {"camera_system": camera_resource(world), "disk": StillFull()}
        with dg.build_sensor_context(
            instance=instance_outside_utc, resources=resources, cursor=str(cursor.timestamp())
        ) as context:
            return disk_pressure_sensor(context)

    # Gave up after the disk last had room: asking again would only erase more retention for nothing.
    assert isinstance(evaluate(had_room_before), dg.SkipReason)
    # The disk had room since (freed by other means) and filled again: worth another try.
    assert isinstance(evaluate(had_room_since), dg.RunRequest)


def test_the_camera_systems_job_record_says_when_the_run_was_launched_whatever_the_database_time_zone(
    world: CameraWorld,
    instance_outside_utc: dg.DagsterInstance,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("JOB_STATUS_REDIS_URL", redis_server.url)
    launched = datetime.now(UTC)

    assert execute(world, instance_outside_utc, plan_config(dry_run=True)).success

    client = redis_server.client()
    [job_id] = client.zrange("job:status:list", 0, -1)
    created = datetime.fromisoformat(json.loads(client.get(job_key(job_id)))["created_at"])
    assert abs(created - launched) < timedelta(minutes=1)
