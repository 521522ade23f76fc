"""Emergency mode's question whether a row still names a file on a pressed volume, when a timeout cuts it
off: the run goes on to its normal end, with the not-relieved marker disk_pressure_sensor waits on."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import text, update
from sqlalchemy.engine import Engine

from retention_pipeline.core import db, pressure
from retention_pipeline.core.schema import events
from retention_pipeline.history import PRESSURE_STEP, failure_metadata
from retention_pipeline.pressure_ops import NOT_RELIEVED
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.dagster_helpers import failure_messages
from retention_pipeline_tests.factories import CameraWorld
from retention_pipeline_tests.test_disk_pressure import OneVolumeFull, emergency_run, online

IDLE = "no row left in the tables retention shortens names a file"


@contextmanager
def events_locked(engine: Engine) -> Iterator[None]:
    """Another session holds the strongest lock the camera system takes on `events`: on PostgreSQL ACCESS
    EXCLUSIVE (an ALTER TABLE, a partition's CREATE ... PARTITION OF, DETACH or DROP), which even a plain
    SELECT waits behind; on SQLite the write lock, with a change not yet committed."""
    with engine.connect() as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
        else:
            conn.execute(update(events).values(camera_id=events.c.camera_id))
        yield


def lock_during_questions(
    monkeypatch: pytest.MonkeyPatch, world: CameraWorld, locked: int
) -> list[bool | None]:
    """The run's first `locked` questions are asked while `events` is locked; returns each question's
    answer, None for one that got none."""
    real = pressure.names_a_file
    answers: list[bool | None] = []

    def names_a_file(engine: Engine, columns: Any) -> bool:
        answers.append(None)
        with events_locked(world.engine) if len(answers) <= locked else nullcontext():
            answers[-1] = real(engine, columns)
        return bool(answers[-1])

    monkeypatch.setattr(pressure, "names_a_file", names_a_file)
    return answers


def clips_volume_no_event_names(world: CameraWorld, other_volume: Path) -> tuple[OneVolumeFull, str]:
    """A full clips volume filled by files no event names (no event has a clip): no shorter retention can
    free anything there, which the question tells as soon as it is answered."""
    clips = online(other_volume / "clips")
    for day in range(30):
        world.event(world.now - timedelta(days=day, hours=13), clip=None)
    return OneVolumeFull(volume=str(other_volume), free=5.0), str(clips)


def run_log(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> Callable[[str], bool]:
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return lambda words: any(words in message for message in logged)


def test_a_question_the_statement_timeout_cuts_off_counts_as_naming_files_down_to_the_minimum(
    postgresql_only: None, full: CameraWorld, instance, other_volume: Path, monkeypatch: pytest.MonkeyPatch
):
    # As on a table too large to read within the statement timeout: the run's connections end a statement
    # after 1 s, and a lock held on events keeps the question waiting past it (lock_timeout 5 s here).
    monkeypatch.setattr(db, "PG_STATEMENT_TIMEOUT_MS", 1000)
    monkeypatch.setattr(db, "PG_LOCK_TIMEOUT_MS", 5000)
    monkeypatch.setenv("MIN_RETENTION_DAYS", "27")
    disk, clips = clips_volume_no_event_names(full, other_volume)
    answers = lock_during_questions(monkeypatch, full, locked=1)

    result = emergency_run(full, instance, disk, clips_dir=clips)

    logged = run_log(instance, result)
    assert not result.success
    # The volume stayed pressed (answered, the question would have stopped the run at its first pass) and
    # the run ended as an emergency that cannot go lower does, with the sensor's marker; without the
    # fallback it failed on the cancelled statement, without the marker.
    assert "after cutting retention from 30 to 27 days (MIN_RETENTION_DAYS=27)" in failure_messages(result)
    assert failure_metadata(instance, result.run_id, PRESSURE_STEP).get(NOT_RELIEVED) is True
    assert logged("could not tell within the statement timeout whether a row still names a file on")
    # Taken as "yes" and kept: asking again would cost the whole timeout at every pass.
    assert answers == [None]
    assert full.count(events) == 27


@both_shapes
def test_a_question_a_lock_holds_past_the_lock_timeout_is_asked_again_after_the_next_pass(
    full: CameraWorld, instance, other_volume: Path, monkeypatch: pytest.MonkeyPatch
):
    disk, clips = clips_volume_no_event_names(full, other_volume)
    answers = lock_during_questions(monkeypatch, full, locked=1)

    result = emergency_run(full, instance, disk, clips_dir=clips)

    logged = run_log(instance, result)
    assert not result.success
    assert IDLE in failure_messages(result)
    # The sensor's marker: it asks for no emergency run until the disk has had room.
    assert failure_metadata(instance, result.run_id, PRESSURE_STEP).get(NOT_RELIEVED) is True
    if full.engine.dialect.name == "postgresql":
        # The plain SELECT waited behind the ACCESS EXCLUSIVE lock until lock_timeout (500 ms) ended it:
        # the volume stayed pressed for one more pass, after which the question was answered. Before the
        # fix the run failed on the lock timeout, without the marker.
        assert logged("could not tell within the lock timeout whether a row still names a file on")
        assert answers == [None, False]  # the first question got no answer, the second one "no"
        assert full.count(events) == 28
    else:
        # A SQLite reader never waits for a writer (WAL: it reads the last commit) and has no statement
        # timeout: the question is answered at once and the run stops at its first pass.
        assert not logged("could not tell")
        assert answers == [False]
        assert full.count(events) == 29
