"""A storage root whose volume is not mounted during a run (an empty mount point, or no root at all): the
files of the rows deleted meanwhile stay queued, and go once the volume is back."""

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from retention_pipeline.core.cleanup import (
    clean_files,
    clean_table,
    cleanup_pass,
    file_chunks,
    prepare_database,
)
from retention_pipeline.core.doctor import diagnose
from retention_pipeline.core.files import StorageRoots
from retention_pipeline.core.purge import offline_roots, offline_warnings
from retention_pipeline.core.schema import events, retention_file_queue
from retention_pipeline.core.stats import FileCounts
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import CLIPS, THUMBS, CameraWorld, comparable


def queued_paths(world: CameraWorld) -> list[str]:
    with world.engine.connect() as conn:
        return sorted(conn.execute(select(retention_file_queue.c.path)).scalars())


def unmount(world: CameraWorld, root: str, leave_mount_point: bool = True) -> Path:
    """Move the root's contents away, as unmounting its volume does; returns where they went."""
    volume = world.media.parent / f"volume_of_{Path(root).name}"
    os.rename(world.media / root, volume)
    if leave_mount_point:
        (world.media / root).mkdir()
    return volume


def mount(world: CameraWorld, root: str, volume: Path) -> None:
    shutil.rmtree(world.media / root, ignore_errors=True)
    os.rename(volume, world.media / root)


@both_shapes
@pytest.mark.parametrize("leave_mount_point", [True, False], ids=["empty_mount_point", "no_root"])
def test_clips_of_events_deleted_while_their_volume_is_unmounted_are_deleted_once_it_is_back(
    world: CameraWorld, leave_mount_point: bool
):
    clips = [world.file(f"{CLIPS}/c{i}.mp4", 1000) for i in range(3)]
    for clip in clips:
        world.event(world.old(), clip=clip)
    world.detection(world.old(), thumbnail=world.file(f"{THUMBS}/t.jpg", 50))
    volume = unmount(world, CLIPS, leave_mount_point)

    prepare_database(world.engine)
    preview, predicted = cleanup_pass(world.engine, world.plan(dry_run=True))
    real, files = cleanup_pass(world.engine, world.plan())

    assert comparable(preview) == comparable(real)
    assert predicted.roots_offline == files.roots_offline == {str(world.media / CLIPS): 3}
    # Emergency mode attributes them to the clips' volume, and the thumbnail deleted to the thumbnails'.
    assert predicted.unfreed_by_kind == files.unfreed_by_kind == {"clip": 3}
    assert real.events_deleted == 3 and world.count(events) == 0
    assert real.files_missing == 0 and real.clips_deleted == 0
    assert real.thumbnails_deleted == 1  # the mounted roots are drained as usual
    assert queued_paths(world) == sorted(clips)
    assert offline_warnings(files, dry_run=False) == [
        f"storage root {world.media / CLIPS} is missing or empty: is its volume mounted? its 3 queued files"
        " stay queued (not counted as missing) for the next run"
    ]
    assert offline_warnings(predicted, dry_run=True) == [
        f"storage root {world.media / CLIPS} is missing or empty: is its volume mounted? a real run would"
        " keep its 3 files queued (not counted as missing) for the next run"
    ]

    mount(world, CLIPS, volume)
    back = world.run()

    assert back.clips_deleted == 3 and back.space_reclaimed == 3000 and back.files_missing == 0
    assert not any(world.exists(clip) for clip in clips)
    assert queued_paths(world) == []


@both_shapes
def test_a_missing_file_under_a_root_that_holds_other_files_is_counted_missing_and_forgotten(
    world: CameraWorld,
):
    world.file(f"{CLIPS}/someone-elses.mp4")
    world.event(world.old(), clip=f"{CLIPS}/gone.mp4")

    stats = world.run()

    assert stats.files_missing == 1 and queued_paths(world) == []


@both_shapes
def test_a_root_the_run_itself_empties_does_not_keep_its_missing_files_queued(world: CameraWorld):
    # Each root is looked at once, before anything is unlinked: its last file going does not make the
    # run's other missing files under it look unmounted (nor the real run differ from its dry run).
    world.event(world.old(), clip=world.file(f"{CLIPS}/last.mp4", 300))
    world.event(world.old(), clip=f"{CLIPS}/gone.mp4")

    preview = world.run(dry_run=True)
    real = world.run()

    assert comparable(preview) == comparable(real)
    assert real.clips_deleted == 1 and real.files_missing == 1
    assert not any((world.media / CLIPS).iterdir()) and queued_paths(world) == []


@both_shapes
def test_a_root_an_earlier_share_of_the_file_step_empties_does_not_keep_later_missing_files_queued(
    world: CameraWorld,
):
    # The job maps the file step over shares of the queue: the roots are looked at once, when the run is
    # planned, not again by each share after the earlier ones deleted files.
    for n in range(2):
        world.event(world.old(), clip=world.file(f"{CLIPS}/clip{n}.mp4", 10))
    world.event(world.old(), clip=f"{CLIPS}/never_written.mp4")
    prepare_database(world.engine, world.policy)
    preview = world.run(dry_run=True)
    plan = world.plan(file_chunk_size=2)
    for table in ("detections", "events"):
        clean_table(world.engine, plan, table, lambda _message: None)

    shares = [
        clean_files(world.engine, plan, lambda _m: None, c)
        for c in file_chunks(world.engine, plan, parallel=True)
    ]
    real = FileCounts.merge(shares)

    assert len(shares) == 2 and (real.clips_deleted, real.files_missing, real.roots_offline) == (2, 1, {})
    assert (preview.clips_deleted, preview.files_missing) == (2, 1)
    assert queued_paths(world) == []


