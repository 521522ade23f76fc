"""Stored paths: what counts as inside the storage roots, and the aliases a reference check uses."""

import errno
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import String, literal, select
from sqlalchemy.engine import Engine

from retention_pipeline.core.files import HardLinks, Outcome, StorageRoots, remove_file, remove_files
from retention_pipeline.core.queries.path_checks import as_checked, as_checked_text
from retention_pipeline.core.spellings import Spellings


@pytest.fixture
def roots(tmp_path: Path) -> StorageRoots:
    for name in ("thumbs", "clips", "images"):
        (tmp_path / "media" / name).mkdir(parents=True)
    return StorageRoots.from_dirs(tmp_path / "media", [Path("thumbs"), Path("clips"), Path("images")])


@pytest.mark.parametrize(
    "stored",
    [
        "../../etc/passwd",
        "thumbs/../../secret",
        "/etc/hosts",
        "thumbs",  # a root itself
        "thumbs/..",
        "",
        "   ",
        "thumbs/a\x00b.jpg",
        "other/file.jpg",  # under MEDIA_ROOT but in no storage root
    ],
)
def test_paths_outside_the_roots_are_not_located(roots: StorageRoots, stored: str):
    assert roots.unlink_target(stored) is None


def test_relative_and_absolute_paths_inside_a_root_are_located(roots: StorageRoots):
    inside = os.path.join(roots.media_root, "thumbs", "a.jpg")

    assert roots.unlink_target("thumbs/a.jpg") == inside
    assert roots.unlink_target(inside) == inside
    assert roots.unlink_target("thumbs/sub/../a.jpg") == inside


