"""disk_pressure_sensor and emergency mode, with free space read from a fake disk that fills with rows."""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from retention_pipeline.core.cleanup import prepare_database, run_cleanup
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.inventory import oldest_kept
from retention_pipeline.core.policy import read_policy
from retention_pipeline.core.schema import detections, events, gpu_stats
from retention_pipeline.core.tables import Registry
from retention_pipeline.jobs import data_cleanup
from retention_pipeline.resources import CameraSystemResource, DiskSpaceResource
from retention_pipeline.sensors import SENSOR_NAME, SENSOR_TAG, disk_pressure_sensor
from retention_pipeline_tests.dagster_helpers import (
    camera_resource,
    failure_messages,
    latest_observation,
    plan_config,
)
from retention_pipeline_tests.factories import CLIPS, IMAGES, THUMBS, CameraWorld


class RowsFillTheDisk(DiskSpaceResource):
    """Free space falls as detections pile up: each of `capacity` slots holds one detection. With `volume`,
    only the filesystem holding that path fills; every other one has 50% free."""

    database_url: str
    capacity: int
    volume: str = ""

    def free_percent(self, path: str) -> float:
        if self.volume and os.stat(path).st_dev != os.stat(self.volume).st_dev:
            return 50.0
        engine = make_engine(self.database_url)
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(detections)).scalar_one()
        engine.dispose()
        return 100.0 * (1 - rows / self.capacity)


class FixedDisk(DiskSpaceResource):
    free: float

    def free_percent(self, path: str) -> float:
        return self.free


class OneVolumeFull(DiskSpaceResource):
    """`free` percent on the filesystem holding `volume`, 50% on every other one."""

    volume: str
    free: float

    def free_percent(self, path: str) -> float:
        return self.free if os.stat(path).st_dev == os.stat(self.volume).st_dev else 50.0


