"""A camera database in a schema other than public, named by DATABASE_URL's ?options=-csearch_path=…"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.schema import camera_metadata, detections, events
from retention_pipeline_tests.dagster_helpers import execute, plan_config
from retention_pipeline_tests.factories import THUMBS, CameraWorld


@pytest.fixture
def camera_schema_world(postgresql_only: None, world: CameraWorld, tmp_path: Path) -> Iterator[CameraWorld]:
    """`world`'s tables again in schema `camera`, reached through the URL's search_path; the public ones
    stay, so a run that ignored the URL's options would find (and delete from) those."""
    with world.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS camera CASCADE"))
        conn.execute(text("CREATE SCHEMA camera"))
    url = make_url(world.engine.url).update_query_dict({"options": "-csearch_path=camera"})
    engine: Engine = make_engine(url.render_as_string(hide_password=False))
    camera_metadata.create_all(engine)
    yield CameraWorld(engine, tmp_path / "media", now=world.now)
    engine.dispose()
    with world.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA camera CASCADE"))


def test_a_run_purges_the_schema_the_urls_search_path_names(
    camera_schema_world: CameraWorld, world: CameraWorld, instance: dg.DagsterInstance
):
    camera = camera_schema_world
    old_event = camera.event(camera.old(), clip=camera.file("data/clips/old.mp4"))
    camera.detection(camera.old(), events_=(old_event,), thumbnail=camera.file(f"{THUMBS}/old.jpg"))
    kept = (camera.event(camera.recent()), camera.detection(camera.recent()))
    public_rows = (world.event(world.old()), world.detection(world.old()))  # not the camera system's

    preview = camera.run(dry_run=True)
    result = execute(camera, instance, plan_config(dry_run=False, reference_time=camera.now.isoformat()))

    assert (preview.events_deleted, preview.detections_deleted) == (1, 1)
    assert result.success
    stats = result.output_for_node("report_cleanup")
    assert (stats.events_deleted, stats.detections_deleted, stats.clips_deleted) == (1, 1, 1)
    assert (camera.ids(events), camera.ids(detections)) == ({kept[0]}, {kept[1]})
    assert (world.ids(events), world.ids(detections)) == ({public_rows[0]}, {public_rows[1]})
    assert not camera.exists(f"{THUMBS}/old.jpg")