def test_symlinks_leaving_the_roots_are_not_located(roots: StorageRoots, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.jpg").write_text("x")
    thumbs = Path(roots.media_root) / "thumbs"
    (thumbs / "link.jpg").symlink_to(outside / "f.jpg")
    (thumbs / "dir").symlink_to(outside)
    (thumbs / "inner.jpg").symlink_to(thumbs / "real.jpg")

    assert roots.unlink_target("thumbs/link.jpg") is None
    assert roots.unlink_target("thumbs/dir/f.jpg") is None
    # A link that stays inside is itself the file to unlink; its target is left alone.
    assert roots.unlink_target("thumbs/inner.jpg") == str(thumbs / "inner.jpg")


@pytest.mark.parametrize("dry_run", [True, False])
def test_remove_file_unlinks_a_link_inside_the_roots_and_refuses_one_leaving_them(
    roots: StorageRoots, tmp_path: Path, dry_run: bool
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.jpg").write_text("keep me")
    thumbs = Path(roots.media_root) / "thumbs"
    (thumbs / "real.jpg").write_text("shared")
    (thumbs / "inner.jpg").symlink_to(thumbs / "real.jpg")
    (thumbs / "escape.jpg").symlink_to(outside / "f.jpg")
    (thumbs / "dangling.jpg").symlink_to(outside / "never-written.jpg")

    outcomes = {
        name: remove_file(roots, f"thumbs/{name}", dry_run)[0]
        for name in ("inner.jpg", "escape.jpg", "dangling.jpg")
    }

    assert outcomes == {
        "inner.jpg": Outcome.DELETED,
        "escape.jpg": Outcome.REFUSED,
        "dangling.jpg": Outcome.REFUSED,
    }
    assert (thumbs / "inner.jpg").is_symlink() is dry_run  # the link goes, never what it points to
    assert (thumbs / "real.jpg").read_text() == "shared"
    assert (outside / "f.jpg").read_text() == "keep me"
    assert (thumbs / "escape.jpg").is_symlink() and (thumbs / "dangling.jpg").is_symlink()


def test_aliases_cover_relative_and_absolute_spellings(roots: StorageRoots):
    absolute = os.path.join(roots.media_root, "thumbs", "a.jpg")

    # Writers' noise (./, //, /./) is not spelled out: the check compares rows' paths without it.
    expected = {"thumbs/a.jpg", absolute}
    spellings = Spellings(roots)
    assert spellings.aliases("thumbs/a.jpg") == sorted(expected)
    assert spellings.aliases(absolute) == sorted(expected)
    assert spellings.aliases("./thumbs/a.jpg") == sorted(expected | {"./thumbs/a.jpg"})  # and as stored


@pytest.mark.parametrize("linked", ["root", "media_root", "both"])
def test_a_file_through_a_symlinked_root_has_the_same_aliases_by_its_real_path_as_by_the_configured_one(
    tmp_path: Path, linked: str
):
    disk = tmp_path / "disk"
    (disk / "media").mkdir(parents=True)
    media = tmp_path / "media" if linked != "root" else disk / "media"
    if linked != "root":
        media.symlink_to(disk / "media")
    if linked != "media_root":
        (disk / "thumbs").mkdir()
        (disk / "media" / "thumbs").symlink_to(disk / "thumbs")
    else:
        (disk / "media" / "thumbs").mkdir()
    roots = StorageRoots.from_dirs(media, [Path("thumbs")])
    real = os.path.realpath(media / "thumbs" / "a.jpg")

    configured = Spellings(roots).aliases("thumbs/a.jpg")

    assert {"thumbs/a.jpg", str(media / "thumbs" / "a.jpg"), real} <= set(configured)
    # A row may name the file by any of them, whichever one the expiring row used.
    assert all(Spellings(roots).aliases(spelling) == configured for spelling in configured)


def test_a_file_through_a_symlinked_folder_inside_a_root_has_every_spelling_by_either_path(tmp_path: Path):
    media = tmp_path / "media"
    (media / "images" / "cam_a" / "2026-06").mkdir(parents=True)
    (media / "images" / "front_door").symlink_to(media / "images" / "cam_a")  # a camera renamed
    (media / "images" / "cam_a" / "latest").symlink_to(media / "images" / "cam_a" / "2026-06")
    (media / "images" / "elsewhere").symlink_to(tmp_path)  # out of the roots: never a spelling
    for n in range(30):  # links that lead nowhere, listed before the others in most directory orders
        (media / "images" / f"loop{n}").symlink_to(media / "images" / f"loop{n}")
    roots = StorageRoots.from_dirs(media, [Path("images")])

    by_real = Spellings(roots).aliases("images/cam_a/2026-06/x.jpg")

    assert {
        "images/front_door/2026-06/x.jpg",
        "images/cam_a/latest/x.jpg",
        "images/front_door/latest/x.jpg",
        str(media / "images" / "front_door" / "2026-06" / "x.jpg"),
    } <= set(by_real)
    assert Spellings(roots).aliases("images/front_door/latest/x.jpg") == by_real
    assert not any("elsewhere" in name for name in by_real)


def _aliases_normalised_alone(roots: StorageRoots, stored: str) -> list[str]:
    # The definition: the whole path normalised, then split into its folder's spellings and its name.
    names = {stored, as_checked_text(stored)}
    if "\x00" not in stored and stored.strip():
        folder, name = os.path.split(os.path.normpath(os.path.join(roots.media_root, stored)))
        names.update(spelling + name for spelling in Spellings(roots).folder_spellings(folder))
    return sorted(names)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(alphabet="ab/. \x00", max_size=10), min_size=1, max_size=8))
def test_aliases_sharing_folders_equal_each_path_normalised_alone(stored_list: list[str]):
    # A reference check shares one folder cache across its paths, keyed by the text before each name.
    roots = StorageRoots.from_dirs(Path("/srv/media"), [Path("a"), Path("b/a")])
    spellings = Spellings(roots)
    for stored in [*stored_list, "a/b", "/a", "//a", "a/.", "a/..", "a//.b", "./a/../b"]:
        assert spellings.aliases(stored) == _aliases_normalised_alone(roots, stored), stored


def test_remove_file_counts_bytes_only_for_the_last_hard_link(roots: StorageRoots):
    thumbs = Path(roots.media_root) / "thumbs"
    (thumbs / "a.jpg").write_bytes(b"x" * 10)
    os.link(thumbs / "a.jpg", thumbs / "b.jpg")

    first = remove_file(roots, "thumbs/a.jpg", dry_run=False)
    second = remove_file(roots, "thumbs/b.jpg", dry_run=False)

    assert first == (Outcome.DELETED, 0)
    assert second == (Outcome.DELETED, 10)
    assert remove_file(roots, "thumbs/b.jpg", dry_run=False) == (Outcome.MISSING, 0)