def online(root: Path) -> Path:
    """A storage root as a mounted volume shows it: not empty (an empty one looks unmounted)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "camera_file.bin").write_bytes(b"x")
    return root


def emergency_run(
    world: CameraWorld,
    instance,
    disk: DiskSpaceResource,
    tags: dict[str, str] | None = None,
    clips_dir: str = CLIPS,
    **config: Any,
) -> dg.ExecuteInProcessResult:
    return data_cleanup.execute_in_process(
        run_config=plan_config(dry_run=False, emergency=True, reference_time=world.now.isoformat(), **config),
        resources={"camera_system": camera_resource(world, clips_dir), "disk": disk},
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )


def relief_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {
        k: v.value
        for e in result.all_events
        if e.is_successful_output and e.step_key == "relieve_disk_pressure"
        for k, v in e.step_output_data.metadata.items()
    }


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
    # The run key names the hour of the instant the sensor ran, which its config carries too.
    asked_at = datetime.fromisoformat(config["reference_time"])
    assert abs(datetime.now(UTC) - asked_at) < timedelta(minutes=1)
    assert request.run_key == f"disk_pressure_{asked_at:%Y%m%d%H}"
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
    metadata = relief_metadata(result)
    assert metadata["emergency_days_cut"] == 2 and metadata["emergency_retention_days"] == 28
    assert metadata["free_percent_before"] == pytest.approx(9.09, abs=0.01)
    assert metadata["free_percent_after"] >= 15.0
    assert "shortened from 30 to 28 days" in metadata["emergency_reason"]
    # The Runs page's chips count what the emergency passes deleted too, not only the normal pass.
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["detections_deleted"] == "2"
    assert metadata["run_total"]["detections_deleted"] == 2
    # The assets' last observations follow the emergency passes: what they deleted, the rows left.
    observed = latest_observation(instance, "detections")
    assert (observed["rows"], observed["rows_deleted"]) == (28, 2)
    assert latest_observation(instance, "thumbnails")["files_deleted"] == 2


def test_emergency_mode_never_goes_below_min_retention_and_fails_loudly(
    full: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MIN_RETENTION_DAYS", "29")
    url = full.engine.url.render_as_string(hide_password=False)

    result = emergency_run(full, instance, RowsFillTheDisk(database_url=url, capacity=33))

    assert not result.success
    assert "after cutting retention from 30 to 29 days (MIN_RETENTION_DAYS=29)" in failure_messages(result)
    assert full.count(detections) == 29


def test_an_emergency_pass_that_frees_nothing_stops_the_run_instead_of_cutting_further(
    full: CameraWorld, instance
):
    # Something deletion cannot touch fills the disk: no pass changes the free space.
    result = emergency_run(full, instance, FixedDisk(free=5.0))

    assert not result.success
    assert "freed anything measurable" in failure_messages(result)
    assert "deleted 1 files" in failure_messages(result)
    assert "passes deleting files on the volume of" in failure_messages(result)
    # Two passes (once can be the camera writing as much as a pass frees), not 29 days of 30.
    assert full.count(detections) == 28


class FilesFillTheDisk(DiskSpaceResource):
    """Free space falls with the thumbnails on disk, as on a real disk (deleted rows do not shrink a
    database file): `capacity` slots, one thumbnail each; with `volume`, only that filesystem fills."""

    folder: str
    capacity: int
    volume: str = ""

    def free_percent(self, path: str) -> float:
        if self.volume and os.stat(path).st_dev != os.stat(self.volume).st_dev:
            return 50.0
        files = sum(len(names) for _dir, _subdirs, names in os.walk(self.folder))
        return 100.0 * (1 - files / self.capacity)


def test_a_pass_that_deletes_only_rows_does_not_count_as_freeing_nothing(
    engine: Engine, tmp_path: Path, instance
):
    world = CameraWorld(engine, tmp_path / "media", now=datetime.now(UTC).replace(microsecond=0))
    for day in range(27):  # a detection with its thumbnail on each of the last 27 days
        world.detection(world.now - timedelta(days=day, hours=12), image=None)
    for day in (27, 28, 29):  # three quiet days: GPU statistics only, which take no room on the disk
        world.gpu(world.now - timedelta(days=day, hours=12))
    disk = FilesFillTheDisk(folder=str(world.media / THUMBS), capacity=29)  # 27 of 29: 6.9% free

    result = emergency_run(world, instance, disk)

    assert result.success, failure_messages(result)
    assert disk.free_percent("/") >= 15.0  # the target, reached by the passes after the quiet days
    assert world.count(gpu_stats) == 0


def test_files_deleted_on_a_roomy_volume_do_not_count_as_freeing_nothing_on_the_full_one(
    full: CameraWorld, instance, other_volume: Path
):
    # Thumbnails on the media volume, with room to spare; clips on a volume of their own, full of them.
    # The two oldest days hold detections only: their passes delete thumbnails, freeing nothing there.
    clips = other_volume / "clips"
    clips.mkdir()
    for day in range(28):
        clip = clips / f"c{day}.mp4"
        clip.write_bytes(b"x" * 100)
        full.event(full.now - timedelta(days=day, hours=13), clip=str(clip))
    disk = FilesFillTheDisk(folder=str(clips), capacity=31, volume=str(other_volume))  # 9.7% free

    result = emergency_run(full, instance, disk, clips_dir=str(clips))

    assert result.success, failure_messages(result)
    assert disk.free_percent(str(clips)) >= 15.0
    assert full.count(events) == 26  # two clips freed the room; the thumbnail-only passes went on


def test_the_sensor_measures_the_volume_of_each_storage_root_a_cleanup_deletes_from(
    full: CameraWorld, instance, other_volume: Path
):
    def evaluate(disk: DiskSpaceResource, **dirs: str) -> dg.RunRequest | dg.SkipReason:
        folders = {"thumbnail_dir": THUMBS, "clips_dir": CLIPS, "images_dir": IMAGES, **dirs}
        camera = CameraSystemResource(
            database_url=full.engine.url.render_as_string(hide_password=False),
            media_root=str(full.media),
            **folders,
        )
        with dg.build_sensor_context(
            instance=instance, resources={"camera_system": camera, "disk": disk}
        ) as ctx:
            return disk_pressure_sensor(ctx)

    full_there = OneVolumeFull(volume=str(other_volume), free=5.0)
    online(other_volume / "clips")
    clips_there = evaluate(full_there, clips_dir=str(other_volume / "clips"))
    # Original images are deleted only with DELETE_IMAGES: their volume filling is not the cleanup's to fix.
    images_there = evaluate(full_there, images_dir=str(other_volume / "images"))

    assert isinstance(clips_there, dg.RunRequest)
    assert isinstance(images_there, dg.SkipReason)
    assert str(other_volume) not in images_there.skip_message and "50.0% free" in images_there.skip_message


def test_emergency_mode_relieves_the_volume_a_storage_root_lives_on(
    full: CameraWorld, instance, other_volume: Path
):
    url = full.engine.url.render_as_string(hide_password=False)
    online(other_volume / "thumbnails")
    camera = CameraSystemResource(
        database_url=url,
        media_root=str(full.media),
        thumbnail_dir=str(other_volume / "thumbnails"),
        clips_dir=CLIPS,
        images_dir=IMAGES,
    )

    result = data_cleanup.execute_in_process(
        run_config=plan_config(dry_run=False, emergency=True, reference_time=full.now.isoformat()),
        resources={
            "camera_system": camera,
            "disk": RowsFillTheDisk(database_url=url, capacity=33, volume=str(other_volume)),
        },
        instance=instance,
        raise_on_error=False,
    )

    assert result.success, failure_messages(result)
    assert full.count(detections) == 28
    assert relief_metadata(result)["free_percent_before"] == pytest.approx(9.09, abs=0.01)


def test_after_an_emergency_run_that_could_not_relieve_the_disk_the_sensor_waits_until_it_had_room(
    full: CameraWorld, instance
):
    failed = emergency_run(full, instance, FixedDisk(free=5.0), tags={SENSOR_TAG: SENSOR_NAME})
    assert not failed.success

    def evaluate(free: float, cursor: str | None = None) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
        resources = {"camera_system": camera_resource(full), "disk": FixedDisk(free=free)}
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
            return disk_pressure_sensor(context), context.cursor

    still_full, _ = evaluate(5.0)
    _, cursor = evaluate(40.0)  # freed by other means
    full_again, _ = evaluate(5.0, cursor)

    assert isinstance(still_full, dg.SkipReason) and failed.run_id in still_full.skip_message
    assert isinstance(full_again, dg.RunRequest)
    assert full.count(detections) == 28  # the two passes that proved deleting does not help, no more


def test_a_day_after_an_emergency_run_gave_up_the_sensor_asks_again_though_the_disk_never_had_room(
    full: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    # That run may have given up wrongly (the camera writing as fast as it freed): the disk must not
    # be left to fill for good.
    import retention_pipeline.sensors as sensors

    assert not emergency_run(full, instance, FixedDisk(free=5.0), tags={SENSOR_TAG: SENSOR_NAME}).success
    resources = {"camera_system": camera_resource(full), "disk": FixedDisk(free=5.0)}

    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        within_the_day = disk_pressure_sensor(context)
    monkeypatch.setattr(sensors, "GIVE_UP_FOR", timedelta(0))
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        a_day_later = disk_pressure_sensor(context)

    assert isinstance(within_the_day, dg.SkipReason) and isinstance(a_day_later, dg.RunRequest)


def test_emergency_mode_steps_straight_to_the_oldest_data_across_days_without_any(
    full: CameraWorld, instance
):
    url = full.engine.url.render_as_string(hide_password=False)

    # Data covers the last 30 days of a 120-day retention: 90 days hold nothing to delete.
    result = emergency_run(full, instance, RowsFillTheDisk(database_url=url, capacity=33), retention_days=120)

    assert result.success, failure_messages(result)
    assert [step["retention_days"] for step in relief_metadata(result)["steps"]] == [29, 28]
    assert full.count(detections) == 28


def test_emergency_metadata_counts_every_table_and_says_when_the_free_space_was_read(
    full: CameraWorld, instance
):
    for day in (28, 29):
        full.gpu(full.now - timedelta(days=day, hours=12))
    url = full.engine.url.render_as_string(hide_password=False)

    # 30 of 34 slots: 11.8% free, above the 10% minimum but under the 15% target.
    result = emergency_run(full, instance, RowsFillTheDisk(database_url=url, capacity=34))

    assert result.success, failure_messages(result)
    metadata = relief_metadata(result)
    assert [step["rows_deleted"] for step in metadata["steps"]] == [2, 2]  # a detection and a GPU row each
    assert [step["files_deleted"] for step in metadata["steps"]] == [1, 1]  # thumbnails; images are kept
    assert metadata["emergency_reason"] == (
        "after the normal cleanup 11.8% was free, under the 15.0% target; retention shortened from 30 to"
        " 28 days, leaving 17.6% free"
    )


def test_an_emergency_pass_deletes_the_files_of_the_gpu_stats_rows_it_purges(
    world: CameraWorld, tmp_path: Path
):
    with world.engine.begin() as conn:
        conn.execute(text("ALTER TABLE gpu_stats ADD COLUMN snapshot_path VARCHAR(1024)"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tables:\n  - table: gpu_stats\n    time_column: recorded_at\n    retention_days: 36500\n"
        "    files: {snapshot_path: thumbnails}\n"
    )
    world.policy = read_policy(policy)
    row = world.gpu(world.now - timedelta(days=29, hours=12))
    snapshot = world.file(f"{THUMBS}/gpu_snapshot.png", 4096)
    with world.engine.begin() as conn:
        conn.execute(
            text("UPDATE gpu_stats SET snapshot_path = :path WHERE id = :id"), {"path": snapshot, "id": row}
        )
    prepare_database(world.engine, world.policy)

    # What each emergency step runs: a whole cleanup at one day less.
    stats = run_cleanup(world.engine, world.plan(emergency=True).with_retention(29))

    assert stats.gpu_stats_deleted == 1 and world.count(gpu_stats) == 0
    assert not world.exists(snapshot)
    assert stats.thumbnails_deleted == 1 and stats.space_reclaimed == 4096


def test_emergency_steps_are_measured_from_the_oldest_kept_row_as_an_instant_whatever_its_spelling(
    world: CameraWorld,
):
    # Ten o'clock UTC written in +05:00, and noon written with a space: as text noon sorts first.
    oldest = (world.cutoff + timedelta(days=1)).replace(hour=10, minute=0, second=0)
    for spelled in (
        (oldest + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S+05:00"),
        (oldest + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S"),
    ):
        with world.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO detections (camera_id, file_path, detected_at, object_type, confidence,"
                    " media_type) VALUES ('cam1', 'x.jpg', :at, 'person', 0.9, 'image')"
                ),
                {"at": spelled},
            )
    retained = world.event(world.recent(2))
    world.detection(world.old(10), events_=(retained,))  # older, but kept by the keep rule: no bound

    assert oldest_kept(world.engine, Registry(), world.cutoff) == oldest


def test_an_images_root_the_cleanup_does_not_delete_from_is_never_looked_at(
    full: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    # /export/foscam may be unreadable to the pipeline, or a stale NFS mount that hangs a stat().
    import retention_pipeline.core.volumes as volumes

    looked_at = volumes.missing_or_empty

    def guarded(path: str) -> bool:
        if IMAGES in path:
            raise PermissionError(13, "Permission denied", path)
        return looked_at(path)

    monkeypatch.setattr(volumes, "missing_or_empty", guarded)
    resources = {"camera_system": camera_resource(full), "disk": FixedDisk(free=40.0)}

    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        answer = disk_pressure_sensor(context)

    assert isinstance(answer, dg.SkipReason) and "40.0% free" in answer.skip_message
