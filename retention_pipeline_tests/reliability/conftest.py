"""Fixtures of the reliability suite; `engine` and `world` come from the parent conftest (both engines)."""

import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy.engine import Engine

from retention_pipeline_tests.factories import CameraWorld

SHM = Path("/dev/shm")


@pytest.fixture
def live_world(engine: Engine, tmp_path: Path) -> CameraWorld:
    """An empty world whose `now` is the real clock: the CLI measures its cutoffs from its launch time."""
    return CameraWorld(engine, tmp_path / "media", now=datetime.now(UTC))


@pytest.fixture
def dagster_home(tmp_path: Path) -> Iterator[Path]:
    """A Dagster instance directory, in memory when the machine has /dev/shm.

    Dagster's SQLite run storage syncs every event to disk (~50 ms each on a busy disk, ~80 per run); the
    camera database and the media, which is what these tests are about, stay on the real disk.
    """
    if SHM.is_dir() and shutil.disk_usage(SHM).free > 256 * 2**20:
        home = Path(tempfile.mkdtemp(prefix="retention-dagster-", dir=SHM))
    else:
        home = tmp_path / "dagster_home"
        home.mkdir()
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A throw-away Dagster instance for runs executed in this process."""
    with dg.instance_for_test() as instance:
        yield instance
