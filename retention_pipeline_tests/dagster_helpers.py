"""Running data_cleanup through Dagster against a test CameraWorld."""

from typing import Any

import dagster as dg
import pytest

from retention_pipeline.core import cleanup
from retention_pipeline.jobs import data_cleanup
from retention_pipeline.resources import CameraSystemResource, DiskSpaceResource
from retention_pipeline_tests.factories import CLIPS, IMAGES, THUMBS, CameraWorld


def camera_resource(world: CameraWorld, clips_dir: str = CLIPS) -> CameraSystemResource:
    return CameraSystemResource(
        database_url=world.engine.url.render_as_string(hide_password=False),
        media_root=str(world.media),
        thumbnail_dir=THUMBS,
        clips_dir=clips_dir,
        images_dir=IMAGES,
    )


def plan_config(**config: Any) -> dict[str, Any]:
    return {"ops": {"plan_cleanup": {"config": config}}}


def execute(
    world: CameraWorld,
    instance: dg.DagsterInstance,
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    return data_cleanup.execute_in_process(
        run_config=run_config,
        resources={"camera_system": camera_resource(world), "disk": DiskSpaceResource()},
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(
        (event.message or "") + " " + str(event.event_specific_data)
        for event in result.all_events
        if event.is_failure
    )


def environment_for(world: CameraWorld) -> dict[str, str]:
    """The environment that points the Definitions' resources (which read it at run time) at `world`."""
    return {
        "DATABASE_URL": world.engine.url.render_as_string(hide_password=False),
        "MEDIA_ROOT": str(world.media),
        "THUMBNAIL_DIR": THUMBS,
        "CLIPS_DIR": CLIPS,
        "IMAGES_DIR": IMAGES,
    }


def point_environment_at(world: CameraWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set `environment_for(world)` for the test: the Definitions' own resources then use `world`."""
    for name, value in environment_for(world).items():
        monkeypatch.setenv(name, value)


def latest_observation(instance: dg.DagsterInstance, key: str) -> dict[str, Any]:
    """The metadata of an asset's last observation."""
    records = instance.fetch_observations(dg.AssetKey(key), limit=1).records
    assert records, f"no observation of {key}"
    observation = records[0].asset_observation
    return {k: v.value for k, v in observation.metadata.items()}


def refuse_table(monkeypatch: pytest.MonkeyPatch, table: str, message: str) -> None:
    """Make the purge of `table` fail with RuntimeError(message); every other table is purged as usual."""
    real_clean_table = cleanup.clean_table

    def clean_table(engine: Any, plan: Any, name: str, *args: Any) -> Any:
        if name == table:
            raise RuntimeError(message)
        return real_clean_table(engine, plan, name, *args)

    monkeypatch.setattr(cleanup, "clean_table", clean_table)
