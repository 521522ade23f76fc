"""Which files a cleanup deletes, and the numbers it reports about them, on SQLite and PostgreSQL."""

import errno
import os
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from retention_pipeline.core import files as files_module
from retention_pipeline.core.cleanup import clean_table, prepare_database
from retention_pipeline.core.purge import file_checks
from retention_pipeline.core.schema import detections, events, retention_file_queue
from retention_pipeline_tests.conftest import NOW, both_shapes
from retention_pipeline_tests.factories import CLIPS, IMAGES, THUMBS, CameraWorld, comparable

pytestmark = both_shapes


def test_thumbnails_of_deleted_detections_go_and_images_stay_by_default(world: CameraWorld):
    world.detection(
        world.old(), image=world.file(f"{IMAGES}/a.jpg", 200), thumbnail=world.file(f"{THUMBS}/a.jpg", 50)
    )
    world.detection(
        world.recent(), image=world.file(f"{IMAGES}/b.jpg"), thumbnail=world.file(f"{THUMBS}/b.jpg")
    )

    stats = world.run()

    assert not world.exists(f"{THUMBS}/a.jpg")
    assert world.exists(f"{IMAGES}/a.jpg")
    assert world.exists(f"{THUMBS}/b.jpg") and world.exists(f"{IMAGES}/b.jpg")
    assert (stats.thumbnails_deleted, stats.images_deleted) == (1, 0)
    assert stats.space_reclaimed == 50


def test_images_go_too_when_delete_images_is_on(world: CameraWorld):
    world.detection(
        world.old(), image=world.file(f"{IMAGES}/a.jpg", 200), thumbnail=world.file(f"{THUMBS}/a.jpg", 50)
    )

    stats = world.run(delete_images=True)

    assert not world.exists(f"{IMAGES}/a.jpg") and not world.exists(f"{THUMBS}/a.jpg")
    assert (stats.thumbnails_deleted, stats.images_deleted) == (1, 1)
    assert stats.space_reclaimed == 250


def test_shared_image_survives_while_a_recent_detection_uses_it(world: CameraWorld):
    shared = world.file(f"{IMAGES}/shared.jpg", 200)
    world.detection(world.old(), image=shared)
    world.detection(world.old(2), image=shared)
    world.detection(world.recent(), image=shared)

    stats = world.run(delete_images=True)

    assert world.exists(shared)
    assert stats.images_deleted == 0
    assert stats.files_kept_shared == 1
    assert stats.thumbnails_deleted == 2


def test_image_shared_only_by_expired_detections_is_deleted_once(world: CameraWorld):
    shared = world.file(f"{IMAGES}/video.mp4", 1000)
    for day in range(1, 6):
        world.detection(world.old(day), image=shared, thumbnail=None)

    stats = world.run(delete_images=True, batch_size=2)

    assert not world.exists(shared)
    assert stats.images_deleted == 1
    assert stats.space_reclaimed == 1000
    assert stats.files_kept_shared == 0


def test_file_referenced_relative_by_one_row_and_absolute_by_another_is_kept(world: CameraWorld):
    relative = world.file(f"{IMAGES}/alias.jpg")
    world.detection(world.old(), image=str(world.media / relative))
    world.detection(world.recent(), image=relative)

    stats = world.run(delete_images=True)

    assert world.exists(relative)
    assert stats.files_kept_shared == 1 and stats.images_deleted == 0


def test_clips_are_deleted_with_their_events(world: CameraWorld):
    world.event(world.old(), clip=world.file(f"{CLIPS}/old.mp4", 300))
    world.event(world.recent(), clip=world.file(f"{CLIPS}/new.mp4", 300))
    world.event(world.old(), clip=None)

    stats = world.run()

    assert not world.exists(f"{CLIPS}/old.mp4") and world.exists(f"{CLIPS}/new.mp4")
    assert stats.clips_deleted == 1 and stats.events_deleted == 2
    assert stats.space_reclaimed == 300


