"""The orphaned-file sweep on SQLite and PostgreSQL: what it deletes, keeps, and refuses to do."""

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from retention_pipeline.core import orphan_safety, orphans, scan
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.files import StorageRoots
from retention_pipeline.core.scan import RootMissing, RootRefused
from retention_pipeline.core.schema import camera_metadata
from retention_pipeline_tests.conftest import ADMIN_URL, NOW, both_shapes
from retention_pipeline_tests.factories import CLIPS, IMAGES, THUMBS, CameraWorld

DAY = 24 * 3600


def aged(world: CameraWorld, relative: str, hours: float, size: int = 100) -> str:
    world.file(relative, size)
    stamp = time.time() - hours * 3600
    os.utime(world.media / relative, (stamp, stamp))
    return relative


def sweep(world: CameraWorld, tmp_path: Path, include_images: bool = False, **policy) -> orphans.OrphanStats:
    dirs = [Path(THUMBS), Path(CLIPS)] + ([Path(IMAGES)] if include_images else [])
    roots = StorageRoots.from_dirs(world.media, dirs)
    rules = orphans.OrphanPolicy(include_images=include_images, **policy)
    now = datetime.now(UTC)
    stats = orphans.scan_for_orphans(
        world.engine, roots, rules, tmp_path / "orphans.csv", now, lambda _m: None
    )
    orphan_safety.check_safety(stats, rules)
    return orphans.delete_orphans(world.engine, roots, rules, stats, now, lambda _m: None)


@pytest.fixture
def live(world: CameraWorld) -> CameraWorld:
    """Three referenced files, one for each way a row can reference one."""
    world.detection(
        world.recent(),
        image=aged(world, f"{IMAGES}/live.jpg", 48),
        thumbnail=aged(world, f"{THUMBS}/live.jpg", 48),
    )
    world.detection(
        world.recent(), image=str(world.media / aged(world, f"{THUMBS}/abs.jpg", 48)), thumbnail=None
    )
    world.event(world.recent(), clip=aged(world, f"{CLIPS}/live.mp4", 48))
    for n in range(4):  # enough live files that a few orphans stay under the 50% stop
        world.detection(world.recent(), thumbnail=aged(world, f"{THUMBS}/more{n}.jpg", 48))
    return world


@both_shapes
def test_old_orphans_go_young_ones_and_referenced_files_stay(live: CameraWorld, tmp_path: Path):
    aged(live, f"{THUMBS}/orphan.jpg", 48, size=70)
    aged(live, f"{CLIPS}/sub/orphan.mp4", 30, size=30)
    aged(live, f"{THUMBS}/fresh.jpg", 1)

    stats = sweep(live, tmp_path, dry_run=False)

    assert not live.exists(f"{THUMBS}/orphan.jpg") and not live.exists(f"{CLIPS}/sub/orphan.mp4")
    assert live.exists(f"{THUMBS}/fresh.jpg")
    for kept in (f"{THUMBS}/live.jpg", f"{THUMBS}/abs.jpg", f"{CLIPS}/live.mp4", f"{IMAGES}/live.jpg"):
        assert live.exists(kept)
    assert (stats.orphans_found, stats.orphans_deleted, stats.bytes_reclaimed) == (2, 2, 100)
    assert stats.skipped_too_young == 1
    assert stats.files_scanned == 10


@both_shapes
def test_images_dir_is_swept_only_when_asked(live: CameraWorld, tmp_path: Path):
    aged(live, f"{IMAGES}/orphan.jpg", 48)

    without = sweep(live, tmp_path, dry_run=False)
    assert live.exists(f"{IMAGES}/orphan.jpg") and without.orphans_found == 0

    with_images = sweep(live, tmp_path, include_images=True, dry_run=False)
    assert not live.exists(f"{IMAGES}/orphan.jpg") and live.exists(f"{IMAGES}/live.jpg")
    assert with_images.orphans_deleted == 1


