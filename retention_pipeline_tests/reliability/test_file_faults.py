"""File-system faults under the storage roots: each one is counted (and logged), the run completes, and the
invariants hold.

We run as root in CI, where permission bits do not stop unlink; a read-only directory is therefore
simulated by making `os.unlink` raise PermissionError for it, which is exactly what the kernel would do.
"""

import errno
import os
from pathlib import Path

import dagster as dg
import pytest

from retention_pipeline.core import files as files_module
from retention_pipeline.core.cleanup import prepare_database, run_cleanup
from retention_pipeline.core.schema import retention_file_queue
from retention_pipeline_tests.dagster_helpers import execute, failure_messages, plan_config
from retention_pipeline_tests.factories import THUMBS, CameraWorld, comparable

from .invariants import Policy, take_snapshot, verify_finished_run
from .worlds import hostile_paths, plant_sentinels

AWKWARD_NAMES = [
    "a b.jpg",
    " leading and trailing .jpg",
    "ünïcødé 漢字 🙂.jpg",
    "new\nline.jpg",
    "tab\there.jpg",
    "quote'\"$(touch x)`.jpg",
    "back\\slash.jpg",
    "-starts-with-dash.jpg",
]
TOO_LONG = f"{THUMBS}/{'x' * 300}.jpg"  # one name longer than NAME_MAX (255 bytes)


def _watched(world: CameraWorld, outside: Path) -> list[Path]:
    return [world.media, outside]


def test_awkward_entries_are_each_counted_and_logged_and_the_run_completes(
    world: CameraWorld, tmp_path: Path, instance: dg.DagsterInstance
):
    outside = plant_sentinels(world, tmp_path)
    world.detection(world.old(), thumbnail=world.file(f"{THUMBS}/plain.jpg"))
    world.detection(world.recent(), thumbnail=world.file(f"{THUMBS}/recent.jpg"))
    # A directory where a thumbnail should be, with someone's data in it.
    (world.media / THUMBS / "dir.jpg").mkdir()
    (world.media / THUMBS / "dir.jpg" / "inside.txt").write_text("keep me")
    world.detection(world.old(), thumbnail=f"{THUMBS}/dir.jpg")
    # Dangling symlinks: one pointing inside a root (the link itself goes), one pointing out (refused).
    (world.media / THUMBS / "dangling-in.jpg").symlink_to(world.media / THUMBS / "never-written.jpg")
    (world.media / THUMBS / "dangling-out.jpg").symlink_to(outside / "never-written.jpg")
    world.detection(world.old(), thumbnail=f"{THUMBS}/dangling-in.jpg")
    world.detection(world.old(), thumbnail=f"{THUMBS}/dangling-out.jpg")
    for name in AWKWARD_NAMES:
        world.detection(world.old(), thumbnail=world.file(f"{THUMBS}/{name}"))
    world.detection(world.old(), thumbnail=TOO_LONG)
    policy = Policy.of(world)
    before = take_snapshot(world.engine, _watched(world, outside))
    config = plan_config(dry_run=True, reference_time=world.now.isoformat())

    preview = execute(world, instance, config)
    config["ops"]["plan_cleanup"]["config"]["dry_run"] = False
    result = execute(world, instance, config)

    assert preview.success and result.success, failure_messages(preview) + failure_messages(result)
    stats = result.output_for_node("report_cleanup")
    assert comparable(preview.output_for_node("report_cleanup")) == comparable(stats)
    assert stats.thumbnails_deleted == 1 + 1 + len(AWKWARD_NAMES)  # plain, dangling-in, awkward names
    assert stats.files_failed == 2  # the directory, the name too long
    assert stats.files_refused == len(hostile_paths(world, outside)) + 1  # ... and dangling-out
    assert (world.media / THUMBS / "dir.jpg" / "inside.txt").read_text() == "keep me"
    assert (world.media / THUMBS / "dangling-out.jpg").is_symlink()
    assert not any((world.media / THUMBS / name).exists() for name in AWKWARD_NAMES)
    run_log = "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))
    for logged in ("dir.jpg", "x" * 300, "dangling-out.jpg"):
        assert logged in run_log
    verify_finished_run(
        policy,
        before,
        take_snapshot(world.engine, _watched(world, outside)),
        stats.as_dict(),
        undeletable=[str(world.media / THUMBS / "dir.jpg")],
    )