def _awkward_tree(base: Path) -> tuple[StorageRoots, list[str]]:
    """Media roots holding one of every kind of entry a stored path can lead to, and those paths."""
    media, outside = base / "media", base / "outside"
    for folder in (media / "thumbs" / "sub", media / "clips", outside):
        folder.mkdir(parents=True)
    thumbs = media / "thumbs"
    (thumbs / "a.jpg").write_bytes(b"x" * 10)
    (thumbs / "sub" / "b.jpg").write_bytes(b"x" * 20)
    (thumbs / "hard.jpg").write_bytes(b"x" * 30)
    os.link(thumbs / "hard.jpg", thumbs / "hard-too.jpg")
    (outside / "secret.txt").write_text("keep me")
    (thumbs / "inner.jpg").symlink_to("a.jpg")  # relative: the same link size in both trees
    (thumbs / "escape.jpg").symlink_to(outside / "secret.txt")
    (thumbs / "a-directory.jpg").mkdir()
    os.mkfifo(thumbs / "pipe.jpg")
    (media / "clips" / "c.mp4").write_bytes(b"x" * 40)
    stored = [
        "thumbs/inner.jpg",  # a link first: the file it points to goes later in the same batch
        "thumbs/a.jpg",
        "thumbs/a.jpg",  # twice: gone the second time
        "thumbs/sub/b.jpg",
        f"{media}/clips/c.mp4",
        "thumbs/hard.jpg",
        "thumbs/hard-too.jpg",
        "thumbs/escape.jpg",
        "thumbs/a-directory.jpg",
        "thumbs/pipe.jpg",
        "thumbs/never-written.jpg",
        "thumbs/a.jpg/under-a-file.jpg",
        "../outside/secret.txt",
        "thumbs/a\x00b.jpg",
        "",
    ]
    return StorageRoots.from_dirs(media, [Path("thumbs"), Path("clips")]), stored


def _listing(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*"))


def test_remove_files_does_to_a_batch_exactly_what_remove_file_does_to_each_path(tmp_path: Path):
    one_by_one, batched = tmp_path / "one_by_one", tmp_path / "batched"
    roots_each, stored = _awkward_tree(one_by_one)
    roots_batch, stored_batch = _awkward_tree(batched)  # one path is absolute, so each tree has its own

    expected = [remove_file(roots_each, path, dry_run=False) for path in stored]
    outcomes = remove_files(roots_batch, stored_batch)

    assert outcomes == expected
    assert _listing(batched) == _listing(one_by_one)
    assert (batched / "outside" / "secret.txt").read_text() == "keep me"
    assert {outcome for outcome, _freed in outcomes} == {
        Outcome.DELETED,
        Outcome.MISSING,
        Outcome.REFUSED,
        Outcome.FAILED,
    }
    assert outcomes[stored.index("thumbs/hard.jpg")] == (Outcome.DELETED, 0)  # another link remained
    assert outcomes[stored.index("thumbs/hard-too.jpg")] == (Outcome.DELETED, 30)


def test_remove_files_leaves_a_file_whose_unlink_is_refused_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    roots, _ = _awkward_tree(tmp_path)
    real_unlink = os.unlink

    def unlink(path: str, *args: object, **kwargs: object) -> None:
        if path.endswith("a.jpg"):
            raise PermissionError(13, "Permission denied", path)
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)

    outcomes = remove_files(roots, ["thumbs/a.jpg", "thumbs/sub/b.jpg"])

    assert outcomes == [(Outcome.BLOCKED, 0), (Outcome.DELETED, 20)]
    assert (tmp_path / "media" / "thumbs" / "a.jpg").exists()


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        *((code, Outcome.BLOCKED) for code in (errno.EACCES, errno.EPERM, errno.EIO, errno.ESTALE)),
        *((code, Outcome.BLOCKED) for code in (errno.ETIMEDOUT, errno.EINTR)),
        *((code, Outcome.FAILED) for code in (errno.ENAMETOOLONG, errno.ELOOP)),
    ],
)
def test_a_file_lstat_cannot_look_up_for_now_is_blocked_and_one_it_never_can_has_failed(
    roots: StorageRoots, monkeypatch: pytest.MonkeyPatch, code: int, outcome: Outcome
):
    thumbs = Path(roots.media_root) / "thumbs"
    (thumbs / "a.jpg").write_bytes(b"x" * 10)
    (thumbs / "b.jpg").write_bytes(b"x" * 20)
    real_lstat = os.lstat

    def lstat(path, *args, **kwargs):  # root, as in CI, is not stopped by a directory's mode bits
        if os.fspath(path).endswith("a.jpg"):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)

    assert remove_file(roots, "thumbs/a.jpg", dry_run=True) == (outcome, 0)
    assert remove_file(roots, "thumbs/a.jpg", dry_run=False) == (outcome, 0)
    assert remove_files(roots, ["thumbs/a.jpg", "thumbs/b.jpg"]) == [(outcome, 0), (Outcome.DELETED, 20)]
    assert (thumbs / "a.jpg").exists()