@both_shapes
def test_file_referenced_between_scan_and_delete_is_kept(live: CameraWorld, tmp_path: Path):
    late = aged(live, f"{THUMBS}/late.jpg", 48)
    roots = StorageRoots.from_dirs(live.media, [Path(THUMBS), Path(CLIPS)])
    rules = orphans.OrphanPolicy(dry_run=False)
    now = datetime.now(UTC)
    stats = orphans.scan_for_orphans(live.engine, roots, rules, tmp_path / "o.csv", now, lambda _m: None)
    assert stats.orphans_found == 1

    live.detection(live.recent(), thumbnail=late)  # the camera system commits its row now
    stats = orphans.delete_orphans(live.engine, roots, rules, stats, now, lambda _m: None)

    assert live.exists(late)
    assert stats.kept_newly_referenced == 1 and stats.orphans_deleted == 0


@both_shapes
def test_an_empty_database_stops_the_sweep(world: CameraWorld, tmp_path: Path):
    files = [aged(world, f"{THUMBS}/f{n}.jpg", 48) for n in range(3)]

    with pytest.raises(orphan_safety.SafetyStop, match="no rows referencing media"):
        sweep(world, tmp_path, dry_run=False)

    assert all(world.exists(f) for f in files)


@both_shapes
def test_too_many_orphans_stop_the_sweep_unless_forced(live: CameraWorld, tmp_path: Path):
    extra = [aged(live, f"{THUMBS}/o{n}.jpg", 48) for n in range(10)]

    with pytest.raises(orphan_safety.SafetyStop, match="look orphaned, more than max_orphan_fraction 50%"):
        sweep(live, tmp_path, dry_run=False)
    assert all(live.exists(f) for f in extra)

    forced = sweep(live, tmp_path, dry_run=False, force=True)
    assert forced.orphans_deleted == 10 and not any(live.exists(f) for f in extra)
    assert live.exists(f"{THUMBS}/live.jpg")


@both_shapes
def test_too_many_bytes_stop_the_sweep(live: CameraWorld, tmp_path: Path):
    aged(live, f"{THUMBS}/big.jpg", 48, size=5000)

    with pytest.raises(orphan_safety.SafetyStop, match="more than max_delete_bytes 1000"):
        sweep(live, tmp_path, dry_run=False, max_delete_bytes=1000)
    assert live.exists(f"{THUMBS}/big.jpg")


@both_shapes
def test_a_missing_root_is_an_error_not_zero_files(live: CameraWorld, tmp_path: Path):
    os.rename(live.media / CLIPS, live.media / "unmounted")

    with pytest.raises(RootMissing, match="data/clips"):
        sweep(live, tmp_path, dry_run=False)
    assert live.exists(f"{THUMBS}/live.jpg")


