"""A lock that keeps two cleanup runs off one camera database, whoever launched them.

Dagster's run queue already serialises runs it launches; this lock also covers runs that bypass the queue
(the CLI, a second Dagster deployment). It cannot go stale: PostgreSQL drops an advisory lock with its
session, and the kernel drops a flock with its process, however the process dies. Because the server can
also end that session under a live run (restart, failover, idle_session_timeout), a held PostgreSQL lock
checks itself before every write transaction of the run's engine commits, and takes itself again or stops
the run (rolling that transaction back). A lock found lost stays lost until released: every later write on
that engine is rolled back too, whichever step or thread makes it.
"""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
from typing import Any

from sqlalchemy import Select, column, event, exists, func, select, table
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from .db import is_write_transaction

# pg_advisory_lock takes a bigint; any constant works as long as every retention run uses the same one.
ADVISORY_LOCK_KEY = 0x52455445_4E54494F  # "RETENTIO"


_PG_LOCKS = table(
    "pg_locks",
    column("locktype"),
    column("classid"),
    column("objid"),
    column("objsubid"),
    column("pid"),
    column("granted"),
)


class RunLockBusy(RuntimeError):
    """Another cleanup run holds the lock on this database."""


class RunLockLost(RuntimeError):
    """The run's lock ended with its database session, and another run holds it now."""


LOST_MESSAGE = (
    "this run lost its lock on the database (the server ended its session) and another retention run"
    " holds it now; this run stopped so the two never delete at the same time: the transaction in"
    " progress was rolled back and nothing more is deleted. What earlier batches deleted stays"
    " deleted; the next run carries on."
)

# Engines whose run lock was found lost: the file step's workers look here before they unlink.
_LOST: weakref.WeakSet[Engine] = weakref.WeakSet()


def raise_if_lost(engine: Engine) -> None:
    """Raise RunLockLost if the run lock taken on this engine was found lost; no database round trip."""
    if engine in _LOST:
        raise RunLockLost(LOST_MESSAGE)


def select_run_lock_held() -> Select[tuple[bool]]:
    """Whether this session holds the run's advisory lock (a bigint key shows as classid:objid, subid 1)."""
    return select(
        exists().where(
            _PG_LOCKS.c.locktype == "advisory",
            _PG_LOCKS.c.pid == func.pg_backend_pid(),
            _PG_LOCKS.c.classid == ADVISORY_LOCK_KEY >> 32,
            _PG_LOCKS.c.objid == ADVISORY_LOCK_KEY & 0xFFFFFFFF,
            _PG_LOCKS.c.objsubid == 1,
            _PG_LOCKS.c.granted,
        )
    )


class ExclusiveRunLock:
    """Held from `acquire` until `release` (or the death of the process)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._fd: int | None = None
        self._lost = False
        # The file step commits from several threads, and each commit checks the lock on its one
        # connection: unguarded, two checks interleave on it and one commits the other's transaction.
        self._guard = threading.RLock()

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
        if not event.contains(self._engine, "commit", self._before_commit):
            event.listen(self._engine, "commit", self._before_commit)
        self._connection = connection
        self._lost = False

    def _before_commit(self, connection: Connection) -> None:
        # Raising here rolls the batch back: no write commits unless the lock was held just before.
        if is_write_transaction(connection):
            self.ensure_held()

    def ensure_held(self) -> None:
        """Confirm the lock is still this run's, taking it again if its session ended; raises RunLockLost.

        Once lost it stays lost (until `release`): another run may be deleting, so none of this run's
        steps may write again, even after that run has finished.

        A run that takes the lock in the moment between this check and the commit that follows it can
        overlap with that one commit; batches are idempotent, so that costs nothing but a retry.
        """
        with self._guard:
            self._ensure_held()

    def _ensure_held(self) -> None:
        if self._lost:
            raise RunLockLost(LOST_MESSAGE)
        connection = self._connection
        if connection is None:
            return  # a flock, or nothing held: neither can be lost under a live process
        try:
            held = bool(connection.execute(select_run_lock_held()).scalar())
            connection.commit()
        except DBAPIError:
            held = False
        if held:
            return
        self._connection = None
        connection.invalidate()
        try:
            self._acquire_advisory()
        except RunLockBusy:
            # The commit listener stays: every later write of this run rolls back, not just this one.
            self._lost = True
            _LOST.add(self._engine)
            raise RunLockLost(LOST_MESSAGE) from None

    def _stop_guarding(self) -> None:
        if event.contains(self._engine, "commit", self._before_commit):
            event.remove(self._engine, "commit", self._before_commit)

    def _acquire_file(self) -> None:
        database = self._engine.url.database
        if not database or database == ":memory:":
            return  # a private in-memory database cannot be shared with another run
        # Named after the file itself: reached through a symlink or another spelling, it is the same lock.
        fd = os.open(f"{os.path.realpath(database)}.retention-lock", os.O_RDWR | os.O_CREAT, 0o644)
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
        with self._guard:
            self._release()

    def _release(self) -> None:
        self._stop_guarding()
        self._lost = False
        _LOST.discard(self._engine)
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