@both_shapes
@pytest.mark.parametrize("gone", ["unmounted", "removed"])
def test_a_root_that_goes_offline_after_the_run_was_planned_keeps_its_files_queued(
    world: CameraWorld, gone: str, monkeypatch: pytest.MonkeyPatch
):
    # A re-execution of the file step hours later, or a long purge: the plan's look is not enough.
    clips = os.path.realpath(world.media / CLIPS)
    for n in range(2):
        world.event(world.old(), clip=world.file(f"{CLIPS}/clip{n}.mp4", 10))
    prepare_database(world.engine, world.policy)
    monkeypatch.setattr(offline_roots, "mount_points", lambda: frozenset({"/", clips}))
    plan = world.plan()
    assert plan.mounted_roots == (clips,) and clips not in plan.offline_roots
    clean_table(world.engine, plan, "events", lambda _message: None)
    shutil.move(clips, world.media / "elsewhere")  # the volume's files out of sight
    if gone == "unmounted":
        os.mkdir(clips)  # the empty mount point, no longer a mount
        monkeypatch.setattr(offline_roots, "mount_points", lambda: frozenset({"/"}))

    counts = clean_files(world.engine, plan, lambda _message: None)

    assert (counts.files_missing, counts.roots_offline) == (0, {str(world.media / CLIPS): 2})
    assert sorted(queued_paths(world)) == [f"{CLIPS}/clip0.mp4", f"{CLIPS}/clip1.mp4"]


@both_shapes
def test_a_root_on_a_volume_mounted_above_it_that_went_after_planning_keeps_its_files_queued(
    world: CameraWorld,
):
    # The volume is mounted at MEDIA_ROOT/data, the roots plain folders on it: once it is away, the
    # folders left on the disk below are on another device than the plan saw.
    clips = os.path.realpath(world.media / CLIPS)
    for n in range(2):
        world.event(world.old(), clip=world.file(f"{CLIPS}/clip{n}.mp4", 10))
    prepare_database(world.engine, world.policy)
    plan = world.plan()
    clean_table(world.engine, plan, "events", lambda _message: None)
    unmount(world, CLIPS)
    elsewhere = os.stat(clips).st_dev + 1  # what the plan saw: the volume's device
    plan = replace(plan, root_devices=((clips, elsewhere),))

    counts = clean_files(world.engine, plan, lambda _message: None)

    assert (counts.files_missing, counts.roots_offline) == (0, {str(world.media / CLIPS): 2})
    assert sorted(queued_paths(world)) == [f"{CLIPS}/clip0.mp4", f"{CLIPS}/clip1.mp4"]


@both_shapes
def test_a_volume_that_goes_in_the_middle_of_a_step_is_noticed_at_its_first_missing_file(
    world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    clips = os.path.realpath(world.media / CLIPS)
    roots = StorageRoots.from_dirs(world.media, [Path(CLIPS)])
    monkeypatch.setattr(offline_roots, "mount_points", lambda: frozenset({"/", clips}))
    offline = offline_roots.OfflineRoots.during(roots, (), offline_roots.root_devices(roots), (clips,))
    assert offline.holding(f"{CLIPS}/a.mp4") is None  # mounted: a missing file is missing

    monkeypatch.setattr(offline_roots, "mount_points", lambda: frozenset({"/"}))  # unmounted meanwhile

    assert offline.holding(f"{CLIPS}/b.mp4") == str(world.media / CLIPS)


@both_shapes
def test_a_mounted_root_the_run_empties_itself_counts_its_other_missing_files_missing(
    world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    clips = os.path.realpath(world.media / CLIPS)
    monkeypatch.setattr(offline_roots, "mount_points", lambda: frozenset({"/", clips}))
    world.event(world.old(), clip=world.file(f"{CLIPS}/last.mp4", 10))
    world.event(world.old(), clip=f"{CLIPS}/never_written.mp4")
    prepare_database(world.engine, world.policy)
    plan = world.plan(file_chunk_size=1)
    clean_table(world.engine, plan, "events", lambda _message: None)

    shares = [
        clean_files(world.engine, plan, lambda _m: None, c)
        for c in file_chunks(world.engine, plan, parallel=True)
    ]

    real = FileCounts.merge(shares)
    assert (real.clips_deleted, real.files_missing, real.roots_offline) == (1, 1, {})
    assert queued_paths(world) == []


@both_shapes
def test_doctor_warns_of_an_empty_root_while_the_queue_holds_files_under_it(world: CameraWorld):
    for i in range(2):
        world.event(world.old(), clip=world.file(f"{CLIPS}/c{i}.mp4"))
    prepare_database(world.engine)
    clean_table(world.engine, world.plan(), "events", lambda _m: None)  # queued; the file step not yet run
    unmount(world, CLIPS)

    warnings = diagnose(world.engine, world.plan(dry_run=True)).warnings

    assert (
        f"storage root {world.media / CLIPS} is empty: is its volume mounted? runs keep the files queued"
        " under it (2 now) until it is back"
    ) in warnings
    assert not [w for w in warnings if THUMBS in w]  # an empty root nothing is queued under is not news
