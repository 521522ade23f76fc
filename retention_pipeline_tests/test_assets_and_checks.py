"""The asset graph, its observations and the retention health checks, on SQLite and PostgreSQL."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, event, insert, text
from sqlalchemy.engine import Engine

from retention_pipeline import assets
from retention_pipeline.assets import camera_assets
from retention_pipeline.checks import retention_checks, retention_health_job
from retention_pipeline.core import estimates, inventory
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.schema import camera_metadata
from retention_pipeline.core.schema import detections as detections_table
from retention_pipeline.core.tables import Registry
from retention_pipeline.definitions import defs
from retention_pipeline.resources import CameraSystemResource, DiskSpaceResource
from retention_pipeline.settings import Settings
from retention_pipeline_tests.dagster_helpers import (
    execute,
    latest_observation,
    plan_config,
    point_environment_at,
)
from retention_pipeline_tests.factories import CLIPS, THUMBS, CameraWorld


@pytest.fixture
def live_world(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CameraWorld:
    """A world on the real clock, with the environment pointing the Definitions' resources at it."""
    world = CameraWorld(engine, tmp_path / "media", now=datetime.now(UTC))
    point_environment_at(world, monkeypatch)
    return world


def test_the_camera_data_is_declared_as_assets_with_their_lineage():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}

    assert keys == {"events", "detections", "gpu_stats", "logs", "thumbnails", "images", "clips"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("thumbnails")).parent_keys} == {"detections"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("clips")).parent_keys} == {"events"}
    specs = {spec.key.to_user_string(): spec for spec in defs.assets}
    assert all(spec.group_name == "camera_system" for spec in specs.values())
    assert "RETENTION_DAYS" in specs["events"].description


def test_a_real_cleanup_observes_every_asset_and_a_dry_run_none(world: CameraWorld, instance):
    world.event(world.old(), clip=world.file(f"{CLIPS}/c.mp4", 300))
    world.detection(world.old(), thumbnail=world.file(f"{THUMBS}/t.jpg", 50))
    world.detection(world.recent())
    world.gpu(world.old())
    world.log(world.log_cutoff - timedelta(hours=1))

    execute(world, instance, plan_config(dry_run=True, reference_time=world.now.isoformat()))
    assert not instance.fetch_observations(dg.AssetKey("events"), limit=1).records

    analyze(world.engine)  # PostgreSQL's estimates now say what the tables held before the cleanup
    execute(world, instance, plan_config(dry_run=False, reference_time=world.now.isoformat()))
    detections = latest_observation(instance, "detections")
    assert detections["rows_deleted"] == 1
    assert detections["oldest_age_days"] > 0
    assert detections["rows"] == 1 and detections["rows_estimated"] is False  # small: counted exactly
    assert latest_observation(instance, "events")["rows_deleted"] == 1
    assert latest_observation(instance, "gpu_stats")["rows_deleted"] == 1
    assert latest_observation(instance, "logs")["rows_deleted"] == 1
    assert latest_observation(instance, "thumbnails") == {"files_deleted": 1, "bytes_deleted": 50}
    assert latest_observation(instance, "clips") == {"files_deleted": 1, "bytes_deleted": 300}


