"""The production shape: the Dagster instance itself stored in PostgreSQL (dagster-postgres)."""

from retention_pipeline.core.schema import events
from retention_pipeline.history import recent_cleanup_runs
from retention_pipeline_tests.dagster_helpers import execute, plan_config
from retention_pipeline_tests.factories import CameraWorld


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