def test_remove_files_resolves_paths_after_a_removed_link_to_a_directory_afresh(roots: StorageRoots):
    thumbs = Path(roots.media_root) / "thumbs"
    (thumbs / "real").mkdir()
    (thumbs / "real" / "f.jpg").write_bytes(b"x" * 5)
    (thumbs / "a.jpg").write_bytes(b"x" * 3)
    (thumbs / "link").symlink_to("real")
    stored = ["thumbs/a.jpg", "thumbs/link", "thumbs/link/f.jpg"]

    outcomes = remove_files(roots, stored)

    # As path by path: once the link is gone, "thumbs/link/f.jpg" names nothing, and real/f.jpg stays.
    assert outcomes == [(Outcome.DELETED, 3), (Outcome.DELETED, 4), (Outcome.MISSING, 0)]
    assert (thumbs / "real" / "f.jpg").exists() and not (thumbs / "link").is_symlink()


def test_the_last_of_a_files_links_frees_its_bytes_even_when_each_thread_saw_the_other_link():
    # Two workers lstat both links before either unlinks: each sees two links, one of them frees the bytes.
    links = HardLinks()
    assert links.freed(5000, 2, (1, 42)) == 0
    assert links.freed(5000, 2, (1, 42)) == 5000
    assert links.freed(300, 2, (1, 43)) == 0  # another file, whose other link stays
    assert links.freed(700, 1, (1, 44)) == 700


def test_links_reported_out_of_order_still_free_the_bytes_only_with_the_last():
    # Of three links, worker B removed one after A's removal lowered the count, and reports first.
    links = HardLinks()
    assert links.freed(5000, 2, (1, 7)) == 0  # B: its lstat saw two links left
    assert links.freed(5000, 3, (1, 7)) == 0  # A: saw three; one link remains
    assert links.freed(5000, 1, (1, 7)) == 5000


def test_removing_two_of_three_links_frees_nothing(roots: StorageRoots):
    thumbs = Path(roots.media_root) / "thumbs"
    (thumbs / "a.jpg").write_bytes(b"x" * 50)
    for name in ("b.jpg", "c.jpg"):
        os.link(thumbs / "a.jpg", thumbs / name)
    links = HardLinks()

    removed = [remove_file(roots, f"thumbs/{n}", False, None, links) for n in ("a.jpg", "b.jpg")]

    assert removed == [(Outcome.DELETED, 0), (Outcome.DELETED, 0)]  # c.jpg still holds the bytes
    assert remove_file(roots, "thumbs/c.jpg", False, None, links) == (Outcome.DELETED, 50)


def test_a_link_whose_unlink_failed_still_holds_the_bytes(
    roots: StorageRoots, monkeypatch: pytest.MonkeyPatch
):
    thumbs = Path(roots.media_root) / "thumbs"
    (thumbs / "a.jpg").write_bytes(b"x" * 50)
    os.link(thumbs / "a.jpg", thumbs / "b.jpg")
    unlink = os.unlink

    def refusing_a(path, *args, **kwargs):
        if os.fspath(path).endswith("a.jpg"):
            raise PermissionError(1, "Operation not permitted", os.fspath(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refusing_a)
    links = HardLinks()

    assert remove_file(roots, "thumbs/a.jpg", False, None, links) == (Outcome.BLOCKED, 0)
    assert remove_file(roots, "thumbs/b.jpg", False, None, links) == (Outcome.DELETED, 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="/.a_%\\", max_size=14))
@example("a" + "/" * 5 + "b")
@example("a" + "/" * 9 + "b")
@example("a" + "/." * 5 + "/b")
@example("././/a/../b")
def test_the_checks_sql_and_python_take_the_same_noise_out_of_a_stored_path(engine: Engine, stored: str):
    # A row is compared in SQL, the very string a checked path is stored as in Python: they must agree.
    with engine.connect() as conn:
        in_sql = conn.execute(select(as_checked(literal(stored, String())))).scalar_one()
    assert in_sql == as_checked_text(stored)
