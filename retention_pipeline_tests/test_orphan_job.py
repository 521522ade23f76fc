"""orphaned_file_cleanup through Dagster and the CLI, on SQLite and PostgreSQL."""

import json
import logging
import os
import sqlite3
import time
from pathlib import Path

import dagster as dg
import pytest

from retention_pipeline.jobs import orphaned_file_cleanup
from retention_pipeline.resources import CameraSystemResource
from retention_pipeline.schedules import build_weekly_orphan_schedule
from retention_pipeline.settings import Settings
from retention_pipeline.tags import SWEEP_HEADLINE
from retention_pipeline_tests.dagster_helpers import camera_resource, failure_messages
from retention_pipeline_tests.factories import CLIPS, IMAGES, THUMBS, CameraWorld
from retention_pipeline_tests.test_cli import cli


def old_file(world: CameraWorld, relative: str) -> str:
    world.file(relative, 10)
    stamp = time.time() - 48 * 3600
    os.utime(world.media / relative, (stamp, stamp))
    return relative


@pytest.fixture
def tree(world: CameraWorld) -> CameraWorld:
    for n in range(3):
        world.detection(world.recent(), thumbnail=old_file(world, f"{THUMBS}/live{n}.jpg"))
    old_file(world, f"{THUMBS}/orphan.jpg")
    return world


def sweep(
    world: CameraWorld, instance, resource: CameraSystemResource | None = None, **config
) -> dg.ExecuteInProcessResult:
    return orphaned_file_cleanup.execute_in_process(
        run_config={"ops": {"plan_orphan_sweep": {"config": config}}} if config else None,
        resources={"camera_system": resource or camera_resource(world)},
        instance=instance,
        raise_on_error=False,
    )


def test_default_config_is_a_dry_run_that_reports_on_the_run_page(tree: CameraWorld, instance):
    result = sweep(tree, instance)

    assert result.success
    assert tree.exists(f"{THUMBS}/orphan.jpg")
    [output] = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records[
        -1:
    ]
    metadata = output.event_log_entry.dagster_event.step_output_data.metadata
    assert metadata["dry_run"].value is True
    assert metadata["files_scanned"].value == 4 and metadata["orphans_found"].value == 1
    # A dry run's counts are named for what a real run would do.
    assert metadata["orphans_to_delete"].value == 1 and metadata["bytes_to_reclaim"].value == 10
    assert "orphans_deleted" not in metadata and "bytes_reclaimed" not in metadata
    tags = instance.get_run_by_id(result.run_id).tags
    assert {k: tags[k] for k in SWEEP_HEADLINE} == {
        "dry_run": "true",
        "orphans_found": "1",
        "orphans_deleted": "1",
        "bytes_reclaimed": "10 B",
    }
    assert "orphan.jpg" in metadata["first_50_orphans"].value
    assert Path(metadata["report_csv"].value).is_file()


def test_real_sweep_deletes_the_orphan(tree: CameraWorld, instance):
    result = sweep(tree, instance, dry_run=False)

    assert result.success
    assert not tree.exists(f"{THUMBS}/orphan.jpg") and tree.exists(f"{THUMBS}/live0.jpg")


def test_a_root_that_holds_the_database_and_dagster_home_never_loses_them(tree: CameraWorld, tmp_path: Path):
    # THUMBNAIL_DIR=data around the other roots, where the SQLite database and Dagster's home also live:
    # no row names them, and one database among many files stays under the share stops.
    if tree.engine.dialect.name != "sqlite":
        pytest.skip("a PostgreSQL database is not a file under the roots")
    for n in range(20):
        tree.detection(tree.recent(), thumbnail=old_file(tree, f"{THUMBS}/more{n}.jpg"))
    database = tree.media / "data" / "retention.db"
    with sqlite3.connect(str(tree.engine.url.database)) as source, sqlite3.connect(database) as copy:
        source.backup(copy)
    lock = database.with_name(database.name + ".retention-lock")
    (tree.media / "data" / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tree.media / "data" / "dagster_home")) as instance:
        resource = CameraSystemResource(
            database_url=f"sqlite:///{database}",
            media_root=str(tree.media),
            thumbnail_dir="data",
            clips_dir=CLIPS,
            images_dir=IMAGES,
        )
        home_file = tree.media / "data" / "dagster_home" / "history.db"
        home_file.write_bytes(b"runs")
        lock.write_bytes(b"")
        stamp = time.time() - 48 * 3600
        for path in (database, home_file, lock):
            os.utime(path, (stamp, stamp))

        result = sweep(tree, instance, resource, dry_run=False)

    assert result.success, failure_messages(result)
    assert database.is_file() and home_file.is_file() and lock.is_file()
    assert not tree.exists(f"{THUMBS}/orphan.jpg") and tree.exists(f"{THUMBS}/live0.jpg")
    stats = result.output_for_node("scan_orphaned_files")
    assert stats.orphans_found == 1 and stats.protected_skipped >= 3


