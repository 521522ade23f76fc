"""PostgreSQL: purge batches commit without waiting for their WAL to reach the disk, and each purge step
ends with one commit that waits, so a step reports its counts, and the file step unlinks files, only
once every batch before it is on disk.

A batch's COMMIT waited for its WAL flush 179-341 ms while a checkpoint wrote (measured at 1M rows), all
that time holding the batch's row locks against the camera system's writers. With the flush deferred
the server writes it within three times wal_writer_delay (200 ms by default) on its own. A server crash
(or a failover) in that window undoes the last batches, rows and queue entries together, so no file of
theirs is ever unlinked. What it can make untrue is a count: a step that reconnects after such a crash
and finishes still counts the undone batches (their rows wait for the next run, which counts them
again), and the progress lines before the final flush, like a failed step's counts when that flush
cannot reach the server, are not yet durable. SQLite is unchanged.

The flush needs EXECUTE on pg_logical_emit_message (granted to PUBLIC by default, PostgreSQL 9.6+).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, case, func, literal, select
from sqlalchemy.engine import Engine

from ..db import write_transaction

MESSAGE_PREFIX = "retention_pipeline"


def wait_for_flush() -> Select[Any]:
    """PostgreSQL: write one WAL record in this transaction, so its COMMIT waits for the WAL to reach the
    disk, every earlier commit's with it."""
    # A COMMIT waits only for a transaction that has written WAL: one that merely took an id (as
    # pg_current_xact_id() does) commits asynchronously (measured: the flush stayed behind the batches).
    # A transactional message is the smallest such write, open to any role; logical decoding
    # consumers see it under its prefix. A server set to synchronous_commit = off still gets a local
    # flush; stronger settings (remote_apply) are kept.
    setting = func.current_setting("synchronous_commit")
    durable = case((setting == "off", literal("local")), else_=setting)
    return select(
        func.set_config("synchronous_commit", durable, True),
        func.pg_logical_emit_message(True, literal(MESSAGE_PREFIX), literal("purge batches flushed")),
    )


def flush_commits(engine: Engine) -> None:
    """Return once every transaction this process committed is on disk (PostgreSQL; SQLite: at once)."""
    if engine.dialect.name != "postgresql":
        return
    with write_transaction(engine) as conn:
        conn.execute(wait_for_flush())