def test_paths_outside_the_storage_roots_are_refused(world: CameraWorld, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me")
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "victim.jpg").write_text("keep me")
    (world.media / THUMBS / "escape.jpg").symlink_to(secret)
    (world.media / THUMBS / "dirlink").symlink_to(outside_dir)
    for stored in (
        f"{THUMBS}/../../../secret.txt",
        str(secret),
        f"{THUMBS}/escape.jpg",
        f"{THUMBS}/dirlink/victim.jpg",
        "data/unlisted.jpg",
    ):
        world.detection(world.old(), thumbnail=stored)
    world.file("data/unlisted.jpg")

    stats = world.run()

    assert secret.read_text() == "keep me"
    assert (outside_dir / "victim.jpg").read_text() == "keep me"
    assert (world.media / THUMBS / "escape.jpg").is_symlink()
    assert world.exists("data/unlisted.jpg")
    assert stats.files_refused == 5
    assert stats.detections_deleted == 5
    assert stats.thumbnails_deleted == 0


def test_missing_files_are_counted_not_errors(world: CameraWorld):
    # Roots holding other files: the volumes are mounted (under an empty root the files would stay queued).
    world.file(f"{THUMBS}/other.jpg")
    world.file(f"{CLIPS}/other.mp4")
    world.detection(world.old(), thumbnail=f"{THUMBS}/never-written.jpg")
    world.event(world.old(), clip=f"{CLIPS}/gone.mp4")

    stats = world.run()

    assert stats.files_missing == 2
    assert stats.detections_deleted == 1 and stats.events_deleted == 1
    assert world.count(retention_file_queue) == 0


def test_undeletable_file_is_counted_and_the_rest_still_goes(
    world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    stuck = world.file(f"{THUMBS}/stuck.jpg")
    world.detection(world.old(), thumbnail=stuck)
    world.detection(world.old(), thumbnail=world.file(f"{THUMBS}/fine.jpg", 50))
    (world.media / THUMBS / "a-directory.jpg").mkdir()
    world.detection(world.old(), thumbnail=f"{THUMBS}/a-directory.jpg")
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if str(path).endswith("stuck.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(files_module.os, "unlink", unlink)
    stats = world.run()

    assert world.exists(stuck) and not world.exists(f"{THUMBS}/fine.jpg")
    assert (world.media / THUMBS / "a-directory.jpg").is_dir()
    assert stats.files_failed == 2
    assert stats.thumbnails_deleted == 1 and stats.space_reclaimed == 50
    assert stats.detections_deleted == 3


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO])
def test_a_file_that_cannot_be_looked_up_for_now_stays_queued_and_goes_once_it_can(
    world: CameraWorld, monkeypatch: pytest.MonkeyPatch, code: int
):
    locked = world.file(f"{THUMBS}/locked/a.jpg", 40)
    world.detection(world.old(), thumbnail=locked)
    world.detection(world.old(), thumbnail=world.file(f"{THUMBS}/fine.jpg", 50))
    real_lstat = os.lstat

    def lstat(path, *args, **kwargs):
        # A directory we may not search, or a disk error; as root (CI) mode bits stop nothing, so simulated.
        if os.fspath(path).endswith("locked/a.jpg"):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_lstat(path, *args, **kwargs)

    with monkeypatch.context() as refusing:
        refusing.setattr(files_module.os, "lstat", lstat)
        preview = world.run(dry_run=True)
        first = world.run()

    assert world.exists(locked) and not world.exists(f"{THUMBS}/fine.jpg")
    assert (first.files_failed, first.thumbnails_deleted, first.space_reclaimed) == (1, 1, 50)
    assert comparable(preview) == comparable(first)
    assert world.count(retention_file_queue) == 1
    second = world.run()
    assert not world.exists(locked)
    assert (second.files_failed, second.thumbnails_deleted, second.space_reclaimed) == (0, 1, 40)
    assert world.count(retention_file_queue) == 0