def test_a_root_around_images_and_the_policy_file_leaves_both_alone(
    tree: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    # THUMBNAIL_DIR=data around IMAGES_DIR=data/images: without include_images a camera's upload no
    # detection names yet stays, and so does RETENTION_POLICY_FILE kept beside the media.
    upload = old_file(tree, f"{IMAGES}/front_door/upload.jpg")
    policy_file = tree.media / old_file(tree, "data/retention-policy.yaml")
    policy_file.write_text("# no rules yet\n")
    os.utime(policy_file, (time.time() - 48 * 3600,) * 2)
    monkeypatch.setenv("RETENTION_POLICY_FILE", str(policy_file))
    resource = CameraSystemResource(
        database_url=tree.engine.url.render_as_string(hide_password=False),
        media_root=str(tree.media),
        thumbnail_dir="data",
        clips_dir=CLIPS,
        images_dir=IMAGES,
    )

    result = sweep(tree, instance, resource, dry_run=False)

    assert result.success, failure_messages(result)
    assert tree.exists(upload) and policy_file.is_file()
    assert not tree.exists(f"{THUMBS}/orphan.jpg") and tree.exists(f"{THUMBS}/live0.jpg")
    assert result.output_for_node("delete_orphaned_files").orphans_deleted == 1


def test_safety_stop_fails_the_run_with_the_reason(tree: CameraWorld, instance):
    for n in range(5):
        old_file(tree, f"{THUMBS}/more{n}.jpg")

    result = sweep(tree, instance, dry_run=False)

    assert not result.success
    assert "look orphaned, more than max_orphan_fraction 50%" in failure_messages(result)
    assert tree.exists(f"{THUMBS}/orphan.jpg")


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("min_age_hours", 0.0, "min_age_hours must be greater than or equal to 1, got 0.0"),
        ("min_age_hours", 1e8, "min_age_hours must be less than or equal to 876000, got 100000000.0"),
        ("max_orphan_fraction", 0.0, "max_orphan_fraction must be greater than 0, got 0.0"),
        ("max_orphan_fraction", 1.5, "max_orphan_fraction must be less than or equal to 1, got 1.5"),
        ("max_delete_bytes", -1, "max_delete_bytes must be greater than or equal to 0, got -1"),
    ],
)
def test_a_bad_policy_is_refused_at_launch_and_nothing_is_scanned(
    tree: CameraWorld, instance, field, bad, message
):
    with pytest.raises(dg.DagsterInvalidConfigError, match="nothing was launched") as refused:
        sweep(tree, instance, dry_run=False, **{field: bad})

    assert f"plan_orphan_sweep: {message}" in str(refused.value)
    assert instance.get_runs_count() == 0
    assert tree.exists(f"{THUMBS}/orphan.jpg")


def test_weekly_schedule_is_off_by_default_and_sends_a_complete_real_config():
    schedule = build_weekly_orphan_schedule(Settings())

    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 4 * * 0"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance)
        [request] = schedule.evaluate_tick(context).run_requests or []
    config = request.run_config["ops"]["plan_orphan_sweep"]["config"]
    assert config["dry_run"] is False and config["max_orphan_fraction"] == 0.5
    assert config["min_age_hours"] == 24.0 and config["force"] is False
    dg.validate_run_config(orphaned_file_cleanup, request.run_config)


def test_cli_orphans_dry_run_then_delete(tree: CameraWorld, tmp_path: Path):
    preview = cli(tree, tmp_path, "orphans", "--json")
    assert preview.returncode == 0, preview.stderr
    assert json.loads(preview.stdout)["orphans_found"] == 1
    assert tree.exists(f"{THUMBS}/orphan.jpg")

    deleted = cli(tree, tmp_path, "orphans", "--delete", "--json")

    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["orphans_deleted"] == 1
    assert not tree.exists(f"{THUMBS}/orphan.jpg")


def test_dagster_storage_a_dagster_yaml_puts_under_a_root_is_never_swept(tree: CameraWorld, tmp_path: Path):
    if tree.engine.dialect.name != "sqlite":
        pytest.skip("the instance's files are the same whatever the camera database")
    for n in range(20):
        tree.detection(tree.recent(), thumbnail=old_file(tree, f"{THUMBS}/more{n}.jpg"))
    storage = tree.media / THUMBS / "dagster_storage"
    (tmp_path / "dagster_home").mkdir()
    overrides = {"storage": {"sqlite": {"base_dir": str(storage)}}}
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home"), overrides=overrides) as instance:
        assert sweep(tree, instance).success  # writes the run history under the root
        stamp = time.time() - 48 * 3600
        history = [path for path in storage.rglob("*") if path.is_file()]
        for path in history:
            os.utime(path, (stamp, stamp))

        result = sweep(tree, instance, dry_run=False)

        assert result.success, failure_messages(result)
        assert history and all(path.exists() for path in history)
        assert not tree.exists(f"{THUMBS}/orphan.jpg")


def test_a_directory_the_walk_cannot_read_is_counted_and_warned_of(
    tree: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    hidden = tree.media / old_file(tree, f"{THUMBS}/locked/orphan.jpg")
    scandir = os.scandir

    def refusing(path):  # root reads any directory whatever its mode: refuse one as a mode 000 would
        if str(path) == str(hidden.parent):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)

    result = sweep(tree, instance, dry_run=False)

    assert result.success, failure_messages(result)
    assert hidden.exists() and not tree.exists(f"{THUMBS}/orphan.jpg")
    stats = result.output_for_node("report_orphan_sweep")
    assert (stats.unreadable_dirs, stats.orphans_deleted) == (1, 1)
    warnings = [
        record.user_message
        for record in instance.all_logs(result.run_id)
        if record.level == logging.WARNING and "could not be read" in record.user_message
    ]
    assert warnings == [
        "1 directories under the roots could not be read (permissions, or gone meanwhile): their files"
        " were neither scanned nor deleted"
    ]
