"""Engines and transactions tuned so the camera system keeps writing while the pipeline deletes."""

from __future__ import annotations

import os
import sqlite3
import string
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

SQLITE_BUSY_TIMEOUT_S = 10
# A batch waiting longer than this for a row lock gives up and is retried later, so the pipeline
# never becomes the head of a lock queue that stalls the camera system's writers.
PG_LOCK_TIMEOUT_MS = 500
PG_STATEMENT_TIMEOUT_MS = 60_000

# SQLSTATEs after which repeating the whole batch is safe and likely to succeed.
_TRANSIENT_PG_CODES = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"}
_TRANSIENT_SQLITE_TEXT = ("database is locked", "database table is locked", "busy")
# Set on connections that delete or queue: SQLite begins them IMMEDIATE, the run lock checks itself first.
WRITE_OPTION = "retention_write"
# SQLite folds only the 26 ASCII letters when it compares names (sqlite3StrICmp): str.lower() would also
# fold `É` to `é` and make the two tables `Événements` and `événements` one.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def sqlite_name(name: str) -> str:
    """A table or column name as SQLite tells names apart, quoted or not: `Audit` is `audit`, but
    `Événements` is not `événements`. Whatever folds a SQLite name folds it here (columns are matched as
    the table spells them, which SQLite resolves too)."""
    return name.translate(_ASCII_LOWER)


def named(engine: Engine, table: str) -> str:
    """How the database tells table names apart: SQLite ignores the case of ASCII letters only, quoted or
    not (`crops` is the table created as `Crops`, `Événements` is not `événements`); PostgreSQL compares
    the names as written, as our statements quote them."""
    return sqlite_name(table) if engine.dialect.name == "sqlite" else table


def table_names(engine: Engine, names: list[str]) -> dict[str, str]:
    """`named` spelling -> the table's name as the database lists it."""
    return {named(engine, name): name for name in names}


class DatabaseMissing(ValueError):
    """DATABASE_URL names a SQLite file that does not exist (the camera system creates its database)."""


