"""Foreign keys wherever they are declared (another PostgreSQL schema, a partitioned child, a mixed-case
name), and the indexes doctor recommends for them, run exactly as printed."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from retention_pipeline.core.cleanup import SchemaError
from retention_pipeline.core.doctor import diagnose
from retention_pipeline.core.policy import read_policy
from retention_pipeline.core.schema import detections
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import CameraWorld


@pytest.fixture
def analytics(world: CameraWorld) -> Iterator[None]:
    """A second schema of the operator's, gone after the test (the fixtures reset only `public`)."""
    with world.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS analytics CASCADE"))
        conn.execute(text("CREATE SCHEMA analytics"))
    yield
    with world.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA analytics CASCADE"))


@both_shapes
def test_a_no_action_key_from_another_schema_refuses_the_run_before_any_delete_and_doctor_names_it(
    postgresql_only: None, world: CameraWorld, analytics: None
):
    expired = [world.detection(world.old()) for _ in range(3)]
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE analytics.review_marks (id serial PRIMARY KEY,"
                " detection_id INTEGER REFERENCES public.detections (id))"
            )
        )
        conn.execute(
            text("INSERT INTO analytics.review_marks (detection_id) VALUES (:d)"), {"d": expired[-1]}
        )

    report = diagnose(world.engine, world.plan(dry_run=True))
    with pytest.raises(SchemaError, match=r"analytics\.review_marks\.detection_id -> detections"):
        world.run(batch_size=1)

    assert not report.ok
    assert "analytics.review_marks.detection_id -> detections (ON DELETE NO ACTION)" in report.blocking[0]
    assert world.ids(detections) == set(expired)  # not one batch committed


@both_shapes
def test_cascading_and_set_null_keys_from_another_schema_are_listed_qualified_with_their_index_advice(
    postgresql_only: None, world: CameraWorld, analytics: None
):
    expired = world.detection(world.old())
    with world.engine.begin() as conn:
        for table, action in (("marks", "CASCADE"), ("flags", "SET NULL")):
            conn.execute(
                text(
                    f"CREATE TABLE analytics.{table} (id serial PRIMARY KEY,"
                    f" detection_id INTEGER REFERENCES public.detections (id) ON DELETE {action})"
                )
            )
            conn.execute(text(f"INSERT INTO analytics.{table} (detection_id) VALUES (:d)"), {"d": expired})

    report = diagnose(world.engine, world.plan(dry_run=True))
    world.run()

    found = {(r["table"], r["on_delete"]) for r in report.as_dict()["references"] if r["schema"]}
    assert found == {("analytics.marks", "CASCADE"), ("analytics.flags", "SET NULL")}
    assert report.ok
    for table in ("marks", "flags"):
        statement = f"CREATE INDEX CONCURRENTLY ix_{table}_detection_id ON analytics.{table} (detection_id);"
        assert statement in report.advice
    with world.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM analytics.marks")).scalar_one() == 0
        assert conn.execute(text("SELECT detection_id FROM analytics.flags")).scalar_one() is None


def _unindexed_children(world: CameraWorld, tmp_path: Path) -> None:
    """A mixed-case child and policy table, and on PostgreSQL a child partitioned two levels deep."""
    stamp = "TIMESTAMP WITH TIME ZONE" if world.engine.dialect.name == "postgresql" else "TIMESTAMP"
    statements = [
        'CREATE TABLE "AuditLogs" (id INTEGER PRIMARY KEY, "createdAt" ' + stamp + " NOT NULL)",
        'CREATE TABLE "ThreatNotes" (id INTEGER PRIMARY KEY,'
        ' "detectionId" INTEGER REFERENCES detections (id) ON DELETE CASCADE)',
    ]
    if world.engine.dialect.name == "postgresql":
        statements += [
            "CREATE TABLE snapshots (id INTEGER, taken_at TIMESTAMPTZ NOT NULL, event_id INTEGER"
            " REFERENCES events (id) ON DELETE CASCADE, PRIMARY KEY (id, taken_at))"
            " PARTITION BY RANGE (taken_at)",
            "CREATE TABLE snapshots_old PARTITION OF snapshots FOR VALUES FROM ('2000-01-01')"
            " TO ('2026-01-01') PARTITION BY RANGE (taken_at)",
            "CREATE TABLE snapshots_old_a PARTITION OF snapshots_old FOR VALUES FROM ('2000-01-01')"
            " TO ('2020-01-01')",
            "CREATE TABLE snapshots_old_b PARTITION OF snapshots_old FOR VALUES FROM ('2020-01-01')"
            " TO ('2026-01-01')",
            "CREATE TABLE snapshots_new PARTITION OF snapshots FOR VALUES FROM ('2026-01-01')"
            " TO ('2100-01-01')",
        ]
    with world.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: AuditLogs\n    time_column: createdAt\n    retention_days: 30\n")
    world.policy = read_policy(policy)


@both_shapes
def test_every_index_doctor_recommends_runs_as_printed_and_leaves_nothing_to_recommend(
    world: CameraWorld, tmp_path: Path
):
    _unindexed_children(world, tmp_path)

    advice = diagnose(world.engine, world.plan(dry_run=True)).advice
    # As a person runs them: one by one, on PostgreSQL outside a transaction (CONCURRENTLY needs that).
    postgresql = world.engine.dialect.name == "postgresql"
    autocommit = {"isolation_level": "AUTOCOMMIT"} if postgresql else {}
    for statement in advice:
        with world.engine.connect().execution_options(**autocommit) as conn:
            conn.execute(text(statement))
            conn.commit()

    assert 'CREATE INDEX "ix_AuditLogs_createdAt" ON "AuditLogs" ("createdAt");' in [
        s.replace(" CONCURRENTLY", "") for s in advice
    ]
    if postgresql:
        # The partitions' own foreign keys are the parent's: one index tree, advised once.
        assert sum("ON ONLY snapshots " in s for s in advice) == 1
        assert not any("CONCURRENTLY" in s and "ON snapshots (" in s for s in advice)
    again = diagnose(world.engine, world.plan(dry_run=True))
    assert again.advice == []
    assert not any(r.slows_deletes for r in again.references)
