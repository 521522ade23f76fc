"""doctor refuses what the run refuses: a role without the rights a run uses, a SQLite library without the
JSON functions; and its file count, through the command's read-only connection, is the dry run's."""

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from retention_pipeline.core import doctor_checks
from retention_pipeline.core.cleanup import SchemaError, prepare_database, run_cleanup
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.doctor import diagnose
from retention_pipeline.core.queries import path_checks
from retention_pipeline.core.schema import detections
from retention_pipeline.core.stats import CleanupStats
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import THUMBS, CameraWorld, login_role
from retention_pipeline_tests.test_cli import cli


@pytest.fixture
def camera_role(world: CameraWorld) -> Iterator[Engine]:
    """An engine logged in as a role that may read, write and delete every camera table, and no more
    (PostgreSQL 15's default: no CREATE on a schema it does not own)."""
    with login_role(
        world.engine,
        "camera",
        "GRANT USAGE ON SCHEMA public TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}",
    ) as engine:
        yield engine


def test_doctor_exits_1_for_a_role_that_may_not_create_the_queue_or_delete_and_the_run_agrees(
    postgresql_only: None, world: CameraWorld, camera_role: Engine
):
    world.detection(world.old())
    role = camera_role.url.username

    cannot_create = diagnose(camera_role, world.plan(dry_run=True)).blocking
    with pytest.raises(SchemaError, match=f"the database role {role} may not CREATE in schema public"):
        prepare_database(camera_role)
    with world.engine.begin() as conn:
        conn.execute(text(f"GRANT CREATE ON SCHEMA public TO {role}"))
        conn.execute(text(f"REVOKE DELETE ON detections FROM {role}"))
    cannot_delete = diagnose(camera_role, world.plan(dry_run=True)).blocking

    assert len(cannot_create) == 1
    assert (
        f"the database role {role} may not CREATE in schema public, where the first run creates its"
        in (cannot_create[0])
    )
    assert cannot_delete == [
        f"the database role {role} may not DELETE table detections, which a run does: run"
        f" GRANT DELETE ON detections TO {role}; (or use a role that may in DATABASE_URL)"
    ]
    with world.engine.begin() as conn:  # the queue made by an administrator, half granted
        conn.execute(text(f"GRANT DELETE ON detections TO {role}"))
    prepare_database(world.engine)
    with world.engine.begin() as conn:
        conn.execute(text(f"GRANT SELECT, INSERT ON retention_file_queue TO {role}"))
    cannot_drain = diagnose(camera_role, world.plan(dry_run=True)).blocking
    assert [p.split(", which")[0] for p in cannot_drain] == [
        f"the database role {role} may not UPDATE/DELETE table retention_file_queue",
        f"the database role {role} may not use the id sequence of retention_file_queue",
    ]


