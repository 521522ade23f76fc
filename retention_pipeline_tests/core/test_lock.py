"""The run lock: exclusive while held, never stale after the holder dies."""

import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import Engine

from retention_pipeline.core.cleanup import clean_files, clean_table, prepare_database
from retention_pipeline.core.db import write_transaction
from retention_pipeline.core.lock import ExclusiveRunLock, RunLockBusy, RunLockLost
from retention_pipeline.core.purge.file_checks import no_progress
from retention_pipeline.core.queries import queue
from retention_pipeline.core.schema import logs
from retention_pipeline_tests.factories import THUMBS, CameraWorld

LOCK_SESSIONS = text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")


def _end_lock_sessions(engine: Engine) -> None:
    """What a server restart or idle_session_timeout does to the run lock's session."""
    with create_engine(engine.url).connect() as admin:
        for pid in admin.execute(LOCK_SESSIONS).scalars().all():
            admin.execute(select(func.pg_terminate_backend(pid)))


def _write_a_log_line(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        conn.execute(insert(logs).values(timestamp=func.now(), level="INFO", component="t", message="m"))


def _log_lines(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(logs)).scalar_one())


def test_a_second_holder_is_refused_until_the_first_releases(engine: Engine):
    first = ExclusiveRunLock(engine)
    first.acquire()
    try:
        with pytest.raises(RunLockBusy, match="another retention run is working on"):
            ExclusiveRunLock(engine).acquire()
    finally:
        first.release()

    with ExclusiveRunLock(engine):
        pass


def test_the_same_sqlite_file_reached_through_a_symlink_is_the_same_lock(engine: Engine, tmp_path):
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's lock is the server's, whatever the URL")
    link = tmp_path / "camera-link.db"
    link.symlink_to(engine.url.database)
    through_link = create_engine(f"sqlite:///{link}")
    first = ExclusiveRunLock(engine)
    first.acquire()
    try:
        with pytest.raises(RunLockBusy):
            ExclusiveRunLock(through_link).acquire()
    finally:
        first.release()
        through_link.dispose()


def test_the_server_ends_a_vanished_hosts_session_and_its_lock_within_a_minute(engine: Engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's lock is a file lock the kernel drops with its process")
    with engine.connect() as conn:
        idle, interval, count = (
            int(conn.execute(text(show)).scalar_one())
            for show in (
                "SHOW tcp_keepalives_idle",
                "SHOW tcp_keepalives_interval",
                "SHOW tcp_keepalives_count",
            )
        )
    assert 0 < idle + interval * count <= 60


def test_a_killed_holder_leaves_no_stale_lock(engine: Engine, database_url: str):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from retention_pipeline.core.db import make_engine
                from retention_pipeline.core.lock import ExclusiveRunLock
                ExclusiveRunLock(make_engine({database_url!r})).acquire()
                print("locked", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockBusy):
            ExclusiveRunLock(engine).acquire()
    finally:
        holder.kill()
        holder.wait()

    # PostgreSQL ends the dead client's session (and its advisory lock) as soon as the socket closes.
    for _ in range(50):
        try:
            with ExclusiveRunLock(engine):
                return
        except RunLockBusy:
            import time

            time.sleep(0.1)
    pytest.fail("the lock of a killed process was still held 5 s later")


def test_a_lock_whose_session_ended_takes_itself_again_before_the_next_commit(
    postgresql_only: None, engine: Engine
):
    with ExclusiveRunLock(engine):
        _end_lock_sessions(engine)

        _write_a_log_line(engine)

        assert _log_lines(engine) == 1
        with pytest.raises(RunLockBusy):
            ExclusiveRunLock(engine).acquire()


def test_a_lock_taken_by_another_run_meanwhile_rolls_the_write_back_and_stops(
    postgresql_only: None, engine: Engine
):
    first = ExclusiveRunLock(engine)
    first.acquire()
    _end_lock_sessions(engine)
    other_engine = create_engine(engine.url)
    try:
        with ExclusiveRunLock(other_engine):
            with pytest.raises(RunLockLost, match="another retention run holds it now"):
                _write_a_log_line(engine)
            assert _log_lines(engine) == 0
    finally:
        first.release()
        other_engine.dispose()
    _write_a_log_line(engine)  # a released lock no longer guards the engine
    assert _log_lines(engine) == 1


def test_commits_from_several_threads_check_the_held_lock_one_at_a_time(engine: Engine):
    # The file step commits from four threads; each commit checks the lock on the lock's one connection.
    # Interleaved on it, one check committed another's transaction ("transaction already deassociated").
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ExclusiveRunLock(engine) as lock, ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _n: _write_a_log_line(engine), range(200)))
            lock.ensure_held()
            with pytest.raises(RunLockBusy):
                ExclusiveRunLock(engine).acquire()

    assert _log_lines(engine) == 200


def _lose_the_lock_to_another_run(engine: Engine) -> tuple[ExclusiveRunLock, Engine]:
    """The server ends this run's lock session and another run takes the lock before the next commit."""
    _end_lock_sessions(engine)
    other_engine = create_engine(engine.url)
    other = ExclusiveRunLock(other_engine)
    other.acquire()
    return other, other_engine


def test_a_lost_lock_stays_lost_for_every_later_write_even_once_the_other_run_has_finished(
    postgresql_only: None, engine: Engine
):
    first = ExclusiveRunLock(engine)
    first.acquire()
    other, other_engine = _lose_the_lock_to_another_run(engine)
    try:
        with pytest.raises(RunLockLost):
            _write_a_log_line(engine)
        # A later step of the same run, or another of the file step's threads: still refused.
        with pytest.raises(RunLockLost, match="nothing more is deleted"):
            _write_a_log_line(engine)
        other.release()
        with pytest.raises(RunLockLost):
            _write_a_log_line(engine)
        with pytest.raises(RunLockLost):
            first.ensure_held()
        assert _log_lines(engine) == 0
    finally:
        other.release()
        first.release()
        other_engine.dispose()


def test_once_the_lock_is_found_lost_the_file_step_unlinks_nothing_more(
    postgresql_only: None, world: CameraWorld
):
    prepare_database(world.engine)
    thumbnails = [world.file(f"{THUMBS}/old_{n}.jpg") for n in range(3)]
    for thumbnail in thumbnails:
        world.detection(world.old(), thumbnail=thumbnail)
    world.log(world.log_cutoff - timedelta(days=1))
    plan = world.plan()
    lock = ExclusiveRunLock(world.engine)
    lock.acquire()
    try:
        assert clean_table(world.engine, plan, "detections", no_progress).deleted == 3
        other, other_engine = _lose_the_lock_to_another_run(world.engine)
        try:
            with pytest.raises(RunLockLost):
                clean_table(world.engine, plan, "logs", no_progress)
            with pytest.raises(RunLockLost, match="lost its lock"):
                clean_files(world.engine, plan, no_progress)
        finally:
            other.release()
            other_engine.dispose()
    finally:
        lock.release()

    assert all(world.exists(thumbnail) for thumbnail in thumbnails)
    with world.engine.connect() as conn:
        assert conn.execute(queue.select_last_queued_id()).scalar() is not None
    assert world.count(logs) == 1
