"""What a real orphan sweep observes: the tables' sizes, and each media store's files counted once."""

import os
import time
from typing import Any

import dagster as dg
import pytest

from retention_pipeline import assets, orphan_ops
from retention_pipeline.jobs import orphaned_file_cleanup
from retention_pipeline.resources import CameraSystemResource
from retention_pipeline_tests.dagster_helpers import camera_resource, latest_observation
from retention_pipeline_tests.factories import CLIPS, THUMBS, CameraWorld


def old_file(world: CameraWorld, relative: str, size: int = 10) -> str:
    world.file(relative, size)
    stamp = time.time() - 48 * 3600
    os.utime(world.media / relative, (stamp, stamp))
    return relative


def real_sweep(world: CameraWorld, instance: dg.DagsterInstance, **dirs: str) -> dg.ExecuteInProcessResult:
    """A real sweep with the storage roots `dirs` (thumbnail_dir, clips_dir...) or the world's."""
    resource = CameraSystemResource(**{**camera_resource(world).model_dump(), **dirs})
    return orphaned_file_cleanup.execute_in_process(
        run_config={"ops": {"plan_orphan_sweep": {"config": {"dry_run": False}}}},
        resources={"camera_system": resource},
        instance=instance,
        raise_on_error=False,
    )


def test_a_failed_read_of_the_tables_sizes_after_the_sweep_deleted_is_a_warning_not_a_failed_run(
    world: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    table_inventory = assets.table_inventory

    def unreadable(engine: Any, entry: Any, *args: Any) -> Any:
        if entry.name == "detections":  # the first table: a dropped one must not hide those after it
            raise RuntimeError("no such table: detections")
        return table_inventory(engine, entry, *args)

    finished: list[str] = []
    tracker_finish = orphan_ops.finish

    def finish(stage: Any, result: Any, message: str) -> None:
        finished.append(message)
        tracker_finish(stage, result, message)

    world.detection(world.recent(), thumbnail=old_file(world, f"{THUMBS}/kept.jpg"))
    old_file(world, f"{THUMBS}/orphan.jpg")
    monkeypatch.setattr(assets, "table_inventory", unreadable)
    monkeypatch.setattr(orphan_ops, "finish", finish)

    result = real_sweep(world, instance)

    assert result.success and finished == ["Completed"]
    assert not world.exists(f"{THUMBS}/orphan.jpg") and world.exists(f"{THUMBS}/kept.jpg")
    assert latest_observation(instance, "thumbnails")["orphans_deleted_by_sweep"] == 1
    assert not instance.fetch_observations(dg.AssetKey("detections"), limit=1).records
    assert latest_observation(instance, "events")["rows"] == 0
    assert latest_observation(instance, "logs")["rows"] == 0
    warnings = [
        event.message
        for event in instance.all_logs(result.run_id)
        if event.level == 30 and "asset observation" in (event.message or "")
    ]
    assert warnings == [
        "could not read table detections for its asset observation, left out: no such table: detections"
    ]


@pytest.mark.parametrize(
    ("layout", "thumbnail_dir", "clips_dir"),
    [
        ("hard links", THUMBS, CLIPS),
        ("nested", "data", "data/clips"),  # the layout docs/design.md names
        ("a root ending like another", "previews/clips", "clips"),
    ],
)
def test_each_media_store_counts_its_own_files_and_each_stored_file_once(
    layout: str, thumbnail_dir: str, clips_dir: str, world: CameraWorld, instance
):
    world.detection(world.recent(), thumbnail=old_file(world, f"{thumbnail_dir}/a.jpg", 1000))
    if layout == "hard links":  # one thumbnail stored under two names (identical crops de-duplicated)
        os.link(world.media / thumbnail_dir / "a.jpg", world.media / thumbnail_dir / "b.jpg")
        world.detection(world.recent(), thumbnail=f"{thumbnail_dir}/b.jpg")
    world.event(world.recent(), clip=old_file(world, f"{clips_dir}/c.mp4", 5000))

    result = real_sweep(world, instance, thumbnail_dir=thumbnail_dir, clips_dir=clips_dir)

    assert result.success
    thumbnails = latest_observation(instance, "thumbnails")
    clips = latest_observation(instance, "clips")
    names = 2 if layout == "hard links" else 1
    assert (thumbnails["files"], thumbnails["bytes"]) == (names, 1000)
    assert (clips["files"], clips["bytes"]) == (1, 5000)
