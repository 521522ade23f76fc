"""disk_pressure_sensor and emergency mode, with free space read from a fake disk that fills with rows."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.schema import detections
from retention_pipeline.jobs import data_cleanup
from retention_pipeline.resources import DiskSpaceResource
from retention_pipeline.sensors import disk_pressure_sensor
from retention_pipeline_tests.dagster_helpers import camera_resource, failure_messages, plan_config
from retention_pipeline_tests.factories import CameraWorld


class RowsFillTheDisk(DiskSpaceResource):
    """Free space falls as detections pile up: each of `capacity` slots holds one detection."""

    database_url: str
    capacity: int

    def free_percent(self, path: str) -> float:
        engine = make_engine(self.database_url)
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(detections)).scalar_one()
        engine.dispose()
        return 100.0 * (1 - rows / self.capacity)


class FixedDisk(DiskSpaceResource):
    free: float

    def free_percent(self, path: str) -> float:
        return self.free


@pytest.fixture
def full(engine: Engine, tmp_path: Path) -> CameraWorld:
    """One detection per day over the 30-day retention: nothing has expired, yet the disk is 9% free."""
    world = CameraWorld(engine, tmp_path / "media", now=datetime.now(UTC).replace(microsecond=0))
    for day in range(30):
        world.detection(world.now - timedelta(days=day, hours=12))
    return world


def emergency_run(world: CameraWorld, instance, disk: DiskSpaceResource) -> dg.ExecuteInProcessResult:
    return data_cleanup.execute_in_process(
        run_config=plan_config(dry_run=False, emergency=True, reference_time=world.now.isoformat()),
        resources={"camera_system": camera_resource(world), "disk": disk},
        instance=instance,
        raise_on_error=False,
    )


def test_sensor_requests_one_emergency_run_per_hour_below_the_minimum(
    full: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DATABASE_URL", full.engine.url.render_as_string(hide_password=False))
    resources = {"camera_system": camera_resource(full), "disk": FixedDisk(free=9.0)}

    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        request = disk_pressure_sensor(context)

    assert isinstance(request, dg.RunRequest)
    config = request.run_config["ops"]["plan_cleanup"]["config"]
    assert config["emergency"] is True and config["dry_run"] is False
    assert request.run_key == f"disk_pressure_{datetime.now(UTC):%Y%m%d%H}"
    dg.validate_run_config(data_cleanup, request.run_config)


def test_sensor_skips_with_room_on_the_disk(full: CameraWorld, instance):
    resources = {"camera_system": camera_resource(full), "disk": FixedDisk(free=40.0)}

    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        skipped = disk_pressure_sensor(context)

    assert isinstance(skipped, dg.SkipReason) and "40.0% free" in skipped.skip_message


def test_emergency_mode_cuts_retention_a_day_at_a_time_oldest_first_until_the_target(
    full: CameraWorld, instance
):
    url = full.engine.url.render_as_string(hide_password=False)
    newest_ids = sorted(full.ids(detections))[:28]  # inserted newest first

    result = emergency_run(full, instance, RowsFillTheDisk(database_url=url, capacity=33))

    assert result.success
    assert sorted(full.ids(detections)) == newest_ids  # the two oldest days went, nothing else
    metadata = {
        k: v.value
        for e in result.all_events
        if e.is_successful_output and e.step_key == "relieve_disk_pressure"
        for k, v in e.step_output_data.metadata.items()
    }
    assert metadata["emergency_days_cut"] == 2 and metadata["emergency_retention_days"] == 28
    assert metadata["free_percent_before"] == pytest.approx(9.09, abs=0.01)
    assert metadata["free_percent_after"] >= 15.0
    assert "shortened from 30 to 28 days" in metadata["emergency_reason"]
    # The Runs page's chips count what the emergency passes deleted too, not only the normal pass.
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["detections_deleted"] == "2"
    assert metadata["run_total"]["detections_deleted"] == 2


def test_emergency_mode_never_goes_below_min_retention_and_fails_loudly(
    full: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MIN_RETENTION_DAYS", "29")
    url = full.engine.url.render_as_string(hide_password=False)

    result = emergency_run(full, instance, RowsFillTheDisk(database_url=url, capacity=33))

    assert not result.success
    assert "after cutting retention from 30 to 29 days (MIN_RETENTION_DAYS=29)" in failure_messages(result)
    assert full.count(detections) == 29
