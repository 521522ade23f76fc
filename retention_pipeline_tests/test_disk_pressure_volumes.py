"""Which volumes disk_pressure_sensor watches and emergency mode presses: only those where shortening
retention deletes files; and the emergency that deletes rows but none of their files stops."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, text

from retention_pipeline.core.schema import detections, events
from retention_pipeline.jobs import data_cleanup
from retention_pipeline.resources import CameraSystemResource, DiskSpaceResource
from retention_pipeline.sensors import disk_pressure_sensor
from retention_pipeline_tests.dagster_helpers import failure_messages, plan_config
from retention_pipeline_tests.factories import CLIPS, IMAGES, THUMBS, CameraWorld
from retention_pipeline_tests.test_disk_pressure import (
    FilesFillTheDisk,
    FixedDisk,
    OneVolumeFull,
    emergency_run,
    online,
)


def evaluate(
    world: CameraWorld, instance, disk: DiskSpaceResource, **dirs: str
) -> dg.RunRequest | dg.SkipReason:
    folders = {"thumbnail_dir": THUMBS, "clips_dir": CLIPS, "images_dir": IMAGES, **dirs}
    camera = CameraSystemResource(
        database_url=world.engine.url.render_as_string(hide_password=False),
        media_root=str(world.media),
        **folders,
    )
    with dg.build_sensor_context(instance=instance, resources={"camera_system": camera, "disk": disk}) as ctx:
        return disk_pressure_sensor(ctx)


def test_an_unmounted_storage_root_is_not_measured_on_the_volume_beneath_it(
    full: CameraWorld, instance, other_volume: Path
):
    # Clips' volume is not mounted: its mount point, an empty directory, lies on a full file system that
    # deleting clips cannot relieve (their files stay queued until the volume is back).
    mount_point = other_volume / "clips"
    mount_point.mkdir()
    full_beneath = OneVolumeFull(volume=str(other_volume), free=5.0)

    unmounted = evaluate(full, instance, full_beneath, clips_dir=str(mount_point))
    online(mount_point)
    mounted = evaluate(full, instance, full_beneath, clips_dir=str(mount_point))

    assert isinstance(unmounted, dg.SkipReason) and "50.0% free" in unmounted.skip_message
    assert str(other_volume) not in unmounted.skip_message
    assert isinstance(mounted, dg.RunRequest)


def test_with_every_storage_root_unmounted_the_sensor_says_so_and_an_emergency_run_cuts_nothing(
    full: CameraWorld, instance, other_volume: Path
):
    empty = {"thumbnail_dir": str(other_volume / "t"), "clips_dir": str(other_volume / "c")}
    for folder in empty.values():
        Path(folder).mkdir()
    camera = CameraSystemResource(
        database_url=full.engine.url.render_as_string(hide_password=False),
        media_root=str(full.media),
        images_dir=IMAGES,
        **empty,
    )

    skipped = evaluate(full, instance, FixedDisk(free=5.0), **empty)
    run = data_cleanup.execute_in_process(
        run_config=plan_config(dry_run=False, emergency=True, reference_time=full.now.isoformat()),
        resources={"camera_system": camera, "disk": FixedDisk(free=5.0)},
        instance=instance,
        raise_on_error=False,
    )

    assert isinstance(skipped, dg.SkipReason) and "no storage root" in skipped.skip_message
    assert run.success, failure_messages(run)
    assert full.count(detections) == 30  # before the fix: cut to MIN_RETENTION_DAYS, 1 day


def _snapshots(world: CameraWorld, images: Path, tmp_path: Path, follows_retention: bool) -> Path:
    """A policy column storing snapshots under `images`: on gpu_stats (which follows RETENTION_DAYS) or on
    a table of the policy's own with its own days, which emergency mode never shortens."""
    if follows_retention:
        with world.engine.begin() as conn:
            conn.execute(text("ALTER TABLE gpu_stats ADD COLUMN snapshot_path VARCHAR(1024)"))
        rule = "table: gpu_stats\n    time_column: recorded_at\n"
    else:
        snapshots = Table(
            "snapshots",
            MetaData(),
            Column("id", Integer, primary_key=True),
            Column("taken_at", DateTime),
            Column("snapshot_path", String(1024)),
        )
        snapshots.create(world.engine)
        rule = "table: snapshots\n    time_column: taken_at\n"
    online(images)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"tables:\n  - {rule}    retention_days: 90\n    files: {{snapshot_path: images}}\n")
    return policy


