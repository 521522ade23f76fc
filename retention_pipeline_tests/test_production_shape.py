"""The production shape: instance in PostgreSQL, file deletion spread over a multiprocess executor."""

import dagster as dg
import pytest

from retention_pipeline.core.schema import detections
from retention_pipeline.jobs import build_data_cleanup_job
from retention_pipeline.resources import CameraSystemResource, DiskSpaceResource
from retention_pipeline.run_processes import recorded_process
from retention_pipeline_tests.dagster_helpers import point_environment_at
from retention_pipeline_tests.factories import CameraWorld


def multiprocess_data_cleanup() -> dg.JobDefinition:
    """data_cleanup as a production deployment would build it; the resource reads the environment."""
    definitions = dg.Definitions(
        jobs=[build_data_cleanup_job(dg.multiprocess_executor)],
        resources={"camera_system": CameraSystemResource(), "disk": DiskSpaceResource()},
    )
    return definitions.get_job_def("data_cleanup")


def test_file_shares_run_as_separate_steps_under_the_multiprocess_executor(
    world: CameraWorld,
    postgres_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
):
    if world.engine.dialect.name != "postgresql":
        pytest.skip("the production shape is PostgreSQL throughout; one run of ~12 processes is enough")
    thumbs = world.old_thumbnails(7)
    world.detection(world.recent())
    point_environment_at(world, monkeypatch)
    config = {
        "dry_run": False,
        "reference_time": world.now.isoformat(),
        "file_chunk_size": 3,
        "delete_images": True,
    }

    with dg.execute_job(
        dg.reconstructable(multiprocess_data_cleanup),
        instance=postgres_instance,
        run_config={
            "ops": {"plan_cleanup": {"config": config}},
            "execution": {"config": {"max_concurrent": 2}},
        },
    ) as result:
        assert result.success
        stats = result.output_for_node("report_cleanup")
        steps = {s.step_key for s in postgres_instance.get_run_step_stats(result.run_id)}
        run = postgres_instance.get_run_by_id(result.run_id)

    # A step process's pid dies with its step while the run goes on: it must not stand for the run.
    assert run is not None and recorded_process(postgres_instance, run.run_id) is None

    shares = sorted(k for k in steps if k.startswith("delete_expired_files"))
    assert len(shares) == 5  # 14 queued files (7 thumbnails, 7 images) in shares of 3
    assert not any(world.exists(t) for t in thumbs)
    assert world.count(detections) == 1
    assert (stats.thumbnails_deleted, stats.images_deleted) == (7, 7)
