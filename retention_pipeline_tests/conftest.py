"""Engine fixtures: every database test runs on SQLite and on PostgreSQL."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import redis
from hypothesis.configuration import set_hypothesis_home_dir
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.schema import camera_metadata

from .camera_schema import camera_system_metadata
from .factories import CameraWorld

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
# CI sets this so a PostgreSQL that is down fails the suite instead of skipping half of it.
REQUIRE_POSTGRES = os.environ.get("RETENTION_REQUIRE_POSTGRES") == "1"
NOW = datetime(2026, 6, 15, 3, 0, tzinfo=UTC)

# Hypothesis keeps caches (constants, unicode data) under `.hypothesis/` in the working directory, and
# starts writing them while it collects; this suite writes nothing into the tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "retention-pipeline-hypothesis")


def _postgres_problem() -> str | None:
    try:
        engine = create_engine(ADMIN_URL)
        with engine.connect():
            pass
        engine.dispose()
    except OperationalError as exc:
        return f"PostgreSQL at {make_url(ADMIN_URL).render_as_string()} is not reachable: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; its URL."""
    problem = _postgres_problem()
    if problem:
        if REQUIRE_POSTGRES:
            pytest.fail(problem + " (RETENTION_REQUIRE_POSTGRES=1)")
        pytest.skip(problem + "; start it or set TEST_POSTGRES_URL")
    name = f"retention_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# The two database shapes a test can run on: our demo schema (core/schema.py, every path column indexed)
# and the camera system's real one (camera_schema.py: no path indexes, a dozen child tables, uuid alerts).
SHAPES = ["ours", "camera"]
both_shapes = pytest.mark.parametrize("schema_shape", SHAPES, indirect=True)


@pytest.fixture
def schema_shape(request: pytest.FixtureRequest) -> str:
    """Which schema the test database has: "ours" unless a test is marked `both_shapes`."""
    return str(getattr(request, "param", "ours"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, schema_shape: str) -> Iterator[str]:
    """An empty camera database (all tables created, in the test's schema shape) on each engine."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'camera.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
    engine = make_engine(url)
    if request.param == "postgresql":
        # One database serves the session: start each test from an empty schema, whatever tables,
        # triggers or functions the last one added.
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    (camera_system_metadata if schema_shape == "camera" else camera_metadata).create_all(engine)
    engine.dispose()
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The pipeline's engine on the test database."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> CameraWorld:
    """A camera database plus a media tree with the three storage roots under tmp_path/media."""
    return CameraWorld(engine, tmp_path / "media", now=NOW)


@pytest.fixture
def other_volume(tmp_path: Path) -> Iterator[Path]:
    """A directory on another filesystem than the test's media (the tmpfs at /dev/shm)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        yield Path(other)


@pytest.fixture
def full(engine: Engine, tmp_path: Path) -> CameraWorld:
    """One detection per day over the 30-day retention: nothing has expired, yet the disk is 9% free."""
    world = CameraWorld(engine, tmp_path / "media", now=datetime.now(UTC).replace(microsecond=0))
    for day in range(30):
        world.detection(world.now - timedelta(days=day, hours=12))
    return world


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A throwaway Dagster instance (SQLite storage in a temporary directory)."""
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def postgres_instance(postgres_database: str) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance whose runs, events and schedules live in PostgreSQL (dagster-postgres)."""
    with postgres_instance_in(None) as instance:
        yield instance


@contextmanager
def postgres_instance_in(timezone: str | None) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance stored in a PostgreSQL database of its own, whose sessions run in `timezone`
    (the server's default with None), as a database set up in local time would."""
    name = f"dagster_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        if timezone is not None:
            conn.execute(text(f"ALTER DATABASE \"{name}\" SET timezone = '{timezone}'"))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    storage = {"postgres": {"postgres_url": url}}
    try:
        with dg.instance_for_test(overrides={"storage": storage}) as instance:
            yield instance
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgresql_only(request: pytest.FixtureRequest) -> None:
    """Skips the SQLite half of a scenario that needs a database server, before its database is built.

    List it first among the test's fixtures.
    """
    if request.node.callspec.params.get("database_url") != "postgresql":
        pytest.skip(
            "needs a PostgreSQL server (sessions, pg_terminate_backend, advisory locks, statement_timeout);"
            " SQLite has none"
        )


class RedisServer:
    """A redis-server of the test's own, on a free port, that a test may stop mid-run."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real Redis (the project's .ci/run installs redis-server where it is missing)."""
    if shutil.which("redis-server") is None:
        if REQUIRE_POSTGRES:  # CI: every service the suite needs must be there
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path)
    yield server
    server.stop()