def test_dry_run_changes_nothing_and_predicts_the_real_run_exactly(world: CameraWorld):
    shared = world.file(f"{IMAGES}/shared.jpg", 200)
    both_old = world.file(f"{IMAGES}/both-old.jpg", 300)
    retained_event = world.event(world.recent(), clip=world.file(f"{CLIPS}/keep.mp4"))
    old_event = world.event(world.old(), alerts_count=2, clip=world.file(f"{CLIPS}/old.mp4", 400))
    world.detection(world.old(), image=shared, events_=(old_event,))
    world.detection(world.recent(), image=shared)
    world.detection(world.old(), image=both_old)
    world.detection(world.old(2), image=both_old, thumbnail=f"{THUMBS}/missing.jpg")
    world.detection(world.old(5), events_=(retained_event,))
    world.detection(world.recent(), events_=(old_event,))
    world.detection(world.old(), thumbnail="/etc/hostname")
    world.gpu(world.old())
    world.log(world.log_cutoff - world.log_cutoff.resolution * 1000)
    files_before = sorted(str(p) for p in world.media.rglob("*"))
    rows_before = (world.ids(events), world.ids(detections))

    preview = world.run(dry_run=True, delete_images=True)

    assert sorted(str(p) for p in world.media.rglob("*")) == files_before
    assert (world.ids(events), world.ids(detections)) == rows_before
    real = world.run(delete_images=True)
    assert comparable(preview) == comparable(real)
    assert preview.dry_run and not real.dry_run
    assert real.images_deleted == 3 and real.files_kept_shared == 1
    assert real.files_missing == 1 and real.files_refused == 1


def test_crash_after_a_committed_batch_is_repaired_by_the_next_run(world: CameraWorld):
    thumbs = [world.file(f"{THUMBS}/t{i}.jpg", 10) for i in range(3)]
    for thumb in thumbs:
        world.detection(world.old(), thumbnail=thumb)
    prepare_database(world.engine)
    # The rows commit with their files queued, then the process dies before any file is removed.
    clean_table(world.engine, world.plan(batch_size=1), "detections", lambda _m: None)
    assert world.count(detections) == 0
    assert all(world.exists(t) for t in thumbs)

    preview = world.run(dry_run=True)
    repaired = world.run()

    assert not any(world.exists(t) for t in thumbs)
    assert repaired.thumbnails_deleted == preview.thumbnails_deleted == 3
    assert repaired.space_reclaimed == preview.space_reclaimed == 30
    assert world.count(retention_file_queue) == 0


def test_file_relinked_after_it_was_queued_is_kept(world: CameraWorld):
    thumb = world.file(f"{THUMBS}/reused.jpg")
    world.detection(world.old(), thumbnail=thumb)
    prepare_database(world.engine)
    clean_table(world.engine, world.plan(), "detections", lambda _m: None)
    world.detection(world.recent(), thumbnail=thumb)  # a new row points at the queued file

    stats = world.run()

    assert world.exists(thumb)
    assert stats.files_kept_shared == 1 and stats.thumbnails_deleted == 0
    assert world.count(retention_file_queue) == 0


@pytest.mark.parametrize(
    ("folder", "spelling"),
    [
        (THUMBS, "./{rel}"),
        (THUMBS, "data/thumbnails//{name}"),
        (THUMBS, "{abs}"),
        # A camera whose folder is configured with a trailing slash writes "folder//name".
        (f"{THUMBS}/front_door", "{dir}//{name}"),
        (f"{THUMBS}/front_door", "{absdir}//{name}"),
        (f"{THUMBS}/front_door", "./{dir}//{name}"),
        # MEDIA_ROOT configured with a trailing slash and joined with "/" + the relative path.
        (THUMBS, "{media}//{rel}"),
        (f"{THUMBS}/front_door", "./data/thumbnails//front_door/{name}"),
        (f"{THUMBS}/front_door", "data//thumbnails/front_door/{name}"),
        (THUMBS, "data/./thumbnails/{name}"),
        (THUMBS, "{media}/./data/thumbnails///{name}"),
        (THUMBS, ".//data/thumbnails/{name}"),
    ],
)
def test_a_file_kept_by_a_row_that_spells_its_path_differently_survives(
    world: CameraWorld, folder: str, spelling: str
):
    relative = world.file(f"{folder}/spelled.jpg")
    stored = spelling.format(
        rel=relative,
        name="spelled.jpg",
        abs=world.media / relative,
        dir=folder,
        absdir=world.media / folder,
        media=world.media,
    )
    world.detection(world.old(), thumbnail=relative)
    world.detection(world.recent(), thumbnail=stored)

    preview = world.run(dry_run=True)
    stats = world.run()

    assert world.exists(relative)
    assert stats.files_kept_shared == 1 and stats.thumbnails_deleted == 0
    assert comparable(preview) == comparable(stats)


