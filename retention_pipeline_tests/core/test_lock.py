"""The run lock: exclusive while held, never stale after the holder dies."""

import subprocess
import sys
import textwrap

import pytest
from sqlalchemy.engine import Engine

from retention_pipeline.core.lock import ExclusiveRunLock, RunLockBusy


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