@pytest.mark.parametrize("follows_retention", [False, True])
def test_the_images_volume_is_watched_only_when_an_emergency_deletes_images_there(
    full: CameraWorld,
    instance,
    other_volume: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    follows_retention: bool,
):
    images = other_volume / "images"
    monkeypatch.setenv("RETENTION_POLICY_FILE", str(_snapshots(full, images, tmp_path, follows_retention)))

    answer = evaluate(
        full, instance, OneVolumeFull(volume=str(other_volume), free=5.0), images_dir=str(images)
    )

    assert isinstance(answer, dg.RunRequest if follows_retention else dg.SkipReason)


def test_an_emergency_whose_passes_delete_rows_but_none_of_their_files_stops(full: CameraWorld, instance):
    # Every thumbnail the rows name is gone (deleted behind the pipeline's back); the disk is full of
    # something else. Each pass deletes a row and frees nothing.
    thumbs = full.media / THUMBS
    for thumb in thumbs.iterdir():
        thumb.unlink()
    online(thumbs)

    result = emergency_run(full, instance, FixedDisk(free=5.0))

    assert not result.success
    assert "deleted rows whose files lie on the volume of" in failure_messages(result)
    assert full.count(detections) == 27  # three passes, not 29 days of 30


def test_old_rows_without_clips_do_not_stop_an_emergency_on_the_full_clips_volume(
    full: CameraWorld, instance, other_volume: Path
):
    # Clips on a volume of their own, full, recorded only over the last 8 days: older events have no clip.
    # The old detections' thumbnails, on the roomy media volume, are gone already. Passes over the old
    # days handle no clip at all: they must neither count against the clips volume nor stop the run.
    clips = other_volume / "clips"
    clips.mkdir()
    for day in range(30):
        clip = None
        if day < 8:
            clip = clips / f"c{day}.mp4"
            clip.write_bytes(b"x" * 100)
        full.event(full.now - timedelta(days=day, hours=13), clip=str(clip) if clip else None)
    for n, thumb in enumerate(sorted((full.media / THUMBS).iterdir())):
        if n % 2 == 0:
            thumb.unlink()
    disk = FilesFillTheDisk(folder=str(clips), capacity=9, volume=str(other_volume))  # 11.1% free

    result = emergency_run(full, instance, disk, clips_dir=str(clips))

    assert result.success, failure_messages(result)
    assert sorted(path.name for path in clips.iterdir()) == [f"c{day}.mp4" for day in range(7)]
    assert full.count(events) == 7  # before the fix: stopped at 27 days, clips volume still full


def test_a_full_volume_no_row_names_a_file_on_stops_the_emergency_at_its_first_pass(
    full: CameraWorld, instance, other_volume: Path
):
    # The clips volume is filled by files no event names (no event has a clip): deleting rows can never
    # free anything there, so one pass that handles no clip ends the emergency instead of cutting on.
    clips = online(other_volume / "clips")
    for day in range(30):
        full.event(full.now - timedelta(days=day, hours=13), clip=None)
    disk = OneVolumeFull(volume=str(other_volume), free=5.0)

    result = emergency_run(full, instance, disk, clips_dir=str(clips))

    assert not result.success
    assert "no row left in the tables retention shortens names a file" in failure_messages(result)
    assert full.count(events) == 29 and full.count(detections) == 29  # one pass, at 29 days
