"""The production shape: the Dagster instance itself stored in PostgreSQL (dagster-postgres)."""

import uuid
from collections.abc import Iterator

import dagster as dg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from retention_pipeline.core.schema import events
from retention_pipeline.history import recent_cleanup_runs
from retention_pipeline_tests.conftest import ADMIN_URL
from retention_pipeline_tests.dagster_helpers import execute, plan_config
from retention_pipeline_tests.factories import CameraWorld


@pytest.fixture
def postgres_instance(postgres_database: str) -> Iterator[dg.DagsterInstance]:
    name = f"dagster_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    storage = {"postgres": {"postgres_url": url}}
    with dg.instance_for_test(overrides={"storage": storage}) as instance:
        yield instance
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_job_runs_and_reports_on_an_instance_stored_in_postgresql(world: CameraWorld, postgres_instance):
    world.event(world.old(), alerts_count=1)
    world.event(world.recent())
    assert type(postgres_instance.run_storage).__name__ == "PostgresRunStorage"

    result = execute(
        world, postgres_instance, plan_config(dry_run=False, reference_time=world.now.isoformat())
    )

    assert result.success
    assert world.count(events) == 1
    [row] = recent_cleanup_runs(postgres_instance, limit=3)
    assert row["events_deleted"] == 1 and row["alerts_deleted"] == 1 and row["clips_deleted"] == 1