def test_a_failed_read_of_the_tables_sizes_after_the_deletes_is_a_warning_not_a_failed_run(
    world: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    def unreadable(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the server went away")

    world.detection(world.old())
    monkeypatch.setattr(assets, "table_inventory", unreadable)

    result = execute(world, instance, plan_config(dry_run=False, reference_time=world.now.isoformat()))

    assert result.success and world.count(detections_table) == 0
    assert latest_observation(instance, "thumbnails")["files_deleted"] == 1  # the files' need no read
    assert not instance.fetch_observations(dg.AssetKey("detections"), limit=1).records
    warnings = [
        event.message
        for event in instance.all_logs(result.run_id)
        if event.level == 30 and "asset observation" in (event.message or "")
    ]
    assert warnings == [
        f"could not read table {name} for its asset observation, left out: the server went away"
        for name in ("detections", "events", "gpu_stats", "logs")
    ]


def test_a_large_tables_estimate_is_lowered_by_the_rows_the_cleanup_deleted(
    postgresql_only: None, world: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(estimates, "EXACT_COUNT_ROWS", 0)  # every table counts as large: no count(*)
    for _ in range(4):
        world.gpu(world.old())
    world.gpu(world.recent())
    analyze(world.engine)

    execute(world, instance, plan_config(dry_run=False, reference_time=world.now.isoformat()))

    gpu = latest_observation(instance, "gpu_stats")
    assert (gpu["rows"], gpu["rows_estimated"], gpu["rows_deleted"]) == (1, True, 4)


def test_an_estimate_refreshed_after_the_deletes_is_not_lowered_again(
    postgresql_only: None, world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(estimates, "EXACT_COUNT_ROWS", 0)
    for _ in range(4):
        world.gpu(world.old())
    world.gpu(world.recent())
    started = datetime.now(UTC)
    assert world.run().gpu_stats_deleted == 4
    analyze(world.engine)  # autovacuum got there first

    counted = inventory.table_inventory(world.engine, Registry()["gpu_stats"], deleted=4, since=started)

    assert (counted.rows, counted.rows_estimated) == (1, True)


def test_postgresql_estimates_are_read_for_the_table_the_search_path_finds(
    postgresql_only: None, database_url: str, tmp_path: Path
):
    admin = make_engine(database_url)
    with admin.begin() as conn:  # an older schema holds a bigger table of the same name
        conn.execute(text("DROP TABLE public.gpu_stats"))  # the camera's tables live in `cam` here
        conn.execute(text("CREATE SCHEMA archive"))
        conn.execute(
            text("CREATE TABLE archive.gpu_stats AS SELECT g AS id FROM generate_series(1, 200000) g")
        )
        conn.execute(text("CREATE SCHEMA cam"))
    camera = make_engine(database_url)

    @event.listens_for(camera, "connect")
    def _camera_schema(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET search_path TO cam")
        dbapi_connection.commit()

    try:
        camera_metadata.create_all(camera)
        world = CameraWorld(camera, tmp_path / "media", now=datetime.now(UTC))
        for _ in range(3):
            world.gpu(world.recent())
        analyze(admin)

        counted = inventory.table_inventory(camera, Registry()["gpu_stats"])
    finally:
        camera.dispose()
        with admin.begin() as conn:
            conn.execute(text("DROP SCHEMA archive CASCADE"))
            conn.execute(text("DROP SCHEMA cam CASCADE"))
        admin.dispose()

    assert counted.rows == 3


def test_a_real_orphan_sweep_observes_the_media_stores(live_world: CameraWorld, instance):
    stamp = time.time() - 48 * 3600
    for n in range(3):
        live_world.detection(live_world.recent(), thumbnail=live_world.file(f"{THUMBS}/t{n}.jpg", 10))
        os.utime(live_world.media / THUMBS / f"t{n}.jpg", (stamp, stamp))

    result = defs.resolve_job_def("orphaned_file_cleanup").execute_in_process(
        run_config={"ops": {"plan_orphan_sweep": {"config": {"dry_run": False}}}}, instance=instance
    )

    assert result.success
    thumbnails = latest_observation(instance, "thumbnails")
    assert thumbnails["files"] == 3 and thumbnails["bytes"] == 30
    assert 1.9 < thumbnails["oldest_age_days"] < 2.1


def analyze(engine: Engine) -> None:
    """PostgreSQL: refresh the planner's estimates now, as autovacuum would in time (SQLite: nothing)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))


def run_health(instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
    result = defs.resolve_job_def("retention_health").execute_in_process(instance=instance)
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def test_retention_check_warns_after_one_missed_run_errors_after_two_and_passes_after_cleanup(
    live_world: CameraWorld, instance
):
    live_world.detection(live_world.now - timedelta(days=30, hours=12))  # due, not overdue: healthy
    live_world.event(live_world.now - timedelta(days=31, hours=12))  # one missed run
    live_world.gpu(live_world.now - timedelta(days=33))  # two missed runs

    checks = run_health(instance)

    assert checks["detections:retention_enforced"].passed
    events = checks["events:retention_enforced"]
    assert not events.passed and events.severity == dg.AssetCheckSeverity.WARN
    assert events.metadata["overdue_rows"].value == 1
    gpu = checks["gpu_stats:retention_enforced"]
    assert not gpu.passed and gpu.severity == dg.AssetCheckSeverity.ERROR
    assert gpu.metadata["oldest"].value.startswith((live_world.now - timedelta(days=33)).strftime("%Y-%m-%d"))

    cleaned = defs.resolve_job_def("data_cleanup").execute_in_process(
        run_config=plan_config(dry_run=False), instance=instance
    )
    assert cleaned.success
    after = run_health(instance)
    assert all(
        after[f"{name}:retention_enforced"].passed for name in ("events", "detections", "gpu_stats", "logs")
    )


def test_retention_check_passes_on_an_old_detection_a_retained_event_keeps(live_world: CameraWorld, instance):
    retained = live_world.event(live_world.now - timedelta(days=5))
    kept = live_world.detection(live_world.now - timedelta(days=40), events_=(retained,))
    live_world.detection(live_world.now - timedelta(days=33))  # two missed runs, nothing keeps it
    expired_event = live_world.event(live_world.now - timedelta(days=33))
    for days in (5, 6):  # young, but they go with the expired event
        live_world.detection(live_world.now - timedelta(days=days), events_=(expired_event,))

    before = run_health(instance)["detections:retention_enforced"]
    cleaned = defs.resolve_job_def("data_cleanup").execute_in_process(
        run_config=plan_config(dry_run=False), instance=instance
    )
    after = run_health(instance)["detections:retention_enforced"]

    assert not before.passed and before.severity == dg.AssetCheckSeverity.ERROR
    assert before.metadata["overdue_rows"].value == 3  # the purge's rows, not the one the keep rule keeps
    assert cleaned.success and live_world.ids(detections_table) == {kept}
    assert after.passed and after.metadata["overdue_rows"].value == 0


def test_orphan_check_reports_what_the_last_sweep_found(live_world: CameraWorld, instance):
    stamp = time.time() - 48 * 3600
    for n in range(4):
        live_world.detection(live_world.recent(), thumbnail=live_world.file(f"{THUMBS}/t{n}.jpg"))
        os.utime(live_world.media / THUMBS / f"t{n}.jpg", (stamp, stamp))
    live_world.file(f"{THUMBS}/orphan.jpg")
    os.utime(live_world.media / THUMBS / "orphan.jpg", (stamp, stamp))
    assert run_health(instance)["thumbnails:no_orphans_in_last_sweep"].passed  # no sweep yet

    defs.resolve_job_def("orphaned_file_cleanup").execute_in_process(
        run_config={"ops": {"plan_orphan_sweep": {"config": {"dry_run": False}}}}, instance=instance
    )

    checks = run_health(instance)
    thumbnails = checks["thumbnails:no_orphans_in_last_sweep"]
    assert not thumbnails.passed and thumbnails.metadata["orphans_found"].value == 1
    # Each media store answers for its own root: the clips' held no orphan, the images' was not swept.
    clips = checks["clips:no_orphans_in_last_sweep"]
    assert clips.passed and clips.metadata["orphans_found"].value == 0
    images = checks["images:no_orphans_in_last_sweep"]
    assert images.passed and images.metadata["last_sweep"].value.startswith("did not sweep")

    # The manifest goes with its run's outputs after DAGSTER_RUN_RETENTION_DAYS: the check still answers.
    for manifest in Path(instance.storage_directory()).rglob("orphans.csv"):
        manifest.unlink()
    after = run_health(instance)
    assert not after["thumbnails:no_orphans_in_last_sweep"].passed
    assert after["images:no_orphans_in_last_sweep"].passed


def test_each_policy_table_is_an_asset_with_a_retention_check_that_follows_its_own_days(
    live_world: CameraWorld, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    audit = Table(
        "audit_logs",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    audit.create(live_world.engine)
    with live_world.engine.begin() as conn:  # 90 days allowed: 93 is two missed runs past due
        conn.execute(insert(audit).values(created_at=live_world.now - timedelta(days=93)))
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: audit_logs\n    time_column: created_at\n    retention_days: 90\n")
    monkeypatch.setenv("RETENTION_POLICY_FILE", str(policy))
    registry = Settings.from_env().registry
    policy_defs = dg.Definitions(
        assets=camera_assets(registry),
        asset_checks=retention_checks(registry),
        jobs=[retention_health_job, defs.resolve_job_def("data_cleanup")],
        resources={"camera_system": CameraSystemResource(), "disk": DiskSpaceResource()},
    )

    described = {spec.key.to_user_string(): spec.description for spec in camera_assets(registry)}
    assert "90 days after created_at" in described["audit_logs"]
    health = policy_defs.resolve_job_def("retention_health").execute_in_process(instance=instance)
    checks = {e.asset_key.to_user_string(): e for e in health.get_asset_check_evaluations()}
    assert not checks["audit_logs"].passed and checks["audit_logs"].severity == dg.AssetCheckSeverity.ERROR
    assert checks["audit_logs"].metadata["allowed_age_days"].value == 91

    cleaned = policy_defs.resolve_job_def("data_cleanup").execute_in_process(
        run_config=plan_config(dry_run=False), instance=instance
    )
    assert cleaned.success
    assert latest_observation(instance, "audit_logs")["rows_deleted"] == 1
    health = policy_defs.resolve_job_def("retention_health").execute_in_process(instance=instance)
    assert all(e.passed for e in health.get_asset_check_evaluations())


def test_a_bad_policy_file_stops_the_code_location_from_loading_naming_the_file(tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: audit_logs\n    time_column: created_at\n    retention_days: 0\n")
    env = {**os.environ, "RETENTION_POLICY_FILE": str(policy)}

    done = subprocess.run(
        [sys.executable, "-c", "import retention_pipeline.definitions"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode != 0
    assert f"RETENTION_POLICY_FILE {policy}: tables[0] (audit_logs): retention_days must be" in done.stderr