def test_doctor_refuses_a_sqlite_library_without_json_functions_as_the_run_does(
    world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(path_checks, "probe_json_functions", lambda: select(func.no_such_json_function()))
    world.detection(world.old())

    report = diagnose(world.engine, world.plan(dry_run=True))

    if world.engine.dialect.name == "sqlite":
        with pytest.raises(SchemaError) as refused:
            prepare_database(world.engine)
        assert report.blocking == [str(refused.value).removesuffix(". Nothing was deleted.")]
        assert "has no JSON functions" in report.blocking[0]
    else:  # PostgreSQL stages names its own way: neither asks
        prepare_database(world.engine)
        assert report.ok


def test_the_command_s_file_count_is_the_dry_run_s_shared_and_missing_files_left_out(
    world: CameraWorld, tmp_path: Path
):
    shared = world.file(f"{THUMBS}/shared.jpg")
    world.detection(world.old(), thumbnail=shared)
    # Young for the command too, whose reference time is the clock's, not the world's.
    world.detection(max(world.recent(), datetime.now(UTC)), thumbnail=shared)
    world.detection(world.old(), thumbnail=f"{THUMBS}/gone.jpg")
    world.detection(world.old())  # its own thumbnail

    done = cli(world, tmp_path, "doctor", "--json")
    dry = world.run(dry_run=True)

    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["expired_files"] == dry.thumbnails_deleted == 1
    assert world.ids(detections) and world.exists(shared)


@pytest.fixture
def bare_role(world: CameraWorld) -> Iterator[Engine]:
    """An engine logged in as a role that may use and create in schema public, and no more."""
    with login_role(world.engine, "bare", "GRANT USAGE, CREATE ON SCHEMA public TO {role}") as engine:
        yield engine


def _lacking(problems: list[str]) -> dict[str, str]:
    """table -> the rights doctor says the role lacks on it."""
    found = (re.match(r"the database role \S+ may not (\S+) table (\S+),", p) for p in problems)
    return {m[2]: m[1] for m in found if m}


@both_shapes
def test_a_role_given_the_grants_doctor_prints_runs_and_one_short_of_them_is_refused_before_any_delete(
    postgresql_only: None, world: CameraWorld, bare_role: Engine, schema_shape: str
):
    old_event = world.event(world.old(), clip=world.file("data/clips/old.mp4"))
    expired = {world.detection(world.old(), events_=(old_event,)) for _ in range(3)}
    with world.engine.connect() as conn:
        thumbnails = list(conn.execute(select(detections.c.thumbnail_path)).scalars())

    def run_as_role() -> CleanupStats:
        prepare_database(bare_role, world.policy)
        return run_cleanup(bare_role, world.plan())

    lacking = diagnose(bare_role, world.plan(dry_run=True)).blocking
    # Every GRANT doctor printed but the last (on the camera's schema: the table only the file step reads).
    grants = [re.search(r"run (GRANT [^;]*;)", p)[1] for p in lacking]  # type: ignore[index]
    with world.engine.begin() as conn:
        for grant in grants[:-1]:
            conn.execute(text(grant))
    one_short = diagnose(bare_role, world.plan(dry_run=True)).blocking
    with pytest.raises(SchemaError) as refused:
        run_as_role()
    left_after_refusal = world.ids(detections)
    with world.engine.begin() as conn:
        conn.execute(text(grants[-1]))
    granted = diagnose(bare_role, world.plan(dry_run=True))
    stats = run_as_role()

    # What the run does: lock the batches of the tables with files or children (FOR UPDATE: UPDATE),
    # read and delete their alerts and links, read the rows that keep their files.
    expected = {
        "detections": "SELECT/UPDATE/DELETE",
        "events": "SELECT/UPDATE/DELETE",
        "alerts": "SELECT/DELETE",
        "event_detections": "SELECT/DELETE",
        "gpu_stats": "SELECT/DELETE",
        "logs": "SELECT/DELETE",
    }
    if schema_shape == "camera":
        expected["zone_anomalies"] = "SELECT"
    assert _lacking(lacking) == expected
    assert len(one_short) == 1 and str(refused.value) == one_short[0] + ". Nothing was deleted."
    assert left_after_refusal == expired
    assert granted.ok, granted.blocking
    assert stats.detections_deleted == 3 and stats.events_deleted == 1
    assert not world.ids(detections) & expired
    assert not any(world.exists(p) for p in [*thumbnails, "data/clips/old.mp4"])


# A hot standby cannot be made here, and no setting makes SET TRANSACTION READ WRITE fail on a primary
# (default_transaction_read_only=on for the role only sets the default, which the preview overrides). So
# each of a standby's two answers is injected: pg_is_in_recovery() true, through a function of that name
# that a search path listing pg_catalog last finds first; and a writable transaction refused, by leaving the
# preview's transactions read-only (its temporary table is then refused as on a read-only server).
@pytest.fixture
def standby_url(postgresql_only: None, world: CameraWorld) -> Iterator[str]:
    """DATABASE_URL of a server that says it is in recovery."""
    with world.engine.begin() as conn:
        conn.execute(
            text("CREATE FUNCTION public.pg_is_in_recovery() RETURNS boolean LANGUAGE sql AS 'SELECT true'")
        )
    url = world.engine.url.update_query_dict({"options": "-csearch_path=public,pg_catalog"})
    yield url.render_as_string(hide_password=False)
    with world.engine.begin() as conn:
        conn.execute(text("DROP FUNCTION public.pg_is_in_recovery()"))


def test_on_a_standby_doctor_completes_saying_why_the_files_are_not_counted(
    world: CameraWorld, tmp_path: Path, standby_url: str
):
    world.detection(world.old())

    done = cli(world, tmp_path, "doctor", "--json", DATABASE_URL=standby_url)
    text_report = cli(world, tmp_path, "doctor", DATABASE_URL=standby_url)

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["expired_rows"]["detections"] == 1
    assert report["expired_files"] is None
    assert report["expired_files_not_counted"].startswith("the server is a read-only standby (in recovery)")
    assert text_report.returncode == 0
    assert "; files not counted: the server is a read-only standby" in text_report.stdout


def test_where_the_preview_s_transaction_cannot_write_doctor_completes_saying_why(
    postgresql_only: None, world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    world.detection(world.old())

    def stays_read_only(conn: Any) -> None:
        cursor = conn.connection.cursor()
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.close()

    monkeypatch.setattr(doctor_checks, "_read_write", stays_read_only)
    report = diagnose(
        make_engine(str(world.engine.url.render_as_string(False)), read_only=True), world.plan()
    )

    assert report.ok, report.blocking
    assert report.expired_rows["detections"] == 1
    assert report.expired_files is None
    assert report.expired_files_not_counted is not None
    assert "cannot execute CREATE TABLE in a read-only transaction" in report.expired_files_not_counted


def test_a_primary_s_feature_not_supported_error_in_the_preview_is_not_taken_for_a_standby(
    postgresql_only: None, world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    world.detection(world.old())

    def unsupported(engine: Engine, *_args: Any, **_kwargs: Any) -> None:
        with engine.connect() as conn:  # SQLSTATE 0A000 on any server, in recovery or not
            conn.execute(text("SELECT count(*) FROM detections FOR UPDATE"))

    monkeypatch.setattr(doctor_checks, "preview_file_deletions", unsupported)

    with pytest.raises(DBAPIError, match="FOR UPDATE is not allowed with aggregate functions"):
        diagnose(world.engine, world.plan())
