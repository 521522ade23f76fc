"""A camera database in a schema other than public, named by DATABASE_URL's ?options=-csearch_path=…"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.doctor import diagnose
from retention_pipeline.core.policy import read_policy
from retention_pipeline.core.schema import camera_metadata, detections, events
from retention_pipeline_tests.conftest import both_shapes
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


# The retention tables found through the search path while its first schema is another, empty one: the
# role's own ("$user", public: PostgreSQL's secure pattern) or a scratch schema before the camera one.
CROPS_POLICY = (
    "tables:\n  - table: crops\n    time_column: taken_at\n    retention_days: 30\n"
    "    files: {crop_path: thumbnails}\n"
)


@pytest.fixture
def own_schema(postgresql_only: None, world: CameraWorld) -> Iterator[str]:
    """A schema named after the role, as PostgreSQL's secure pattern has, empty: the default search path
    "$user", public makes it current_schema() while the tables stay in public. Its name."""
    with world.engine.begin() as conn:
        role = conn.execute(text("SELECT current_user")).scalar_one()
        conn.execute(text("CREATE SCHEMA AUTHORIZATION CURRENT_USER"))
    yield role
    with world.engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{role}" CASCADE'))


@pytest.fixture
def scratch_world(postgresql_only: None, world: CameraWorld, tmp_path: Path) -> Iterator[CameraWorld]:
    """`world`'s tables again in schema `camera`, reached through search_path scratch,camera where
    `scratch` exists and holds none of them."""
    with world.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS camera CASCADE; DROP SCHEMA IF EXISTS scratch CASCADE"))
        conn.execute(text("CREATE SCHEMA camera"))
    url = make_url(world.engine.url).update_query_dict({"options": "-csearch_path=scratch,camera"})
    engine: Engine = make_engine(url.render_as_string(hide_password=False))
    camera_metadata.create_all(engine)  # before scratch exists: into camera
    with world.engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA scratch"))
    yield CameraWorld(engine, tmp_path / "media", now=world.now)
    engine.dispose()
    with world.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA camera CASCADE; DROP SCHEMA scratch CASCADE"))


def _crops_and_marks(world: CameraWorld, tmp_path: Path) -> list[str]:
    """A policy table `crops` emptied by ON DELETE CASCADE from detections, and an unindexed partitioned
    child `marks`, both beside the retention tables; expired detections with young crops on disk. The
    crops' files."""
    with world.engine.begin() as conn:
        # Beside detections: an unqualified CREATE would put them in the first schema of the path.
        home = "SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = 'detections'::regclass"
        conn.execute(text("SELECT set_config('search_path', (" + home + "), true)"))
        conn.execute(
            text(
                "CREATE TABLE crops (id SERIAL PRIMARY KEY, detection_id INTEGER REFERENCES detections (id)"
                " ON DELETE CASCADE, taken_at TIMESTAMPTZ NOT NULL, crop_path TEXT);"
                "CREATE TABLE marks (id INTEGER, taken_at TIMESTAMPTZ, detection_id INTEGER"
                " REFERENCES detections (id) ON DELETE CASCADE, PRIMARY KEY (id, taken_at))"
                " PARTITION BY RANGE (taken_at);"
                "CREATE TABLE marks_all PARTITION OF marks FOR VALUES FROM ('2000-01-01') TO ('2100-01-01')"
            )
        )
    files = []
    for n in range(3):
        detection = world.detection(world.old(), events_=(world.event(world.old()),))
        files.append(world.file(f"{THUMBS}/crop{n}.jpg"))
        with world.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO crops (detection_id, taken_at, crop_path) VALUES (:d, :at, :path)"),
                {"d": detection, "at": world.recent(), "path": files[-1]},
            )
    (tmp_path / "policy.yaml").write_text(CROPS_POLICY)
    world.policy = read_policy(tmp_path / "policy.yaml")
    return files


def _first_schema_is_not_the_tables(world: CameraWorld, expected: str) -> None:
    with world.engine.connect() as conn:
        assert conn.execute(text("SELECT current_schema()")).scalar_one() == expected


def _cascaded_files_go_and_doctor_sees_every_child_at_home(world: CameraWorld, tmp_path: Path) -> None:
    files = _crops_and_marks(world, tmp_path)

    report = diagnose(world.engine, world.plan(dry_run=True))
    for statement in report.advice:  # as a person runs them, one by one
        with world.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(statement))
    stats = world.run()

    assert stats.detections_deleted == 3
    assert stats.thumbnails_deleted == 3 + 3  # the detections' own, and the crops' the cascade took
    assert not any(world.exists(f) for f in files)
    with world.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM crops")).scalar_one() == 0
    assert report.ok, report.blocking
    assert [r.name for r in report.references if r.schema is not None] == []
    assert "CREATE INDEX ix_marks_detection_id ON ONLY marks (detection_id);" in report.advice
    assert diagnose(world.engine, world.plan(dry_run=True)).advice == []


@both_shapes
def test_with_the_roles_own_schema_first_children_beside_the_tables_are_theirs(
    own_schema: str, world: CameraWorld, tmp_path: Path
):
    _first_schema_is_not_the_tables(world, own_schema)
    _cascaded_files_go_and_doctor_sees_every_child_at_home(world, tmp_path)


def test_with_an_empty_scratch_schema_first_children_beside_the_tables_are_theirs(
    scratch_world: CameraWorld, tmp_path: Path
):
    _first_schema_is_not_the_tables(scratch_world, "scratch")
    _cascaded_files_go_and_doctor_sees_every_child_at_home(scratch_world, tmp_path)

    # The file queue goes where PostgreSQL creates an unqualified name, the first schema of the path,
    # and is found there again by every run with that path.
    with scratch_world.engine.connect() as conn:
        where = conn.execute(
            text(
                "SELECT relnamespace::regnamespace::text FROM pg_class"
                " WHERE oid = to_regclass('retention_file_queue')"
            )
        ).scalar_one()
    assert where == "scratch"
