"""Policy tables as assets: their keys beside the media stores', and their checks when the table is gone."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert, text, update
from sqlalchemy.engine import Engine

from retention_pipeline.assets import camera_assets
from retention_pipeline.checks import orphan_checks, retention_checks, retention_health_job
from retention_pipeline.core.purge import loop
from retention_pipeline.core.schema import alerts, detections, events
from retention_pipeline.definitions import defs
from retention_pipeline.history import failure_metadata
from retention_pipeline.resources import CameraSystemResource, DiskSpaceResource
from retention_pipeline.settings import Settings
from retention_pipeline_tests import camera_schema
from retention_pipeline_tests.dagster_helpers import (
    failure_messages,
    latest_observation,
    plan_config,
)
from retention_pipeline_tests.factories import CLIPS, CameraWorld
from retention_pipeline_tests.test_assets_and_checks import live_world

__all__ = ["live_world"]  # the fixture


def policy_table(engine: Engine, name: str) -> Table:
    table = Table(
        name,
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    table.create(engine)
    return table


def policy_definitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str) -> dg.Definitions:
    """The code location's Definitions, built as definitions.py builds them, with this policy file."""
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
    monkeypatch.setenv("RETENTION_POLICY_FILE", str(path))
    registry = Settings.from_env().registry
    return dg.Definitions(
        assets=camera_assets(registry),
        asset_checks=[*retention_checks(registry), *orphan_checks],
        jobs=[retention_health_job, defs.resolve_job_def("data_cleanup")],
        resources={"camera_system": CameraSystemResource(), "disk": DiskSpaceResource()},
    )