@both_shapes
def test_a_symlinked_directory_pointing_outside_is_not_followed(live: CameraWorld, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.jpg"
    victim.write_text("keep")
    os.utime(victim, (time.time() - 3 * DAY, time.time() - 3 * DAY))
    (live.media / THUMBS / "escape").symlink_to(outside)

    stats = sweep(live, tmp_path, dry_run=False)

    assert victim.read_text() == "keep"
    assert stats.symlinks_skipped == 1 and stats.orphans_found == 0


@both_shapes
def test_a_file_a_row_names_through_a_symlinked_folder_inside_a_root_is_not_an_orphan(
    live: CameraWorld, tmp_path: Path
):
    # The walk meets the files by their real folders only (a link is never followed); rows use the links.
    image = aged(live, f"{IMAGES}/cam_a/x.jpg", 48)
    thumbnail = aged(live, f"{THUMBS}/2026-06/t.jpg", 48)
    (live.media / IMAGES / "front_door").symlink_to(live.media / IMAGES / "cam_a")
    (live.media / THUMBS / "latest").symlink_to(live.media / THUMBS / "2026-06")
    live.detection(
        live.recent(), image=str(live.media / IMAGES / "front_door/x.jpg"), thumbnail=f"{THUMBS}/latest/t.jpg"
    )
    orphan = aged(live, f"{THUMBS}/2026-06/orphan.jpg", 48)

    stats = sweep(live, tmp_path, include_images=True, dry_run=False)

    assert live.exists(image) and live.exists(thumbnail) and not live.exists(orphan)
    assert (stats.orphans_found, stats.orphans_deleted) == (1, 1)


@pytest.mark.parametrize(
    "spelling",
    [
        "{media}//{rel}",
        "./data/thumbnails//cam/x.jpg",
        "data//thumbnails/cam/x.jpg",
        "data/./thumbnails/cam/x.jpg",
    ],
)
@both_shapes
def test_a_file_a_row_names_with_a_writers_extra_slashes_or_dots_is_not_an_orphan(
    live: CameraWorld, tmp_path: Path, spelling: str
):
    kept = aged(live, f"{THUMBS}/cam/x.jpg", 48)
    live.detection(live.recent(), thumbnail=spelling.format(media=live.media, rel=kept))

    stats = sweep(live, tmp_path, dry_run=False)

    assert live.exists(kept) and stats.orphans_found == 0


@both_shapes
def test_a_file_system_mounted_under_a_root_is_not_entered(
    live: CameraWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A volume, or a bind mount (another system's data), under THUMBNAIL_DIR: not the sweep's to judge.
    mounted = aged(live, f"{THUMBS}/pgdata/base/1234", 48)
    orphan = aged(live, f"{THUMBS}/orphan.jpg", 48)
    mount_point = os.path.realpath(live.media / THUMBS / "pgdata")
    monkeypatch.setattr(scan, "mount_points", lambda: frozenset({"/", mount_point}))

    stats = sweep(live, tmp_path, dry_run=False)

    assert live.exists(mounted) and not live.exists(orphan)
    assert (stats.mounts_skipped, stats.orphans_deleted) == (1, 1)


@both_shapes
def test_a_root_that_is_its_own_mount_inside_another_root_is_swept_on_its_own(
    live: CameraWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # THUMBNAIL_DIR=data around CLIPS_DIR=data/clips, the clips on a volume of their own.
    clip_orphan = aged(live, f"{CLIPS}/orphan.mp4", 48)
    thumb_orphan = aged(live, "data/orphan.jpg", 48)
    monkeypatch.setattr(scan, "mount_points", lambda: frozenset({"/", os.path.realpath(live.media / CLIPS)}))
    roots = StorageRoots.from_dirs(live.media, [Path("data"), Path(CLIPS)])
    rules = orphans.OrphanPolicy(dry_run=False)
    now = datetime.now(UTC)

    stats = orphans.scan_for_orphans(live.engine, roots, rules, tmp_path / "o.csv", now, lambda _m: None)
    orphans.delete_orphans(live.engine, roots, rules, stats, now, lambda _m: None)

    assert not live.exists(clip_orphan) and not live.exists(thumb_orphan)
    assert stats.mounts_skipped == 1 and stats.orphans_found == 2


@both_shapes
def test_a_swept_root_inside_a_root_the_sweep_leaves_out_is_walked_on_its_own(
    live: CameraWorld, tmp_path: Path
):
    # THUMBNAIL_DIR=IMAGES_DIR=data (not walked without include_images: its files cannot be told apart)
    # around CLIPS_DIR=data/clips.
    clip_orphan = aged(live, f"{CLIPS}/orphan.mp4", 48)
    upload = aged(live, "data/upload.jpg", 48)
    roots = StorageRoots.from_dirs(live.media, [Path("data"), Path(CLIPS)])
    unswept = (os.path.realpath(live.media / "data"),)
    rules = orphans.OrphanPolicy(dry_run=False)
    now = datetime.now(UTC)

    stats = orphans.scan_for_orphans(
        live.engine, roots, rules, tmp_path / "o.csv", now, lambda _m: None, unswept=unswept
    )
    orphans.delete_orphans(live.engine, roots, rules, stats, now, lambda _m: None)

    assert not live.exists(clip_orphan) and live.exists(upload)


def test_the_mount_points_are_read_from_the_kernel_with_their_escapes_undone():
    mounts = scan.mount_points()
    assert "/" in mounts and "/proc" in mounts
    assert scan._OCTAL.sub(lambda escape: chr(int(escape[1], 8)), r"/mnt/cam\040one") == "/mnt/cam one"


@both_shapes
def test_dry_run_changes_nothing_and_predicts_the_real_run(live: CameraWorld, tmp_path: Path):
    aged(live, f"{THUMBS}/a.jpg", 48, size=10)
    aged(live, f"{CLIPS}/b.mp4", 48, size=20)
    aged(live, f"{THUMBS}/young.jpg", 2)
    before = sorted(live.media.rglob("*"))

    preview = sweep(live, tmp_path, dry_run=True)
    assert sorted(live.media.rglob("*")) == before
    real = sweep(live, tmp_path, dry_run=False)

    keys = ("files_scanned", "orphans_found", "orphans_deleted", "bytes_reclaimed", "skipped_too_young")
    assert {k: getattr(preview, k) for k in keys} == {k: getattr(real, k) for k in keys}
    assert (real.orphans_deleted, real.bytes_reclaimed) == (2, 30)


@both_shapes
def test_rows_whose_files_are_missing_are_reported_not_touched(live: CameraWorld, tmp_path: Path):
    live.detection(live.recent(), thumbnail=f"{THUMBS}/gone.jpg", image=f"{IMAGES}/gone-too.jpg")

    stats = sweep(live, tmp_path, dry_run=True)

    assert stats.rows_missing_files == 1  # IMAGES_DIR was not scanned, so only the thumbnail counts
    assert stats.referencing_rows == 8


@both_shapes
def test_report_csv_lists_the_orphans(live: CameraWorld, tmp_path: Path):
    aged(live, f"{THUMBS}/listed.jpg", 48, size=42)

    stats = sweep(live, tmp_path, dry_run=True)
    rows = orphans.orphan_report_rows(stats.report_csv, 10)

    assert [(Path(r["path"]).name, r["size"]) for r in rows] == [("listed.jpg", "42")]


@both_shapes
def test_a_file_name_that_is_not_utf8_is_an_orphan_like_any_other(live: CameraWorld, tmp_path: Path):
    # No row can hold such a name (the databases store UTF-8), so it must not stop the sweep either.
    folder = os.fsencode(live.media / THUMBS)
    odd = os.path.join(folder, b"odd\xff.jpg")
    Path(os.fsdecode(odd)).write_bytes(b"x" * 5)
    stamp = time.time() - 48 * 3600
    os.utime(odd, (stamp, stamp))

    preview = sweep(live, tmp_path, dry_run=True)
    listed = orphans.orphan_report_rows(preview.report_csv, 10)
    real = sweep(live, tmp_path, dry_run=False)

    assert (preview.orphans_found, real.orphans_deleted, real.bytes_reclaimed) == (1, 1, 5)
    assert [Path(r["path"]).name for r in listed] == ["odd\\xff.jpg"]
    assert not os.path.lexists(odd) and live.exists(f"{THUMBS}/live.jpg")


@both_shapes
@pytest.mark.parametrize("second", [THUMBS, f"{THUMBS}/cam"])
def test_a_directory_named_twice_or_inside_another_root_is_walked_once(
    live: CameraWorld, tmp_path: Path, second: str
):
    aged(live, f"{THUMBS}/cam/orphan.jpg", 48, size=70)
    roots = StorageRoots.from_dirs(live.media, [Path(THUMBS), Path(second), Path(CLIPS)])
    rules = orphans.OrphanPolicy(dry_run=False)
    now = datetime.now(UTC)

    scanned = orphans.scan_for_orphans(live.engine, roots, rules, tmp_path / "o.csv", now, lambda _m: None)
    swept = orphans.delete_orphans(live.engine, roots, rules, scanned, now, lambda _m: None)

    assert (swept.files_scanned, swept.orphans_found, swept.orphan_bytes) == (8, 1, 70)
    assert (swept.orphans_deleted, swept.bytes_reclaimed, swept.files_missing) == (1, 70, 0)


@both_shapes
def test_a_dry_sweep_predicts_the_bytes_of_hard_linked_orphans_as_the_real_one_frees_them(
    live: CameraWorld, tmp_path: Path
):
    first = aged(live, f"{THUMBS}/h1.jpg", 48, size=1000)
    os.link(live.media / first, live.media / THUMBS / "h2.jpg")

    preview = sweep(live, tmp_path, dry_run=True)
    real = sweep(live, tmp_path, dry_run=False)

    assert (preview.orphans_deleted, preview.bytes_reclaimed) == (2, 1000)
    assert (real.orphans_deleted, real.bytes_reclaimed) == (2, 1000)


@both_shapes
def test_images_inside_a_swept_root_are_left_alone_without_include_images(live: CameraWorld, tmp_path: Path):
    # THUMBNAIL_DIR=data around IMAGES_DIR=data/images: a camera's upload no detection names yet is not
    # this sweep's to delete. CLIPS_DIR inside IMAGES_DIR is still swept.
    upload = aged(live, f"{IMAGES}/front_door/upload.jpg", 48)
    aged(live, f"{THUMBS}/orphan.jpg", 48)
    aged(live, f"{IMAGES}/clips/orphan.mp4", 48)
    thumbnails, clips, images = Path("data"), Path(f"{IMAGES}/clips"), Path(IMAGES)
    roots = StorageRoots.from_dirs(live.media, [thumbnails, clips])
    unswept = orphans.unswept_roots(live.media, [thumbnails, clips, images], roots)
    rules = orphans.OrphanPolicy(dry_run=False)
    now = datetime.now(UTC)

    scanned = orphans.scan_for_orphans(
        live.engine, roots, rules, tmp_path / "o.csv", now, lambda _m: None, (), unswept
    )
    swept = orphans.delete_orphans(live.engine, roots, rules, scanned, now, lambda _m: None)

    assert live.exists(upload) and live.exists(f"{IMAGES}/live.jpg")
    assert not live.exists(f"{THUMBS}/orphan.jpg") and not live.exists(f"{IMAGES}/clips/orphan.mp4")
    assert (swept.files_scanned, swept.orphans_deleted) == (9, 2)


@both_shapes
@pytest.mark.parametrize("root", [".", ".."])
def test_a_root_that_is_media_root_or_above_it_is_refused(live: CameraWorld, tmp_path: Path, root: str):
    config = aged(live, "config/camera_system.yaml", 48)
    roots = StorageRoots.from_dirs(live.media, [Path(root), Path(CLIPS)])

    with pytest.raises(RootRefused, match=r"is MEDIA_ROOT .* or contains it"):
        orphans.scan_for_orphans(
            live.engine,
            roots,
            orphans.OrphanPolicy(dry_run=False),
            tmp_path / "o.csv",
            datetime.now(UTC),
            print,
        )
    assert live.exists(config)


@contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """`folder` made a directory nobody may remove files from (root ignores modes: immutable instead)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root where chattr +i is unavailable: no directory root cannot write to")
    try:
        yield
    finally:
        if os.geteuid() != 0:
            folder.chmod(0o755)
        else:
            subprocess.run(["chattr", "-i", str(folder)], check=True)


@both_shapes
def test_a_dry_sweep_predicts_orphans_the_real_one_cannot_delete(live: CameraWorld, tmp_path: Path):
    aged(live, f"{THUMBS}/locked/a.jpg", 48, size=10)
    aged(live, f"{THUMBS}/locked/b.jpg", 48, size=10)
    aged(live, f"{THUMBS}/free.jpg", 48, size=5)

    with unwritable(live.media / THUMBS / "locked"):
        preview = sweep(live, tmp_path, dry_run=True)
        real = sweep(live, tmp_path, dry_run=False)

    keys = ("orphans_found", "orphans_deleted", "bytes_reclaimed", "files_failed")
    assert {k: getattr(preview, k) for k in keys} == {k: getattr(real, k) for k in keys}
    assert (real.orphans_found, real.orphans_deleted, real.bytes_reclaimed, real.files_failed) == (3, 1, 5, 2)
    assert live.exists(f"{THUMBS}/locked/a.jpg") and not live.exists(f"{THUMBS}/free.jpg")


@both_shapes
def test_a_folder_swapped_for_a_symlink_after_the_scan_does_not_cost_a_referenced_file(
    live: CameraWorld, tmp_path: Path
):
    aged(live, f"{THUMBS}/a/x.jpg", 48)  # an orphan when scanned
    clip = aged(live, f"{CLIPS}/cam/x.jpg", 48)
    live.event(live.recent(), clip=clip)
    roots = StorageRoots.from_dirs(live.media, [Path(THUMBS), Path(CLIPS)])
    rules = orphans.OrphanPolicy(dry_run=False)
    now = datetime.now(UTC)
    scanned = orphans.scan_for_orphans(live.engine, roots, rules, tmp_path / "o.csv", now, lambda _m: None)

    os.rename(live.media / THUMBS / "a", live.media / THUMBS / "a_old")
    (live.media / THUMBS / "a").symlink_to("../clips/cam")
    swept = orphans.delete_orphans(live.engine, roots, rules, scanned, now, lambda _m: None)

    assert live.exists(clip) and live.exists(f"{THUMBS}/a_old/x.jpg")
    assert (scanned.orphans_found, swept.orphans_deleted) == (1, 0)


@both_shapes
def test_a_file_moved_in_with_its_old_time_after_the_scan_is_not_deleted(live: CameraWorld, tmp_path: Path):
    aged(live, f"{THUMBS}/x.jpg", 48)
    roots = StorageRoots.from_dirs(live.media, [Path(THUMBS), Path(CLIPS)])
    rules = orphans.OrphanPolicy(dry_run=False)
    now = datetime.now(UTC)
    scanned = orphans.scan_for_orphans(live.engine, roots, rules, tmp_path / "o.csv", now, lambda _m: None)

    aged(live, "restored.jpg", 72, size=7)
    os.replace(live.media / "restored.jpg", live.media / THUMBS / "x.jpg")  # as `mv` or a restore would
    swept = orphans.delete_orphans(live.engine, roots, rules, scanned, now, lambda _m: None)

    assert (live.media / THUMBS / "x.jpg").stat().st_size == 7
    assert (swept.orphans_deleted, swept.skipped_changed) == (0, 1)


@pytest.fixture
def latin1_world(postgres_database: str, tmp_path: Path) -> Iterator[CameraWorld]:
    """A camera database on PostgreSQL in LATIN1, which holds é but not 玄関."""
    name = f"{make_url(postgres_database).database}_latin1"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(
                f"CREATE DATABASE \"{name}\" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            )
        )
    engine = make_engine(make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    camera_metadata.create_all(engine)
    yield CameraWorld(engine, tmp_path / "media", now=NOW)
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_a_name_the_database_encoding_cannot_hold_is_an_orphan_like_any_other(
    latin1_world: CameraWorld, tmp_path: Path
):
    world = latin1_world
    for n in range(4):
        world.detection(world.recent(), thumbnail=aged(world, f"{THUMBS}/café/{n}.jpg", 48))
    aged(world, f"{THUMBS}/玄関/x.jpg", 48, size=9)

    preview = sweep(world, tmp_path, dry_run=True)
    real = sweep(world, tmp_path, dry_run=False)

    assert (preview.orphans_found, real.orphans_deleted, real.bytes_reclaimed) == (1, 1, 9)
    assert not world.exists(f"{THUMBS}/玄関/x.jpg") and world.exists(f"{THUMBS}/café/0.jpg")