@pytest.mark.parametrize("linked", ["root", "media_root"])
@pytest.mark.parametrize("spelling", ["{rel}", "{abs}", "data/thumbnails//{name}"])
def test_a_file_an_expiring_row_names_by_its_real_path_survives_a_row_naming_it_through_a_symlink(
    engine: Engine, tmp_path: Path, linked: str, spelling: str
):
    # data/thumbnails, or MEDIA_ROOT itself, is a symlink to another disk.
    disk, media = tmp_path / "disk", tmp_path / "media"
    if linked == "root":
        (media / "data").mkdir(parents=True)
        (disk / "thumbs").mkdir(parents=True)
        (media / THUMBS).symlink_to(disk / "thumbs")
    else:
        (disk / "media").mkdir(parents=True)
        media.symlink_to(disk / "media")
    world = CameraWorld(engine, media, now=NOW)
    shared = world.file(f"{THUMBS}/shared.jpg", 50)
    world.file(f"{THUMBS}/alone.jpg", 7)
    real = Path(os.path.realpath(media / THUMBS))
    world.detection(world.old(), thumbnail=str(real / "shared.jpg"))
    world.detection(world.old(), thumbnail=str(real / "alone.jpg"))
    world.detection(
        world.recent(), thumbnail=spelling.format(rel=shared, abs=media / shared, name="shared.jpg")
    )

    preview = world.run(dry_run=True)
    stats = world.run()

    assert (real / "shared.jpg").exists() and not (real / "alone.jpg").exists()
    assert (stats.thumbnails_deleted, stats.files_kept_shared, stats.space_reclaimed) == (1, 1, 7)
    assert comparable(preview) == comparable(stats)


@pytest.mark.parametrize(
    "stored",
    [
        "data/thumbnails/../thumbnails//same.jpg",  # a `..` the comparison does not resolve
        "data/thumbnails" + "/" * 9 + "same.jpg",  # more slashes than it takes out
        "data/thumbnails" + "/." * 5 + "/same.jpg",
        "./data/./thumbnails//same.jpg",
    ],
)
def test_a_file_two_rows_store_by_the_very_same_string_stays_while_one_of_them_does(
    world: CameraWorld, stored: str
):
    world.file(f"{THUMBS}/same.jpg", 30)
    world.detection(world.old(), thumbnail=stored)
    world.detection(world.recent(), thumbnail=stored)

    preview = world.run(dry_run=True)
    stats = world.run()

    assert world.exists(f"{THUMBS}/same.jpg")
    assert (stats.files_kept_shared, stats.thumbnails_deleted) == (1, 0)
    assert comparable(preview) == comparable(stats)