def make_engine(url: str, read_only: bool = False, create: bool = True) -> Engine:
    """An engine for the camera database with the pipeline's connection settings (`read_only`: one that
    cannot change the database in any way, for diagnostics; `create` False: a missing SQLite file is
    DatabaseMissing, not a new empty database and its folders, as the pipeline's own runs want)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if read_only:
            return _sqlite_read_only_engine(url)
        database = parsed.database or ""
        if not create and database not in ("", ":memory:") and not os.path.isfile(database):
            raise DatabaseMissing(
                f"the camera database {os.path.abspath(database)} does not exist: check DATABASE_URL"
                " (retention never creates the camera system's database). Nothing was changed."
            )
        return _sqlite_engine(url)
    read_only_option = " -c default_transaction_read_only=on" if read_only else ""
    # Compare TIMESTAMP WITHOUT TIME ZONE columns as UTC, whatever the server's default.
    # jit=off: the batch statements are short; JIT compiling them costs more than it saves.
    # Server-side keepalives: when the run's host dies or its network is cut, the server ends the
    # session, and with it the run lock, within about a minute instead of the kernel's two hours.
    ours = (
        f"-c timezone=UTC -c lock_timeout={PG_LOCK_TIMEOUT_MS}"
        f" -c statement_timeout={PG_STATEMENT_TIMEOUT_MS} -c jit=off{read_only_option}"
        " -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
    )
    engine = create_engine(
        url,
        pool_pre_ping=True,
        # Every check (the keep rule's look-ups, a partition's second check) relies on each statement seeing
        # what was committed when it started, whatever default_transaction_isolation the server sets.
        isolation_level="READ COMMITTED",
        connect_args={"application_name": "retention_pipeline"},
    )

    @event.listens_for(engine, "do_connect")
    def _with_our_options(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        # Added to the URL's own ?options= (a search_path naming the camera schema), which an `options`
        # connect argument would replace; after them, so where both set one (timezone, the timeouts)
        # ours win (docs/design.md).
        params["options"] = " ".join(filter(None, (params.get("options"), ours)))

    return engine


def _sqlite_read_only_engine(url: str) -> Engine:
    # Opened read-only by SQLite itself: no journal mode switched for good, no file or folder created
    # where the database is missing (opening it fails instead).
    database = make_url(url).database or ""
    if database in ("", ":memory:"):
        return create_engine(url)
    # Opened by sqlite3 itself, so no URL parser decodes the quoted path ('#', '?' in a folder name).
    location = f"file:{quote(os.path.abspath(database))}?mode=ro"

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(location, uri=True)
        connection.text_factory = read_text
        return connection

    return create_engine("sqlite://", creator=connect)


def read_text(data: bytes) -> str:
    """SQLite text as the pipeline's connections read it: UTF-8, each byte that is not UTF-8 turned into a
    lone surrogate (`surrogateescape`), as os.fsdecode does with a file name."""
    # SQLite stores whatever bytes a writer gives it. One path that was not UTF-8 (from a writer that is not
    # Python) made every read of it fail, and with it every later file step; read this way it is the str
    # that os.lstat and os.unlink turn back into the same bytes.
    return data.decode("utf-8", "surrogateescape")


def is_utf8(text: str) -> bool:
    """False for a str holding a byte that was not UTF-8 (see `read_text`), which no driver can bind as
    text: SQLite takes it as `text_bytes` instead, PostgreSQL cannot store it at all."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def text_bytes(text: str) -> bytes:
    """The bytes `read_text` read `text` from."""
    return text.encode("utf-8", "surrogateescape")


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so `begin` below decides DEFERRED or IMMEDIATE.
        dbapi_connection.isolation_level = None
        dbapi_connection.text_factory = read_text
        cursor = dbapi_connection.cursor()
        # Cascades (alerts, event_detections) only happen with foreign keys on, per connection.
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets the camera system read and write while a batch is open.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A write batch takes the write lock when it starts; a deferred transaction that reads first
        # and writes later can fail with SQLITE_BUSY when another writer committed in between.
        if is_write_transaction(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def is_write_transaction(connection: Connection) -> bool:
    """True on a connection opened by `write_transaction`."""
    return bool(connection.get_execution_options().get(WRITE_OPTION))


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One short transaction that commits on success and rolls back on any error."""
    with engine.connect() as connection:
        connection = connection.execution_options(**{WRITE_OPTION: True})
        try:
            with connection.begin():
                yield connection
        except DBAPIError:
            # A statement cut off by its timeout, or a failed COMMIT, can leave the server's transaction
            # aborted while the driver believes it ended (psycopg2 marks a connection idle after any
            # failed COMMIT, and its rollback then sends nothing). Such a connection must never serve
            # another batch: closing it costs one reconnect, reusing it fails the run.
            connection.invalidate()
            raise


def is_query_cancelled(error: BaseException) -> bool:
    """True when PostgreSQL cancelled the statement (query_canceled: statement_timeout or a cancel)."""
    return getattr(getattr(error, "orig", None), "pgcode", None) == "57014"


def is_lock_timeout(error: BaseException) -> bool:
    """True when PostgreSQL ended a wait for a lock at lock_timeout (lock_not_available)."""
    return getattr(getattr(error, "orig", None), "pgcode", None) == "55P03"


def is_transient(error: BaseException) -> bool:
    """True for lock timeouts, deadlocks, busy SQLite files and dropped connections."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    code = getattr(error.orig, "pgcode", None)
    if code is not None:
        return code in _TRANSIENT_PG_CODES or code.startswith("08")
    message = str(error.orig).lower()
    if any(text in message for text in _TRANSIENT_SQLITE_TEXT):
        return True
    # psycopg2 reports a server that went away without a SQLSTATE.
    return "server closed the connection" in message or "connection already closed" in message