def test_a_file_deleted_by_someone_else_after_its_rows_commit_is_counted_missing(
    world: CameraWorld, tmp_path: Path
):
    outside = plant_sentinels(world, tmp_path)
    thumbs = [world.file(f"{THUMBS}/t{i}.jpg", 10) for i in range(4)]
    for thumb in thumbs:
        world.detection(world.old(), thumbnail=thumb)
    policy = Policy.of(world)
    before = take_snapshot(world.engine, _watched(world, outside))
    snatched = world.media / thumbs[1]

    def someone_else(message: str) -> None:
        # The rows are committed and their files queued; the file step has not started yet.
        if message.startswith("events: done"):
            snatched.unlink()

    prepare_database(world.engine)
    stats = run_cleanup(world.engine, world.plan(batch_size=2), someone_else)

    assert not snatched.exists()
    assert stats.thumbnails_deleted == 3 and stats.files_missing == 1
    verify_finished_run(
        policy,
        before,
        take_snapshot(world.engine, _watched(world, outside)),
        stats.as_dict(),
        removed_by_others=[str(snatched)],
    )


@pytest.fixture
def read_only_directory(world: CameraWorld, monkeypatch: pytest.MonkeyPatch) -> Path:
    """THUMBS/readonly, in which unlink fails with EACCES as it would for a non-root user."""
    folder = world.media / THUMBS / "readonly"
    folder.mkdir()
    unlink = os.unlink

    def guarded_unlink(path, *args, **kwargs):
        if os.path.dirname(os.fspath(path)) == str(folder):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(files_module.os, "unlink", guarded_unlink)
    return folder


def test_files_in_a_read_only_directory_are_counted_failed_and_the_rest_still_go(
    world: CameraWorld, tmp_path: Path, read_only_directory: Path
):
    outside = plant_sentinels(world, tmp_path)
    stuck = [world.file(f"{THUMBS}/readonly/s{i}.jpg") for i in range(2)]
    free = [world.file(f"{THUMBS}/free{i}.jpg") for i in range(3)]
    for path in stuck + free:
        world.detection(world.old(), thumbnail=path)
    policy = Policy.of(world)
    before = take_snapshot(world.engine, _watched(world, outside))

    stats = world.run()

    assert all(world.exists(path) for path in stuck)
    assert not any(world.exists(path) for path in free)
    assert stats.files_failed == 2 and stats.thumbnails_deleted == 3
    verify_finished_run(
        policy,
        before,
        take_snapshot(world.engine, _watched(world, outside)),
        stats.as_dict(),
        undeletable=[str(world.media / path) for path in stuck],
    )


def test_a_failed_unlink_is_tried_and_counted_once_per_run_when_the_queue_is_split_into_shares(
    world: CameraWorld, read_only_directory: Path, instance: dg.DagsterInstance
):
    # The stuck file is queued first, so the share that fails it is not the last: the file it queues
    # again lies beyond every share planned for this run.
    stuck = world.file(f"{THUMBS}/readonly/stuck.jpg")
    world.detection(world.old(3), thumbnail=stuck)
    free = [world.file(f"{THUMBS}/ok{i}.jpg") for i in range(3)]
    for path in free:
        world.detection(world.old(), thumbnail=path)

    result = execute(world, instance, plan_config(dry_run=False, file_chunk_size=1, batch_size=1))

    assert result.success
    stats = result.output_for_node("report_cleanup")
    shares = result.output_for_node("delete_expired_files")
    assert len(shares) == 4 and shares["ids_0_1"].files_failed == 1  # one file a share, the stuck one first
    assert stats.files_failed == 1 and stats.thumbnails_deleted == 3
    assert sum(share.files_failed for share in shares.values()) == 1
    assert world.exists(stuck) and not any(world.exists(path) for path in free)
    assert world.count(retention_file_queue) == 1  # still queued, for the next run


def test_a_file_that_could_not_be_deleted_is_deleted_by_the_next_run_once_it_can_be(
    world: CameraWorld, read_only_directory: Path, monkeypatch: pytest.MonkeyPatch
):
    stuck = world.file(f"{THUMBS}/readonly/stuck.jpg")
    world.detection(world.old(), thumbnail=stuck)
    first = world.run()
    assert first.files_failed == 1 and world.exists(stuck)

    monkeypatch.undo()  # the administrator fixed the permissions
    world.run()

    assert not world.exists(stuck), "the file of a deleted row stays on disk for good"