@pytest.mark.parametrize("expiring_through_link", [False, True])
def test_a_file_a_row_names_through_a_symlinked_folder_inside_a_root_survives(
    world: CameraWorld, expiring_through_link: bool
):
    # A camera's folder renamed, the old name kept as a link: rows use either name for the same files.
    real, linked = f"{IMAGES}/cam_a", f"{IMAGES}/front_door"
    shared = world.file(f"{real}/shared.jpg", 40)
    alone = world.file(f"{real}/alone.jpg", 9)
    (world.media / linked).symlink_to(world.media / real)
    one, other = (
        (f"{linked}/shared.jpg", shared) if expiring_through_link else (shared, f"{linked}/shared.jpg")
    )
    world.detection(world.old(), image=one, thumbnail=None)
    world.detection(world.old(), image=alone, thumbnail=None)
    world.detection(world.recent(), image=str(world.media / other), thumbnail=None)

    preview = world.run(dry_run=True, delete_images=True)
    stats = world.run(delete_images=True)

    assert world.exists(shared) and not world.exists(alone)
    assert (stats.images_deleted, stats.files_kept_shared, stats.space_reclaimed) == (1, 1, 9)
    assert comparable(preview) == comparable(stats)


def test_one_path_used_as_thumbnail_and_as_image_is_reported_alike_by_dry_and_real_runs(world: CameraWorld):
    both = world.file(f"{IMAGES}/both.jpg", 10)
    world.detection(world.old(2), thumbnail=both)  # queued first, as a thumbnail
    world.detection(world.old(1), image=both, thumbnail=None)  # then again, as an image

    preview = world.run(dry_run=True, delete_images=True, batch_size=1)
    real = world.run(delete_images=True, batch_size=1)

    assert comparable(preview) == comparable(real)
    assert (real.images_deleted, real.thumbnails_deleted) == (2, 0)  # 'both' counted once, as an image


# Characters that need escaping in a JSON string (SQLite stages the names as one JSON array) or an array
# literal (PostgreSQL stages them as one text array), and names that are not ASCII.
AWKWARD_NAMES = ['quote".jpg', "back\\slash.jpg", "brace{,}.jpg", "tab\tand\nnewline.jpg", "été ü.jpg"]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_a_name_that_needs_escaping_is_checked_like_any_other(world: CameraWorld, name: str):
    shared = world.file(f"{THUMBS}/shared {name}")
    alone = world.file(f"{THUMBS}/alone {name}", 7)
    world.detection(world.old(), thumbnail=shared)
    world.detection(world.old(), thumbnail=alone)
    world.detection(world.recent(), thumbnail=shared)

    preview = world.run(dry_run=True)
    stats = world.run()

    assert world.exists(shared) and not world.exists(alone)
    assert (stats.thumbnails_deleted, stats.files_kept_shared, stats.space_reclaimed) == (1, 1, 7)
    assert comparable(preview) == comparable(stats)


def test_many_reference_checks_of_growing_size_keep_exactly_the_shared_files(
    world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    # Checks of 2, 5, 5 … paths: the first small so unlinks start early, then up to the cap.
    monkeypatch.setattr(file_checks, "CHECK_CHUNK", 2)
    monkeypatch.setattr(file_checks, "REFERENCE_CHUNK", 5)
    thumbs = [world.file(f"{THUMBS}/t{i:02}.jpg", 10) for i in range(17)]
    for thumb in thumbs:
        world.detection(world.old(), thumbnail=thumb)
    for thumb in thumbs[::4]:  # every fourth file is still used by a recent detection
        world.detection(world.recent(), thumbnail=thumb)

    preview = world.run(dry_run=True)
    stats = world.run()

    assert [t for t in thumbs if world.exists(t)] == thumbs[::4]
    assert (stats.thumbnails_deleted, stats.files_kept_shared) == (12, 5)
    assert comparable(preview) == comparable(stats)
    assert world.count(retention_file_queue) == 0


def test_two_expiring_rows_naming_two_hard_links_of_one_file_free_its_bytes_once_dry_and_real(
    world: CameraWorld,
):
    first = world.file(f"{THUMBS}/first.jpg", 5000)
    os.link(world.media / first, world.media / THUMBS / "second.jpg")
    world.detection(world.old(), thumbnail=first)
    world.detection(world.old(), thumbnail=f"{THUMBS}/second.jpg")

    preview = world.run(dry_run=True)
    real = world.run()

    assert comparable(preview) == comparable(real)
    assert (real.thumbnails_deleted, real.space_reclaimed) == (2, 5000)