def checks_of(
    definitions: dg.Definitions, instance: dg.DagsterInstance
) -> dict[str, dg.AssetCheckEvaluation]:
    result = definitions.resolve_job_def("retention_health").execute_in_process(instance=instance)
    assert result.success
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def test_a_policy_table_named_like_a_media_store_is_its_own_asset_beside_the_store(
    live_world: CameraWorld, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    clips_table = policy_table(live_world.engine, "clips")
    with live_world.engine.begin() as conn:  # 90 days allowed: 93 is two missed runs past due
        conn.execute(insert(clips_table).values(created_at=live_world.now - timedelta(days=93)))
    live_world.event(live_world.now - timedelta(days=40), clip=live_world.file(f"{CLIPS}/c.mp4", 300))
    policy = "tables:\n  - table: clips\n    time_column: created_at\n    retention_days: 90\n"

    definitions = policy_definitions(tmp_path, monkeypatch, policy)

    keys = {key.to_user_string() for key in definitions.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "events",
        "detections",
        "gpu_stats",
        "logs",
        "thumbnails",
        "images",
        "clips",
        "table/clips",
    }
    before = checks_of(definitions, instance)
    assert not before["table/clips:retention_enforced"].passed
    assert before["table/clips:retention_enforced"].metadata["allowed_age_days"].value == 91
    assert before["clips:no_orphans_in_last_sweep"].passed

    cleaned = definitions.resolve_job_def("data_cleanup").execute_in_process(
        run_config=plan_config(dry_run=False), instance=instance
    )

    assert cleaned.success
    records = instance.fetch_observations(dg.AssetKey(["table", "clips"]), limit=1).records
    assert records[0].asset_observation.metadata["rows_deleted"].value == 1
    assert latest_observation(instance, "clips") == {"files_deleted": 1, "bytes_deleted": 300}
    assert all(e.passed for e in checks_of(definitions, instance).values())


def test_the_check_of_a_policy_table_the_database_lost_fails_saying_so(
    live_world: CameraWorld, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    policy_table(live_world.engine, "audit_logs")
    policy = "tables:\n  - table: audit_logs\n    time_column: created_at\n    retention_days: 90\n"
    definitions = policy_definitions(tmp_path, monkeypatch, policy)
    with live_world.engine.begin() as conn:  # dropped after the code location loaded the policy
        conn.execute(text("DROP TABLE audit_logs"))
    live_world.gpu(live_world.now - timedelta(days=33))

    checks = checks_of(definitions, instance)

    audit = checks["audit_logs:retention_enforced"]
    assert not audit.passed and audit.severity == dg.AssetCheckSeverity.ERROR
    assert audit.description is not None
    assert audit.description.startswith("The database has no table 'audit_logs'")
    assert "RETENTION_POLICY_FILE" in audit.description
    # The other checks still answer.
    assert not checks["gpu_stats:retention_enforced"].passed
    assert checks["events:retention_enforced"].passed


@pytest.mark.parametrize("schema_shape", ["camera"], indirect=True)  # events.deleted_at is the camera's
@pytest.mark.parametrize("spelling", ["events", "Events"])
def test_a_rule_on_events_spelled_in_another_case_is_the_events_rule_where_the_database_ignores_case(
    spelling: str, live_world: CameraWorld, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    world, now = live_world, live_world.now
    policy = f"tables:\n  - table: {spelling}\n    time_column: deleted_at\n    retention_days: 7\n"
    definitions = policy_definitions(tmp_path, monkeypatch, policy)
    keys = {key.to_user_string() for key in definitions.resolve_asset_graph().get_all_asset_keys()}
    if world.engine.dialect.name == "postgresql" and spelling != "events":
        # PostgreSQL keeps a quoted name's case: `Events` is another table, which this database lacks.
        assert "Events" in keys
        refused = definitions.resolve_job_def("data_cleanup").execute_in_process(
            run_config=plan_config(dry_run=False), instance=instance, raise_on_error=False
        )
        assert not refused.success and "the database has no table 'Events'" in failure_messages(refused)
        return
    assert keys == {"events", "detections", "gpu_stats", "logs", "thumbnails", "images", "clips"}
    gone_clip = world.file(f"{CLIPS}/gone.mp4")
    gone = world.event(now - timedelta(days=10), clip=gone_clip, alerts_count=2)
    with world.engine.begin() as conn:  # soft-deleted 9 days ago: 7 days allowed, two missed runs
        soft = camera_schema.events
        conn.execute(update(soft).where(soft.c.id == gone).values(deleted_at=now - timedelta(days=9)))
    only_its = world.detection(now - timedelta(days=10), events_=(gone,))
    retained = world.event(now - timedelta(days=10))
    shared = world.detection(now - timedelta(days=10), events_=(gone, retained))

    before = checks_of(definitions, instance)["events:retention_enforced"]
    cleaned = definitions.resolve_job_def("data_cleanup").execute_in_process(
        run_config=plan_config(dry_run=False), instance=instance
    )
    after = checks_of(definitions, instance)["events:retention_enforced"]

    assert not before.passed and before.metadata["overdue_rows"].value == 1
    assert cleaned.success and world.ids(events) == {retained}
    assert world.ids(detections) == {shared}  # the keep rule: a retained event still links it
    assert only_its not in world.ids(detections)
    assert world.count(alerts) == 0 and not world.exists(gone_clip)
    assert latest_observation(instance, "events")["rows_deleted"] == 1
    assert after.passed


BUILT_IN_NAMES = ["detections", "events", "gpu_stats", "logs"]


@pytest.mark.parametrize(
    ("database_url", "rules_by_table"),
    [
        (
            "sqlite:///camera.db",
            {"events": ["started_at", "deleted_at"], "Crops": ["taken_at", "cut_at"]},
        ),
        (  # PostgreSQL keeps a quoted name's case: three more tables
            "postgresql://camera@db/camera",
            {"events": ["started_at"], "Events": ["deleted_at"], "Crops": ["taken_at"], "crops": ["cut_at"]},
        ),
    ],
)
def test_where_the_database_ignores_case_each_policy_table_is_one_registry_entry(
    database_url: str, rules_by_table: dict[str, list[str]], tmp_path: Path
):
    path = tmp_path / "policy.yaml"
    rule = "  - table: {}\n    time_column: {}\n    retention_days: 30\n"
    path.write_text(
        "tables:\n"
        + rule.format("Events", "deleted_at")
        + rule.format("Crops", "taken_at")
        + rule.format("crops", "cut_at")
    )

    registry = Settings.from_env({"DATABASE_URL": database_url, "RETENTION_POLICY_FILE": str(path)}).registry

    assert registry.names == [*BUILT_IN_NAMES, *(t for t in rules_by_table if t not in BUILT_IN_NAMES)]
    for table, columns in rules_by_table.items():
        assert [r.column for r in registry[table].rules] == columns


def test_a_policy_table_step_failing_in_its_second_table_reports_the_first_tables_rows_too(
    live_world: CameraWorld, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    now = live_world.now
    tables = {name: policy_table(live_world.engine, name) for name in ("alpha", "beta")}
    with live_world.engine.begin() as conn:
        for table in tables.values():
            conn.execute(
                insert(table), [{"id": i, "created_at": now - timedelta(days=33)} for i in range(1, 7)]
            )
    rule = "  - table: {}\n    time_column: created_at\n    retention_days: 30\n"
    definitions = policy_definitions(
        tmp_path, monkeypatch, "tables:\n" + rule.format("alpha") + rule.format("beta")
    )
    real, calls = loop.table_batches, [0]

    def batches(engine: Engine, expiry: Any, table: str, *args: Any, **kwargs: Any) -> Any:
        step = real(engine, expiry, table, *args, **kwargs)
        if table != "beta":
            return step

        def third_fails(*batch: Any) -> Any:
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("permission denied for table beta")
            return step(*batch)

        return third_fails

    monkeypatch.setattr(loop, "table_batches", batches)
    result = definitions.resolve_job_def("data_cleanup").execute_in_process(
        run_config=plan_config(dry_run=False, batch_size=2, transaction_target_ms=0),
        instance=instance,
        raise_on_error=False,
    )

    gone = {name: 6 - live_world.count(table) for name, table in tables.items()}
    assert gone == {"alpha": 6, "beta": 4}
    assert failure_metadata(instance, result.run_id, "purge_declared_tables")["rows_deleted"] == 10
