"""A lock that keeps two cleanup runs off one camera database, whoever launched them.

Dagster's run queue already serialises runs it launches; this lock also covers runs that bypass the queue
(the CLI, a second Dagster deployment). It cannot go stale: PostgreSQL drops an advisory lock with its
session, and the kernel drops a flock with its process, however the process dies.
"""

from __future__ import annotations

import fcntl
import os
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

# pg_advisory_lock takes a bigint; any constant works as long as every retention run uses the same one.
ADVISORY_LOCK_KEY = 0x52455445_4E54494F  # "RETENTIO"


class RunLockBusy(RuntimeError):
    """Another cleanup run holds the lock on this database."""


class ExclusiveRunLock:
    """Held from `acquire` until `release` (or the death of the process)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now or raise RunLockBusy; never waits."""
        if self._engine.dialect.name == "postgresql":
            self._acquire_advisory()
        else:
            self._acquire_file()

    def _acquire_advisory(self) -> None:
        connection = self._engine.connect()
        got = connection.execute(select(func.pg_try_advisory_lock(ADVISORY_LOCK_KEY))).scalar()
        connection.commit()  # the lock belongs to the session; do not sit idle in a transaction
        if not got:
            connection.close()
            raise RunLockBusy(self._busy_message())
        self._connection = connection

    def _acquire_file(self) -> None:
        database = self._engine.url.database
        if not database or database == ":memory:":
            return  # a private in-memory database cannot be shared with another run
        fd = os.open(f"{database}.retention-lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockBusy(self._busy_message()) from None
        self._fd = fd

    def _busy_message(self) -> str:
        where = self._engine.url.render_as_string(hide_password=True)
        return (
            f"another retention run is working on {where}; this run stopped before deleting anything."
            " Try again when it has finished."
        )

    def release(self) -> None:
        """Give the lock back; safe to call when it is not held."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.execute(select(func.pg_advisory_unlock(ADVISORY_LOCK_KEY)))
                connection.commit()
            except DBAPIError:
                pass  # the session is gone, and its advisory lock went with it
            finally:
                connection.close()
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> ExclusiveRunLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.release()
