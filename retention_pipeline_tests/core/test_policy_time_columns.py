"""A policy rule's time column as the database declares it: on SQLite a declaration that holds the camera
system's text spellings is served, a numeric one too while its values read as times since 1970 (unix seconds,
Julian days), refused when its smallest does not (a priority 0-4 reads as a Julian day thousands of years
ago, so every row would expire); PostgreSQL needs a timestamp type."""

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, column, insert, table, text
from sqlalchemy.types import UserDefinedType

from retention_pipeline.core.cleanup import SchemaError, prepare_database
from retention_pipeline.core.doctor import diagnose
from retention_pipeline.core.policy import read_policy
from retention_pipeline_tests.factories import CameraWorld

POLICY = "tables:\n  - table: audit_logs\n    time_column: created_at\n    retention_days: 30\n"
# What SQLAlchemy's DateTime writes on SQLite, and Python's isoformat(): the camera system's spellings.
SPELLINGS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S+00:00")
ON_POSTGRESQL = {"TIMESTAMP", "timestamptz", "TIMESTAMP WITH TIME ZONE"}


class Declared(UserDefinedType[Any]):
    """A column type spelled exactly as given in CREATE TABLE."""

    cache_ok = True

    def __init__(self, spelled: str) -> None:
        self.spelled = spelled

    def get_col_spec(self, **_kw: Any) -> str:
        return self.spelled


def _audit_logs(world: CameraWorld, tmp_path: Path, declared: str) -> None:
    Table(
        "audit_logs",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("created_at", Declared(declared)),
    ).create(world.engine)
    (tmp_path / "policy.yaml").write_text(POLICY)
    world.policy = read_policy(tmp_path / "policy.yaml")


def _write(world: CameraWorld, times: list[datetime]) -> list[int]:
    """Rows at `times`, spelled on SQLite as the camera system writes them (UTC), as instants elsewhere."""
    raw = table("audit_logs", column("id"), column("created_at"))
    sqlite = world.engine.dialect.name == "sqlite"
    with world.engine.begin() as conn:
        return [
            conn.execute(
                insert(raw)
                .values(created_at=at.strftime(SPELLINGS[i % 2]) if sqlite else at)
                .returning(raw.c.id)
            ).scalar_one()
            for i, at in enumerate(times)
        ]


@pytest.mark.parametrize(
    "declared",
    ["DATETIME", "TIMESTAMP", "timestamptz", "TIMESTAMP WITH TIME ZONE", "TEXT", "VARCHAR(40)", "DATE", ""],
)
def test_a_policy_time_column_the_engine_can_read_is_served(
    world: CameraWorld, tmp_path: Path, declared: str
):
    if world.engine.dialect.name == "postgresql" and declared not in ON_POSTGRESQL:
        pytest.skip(f"PostgreSQL has no type {declared!r} that holds a time (TEXT: refused below)")
    _audit_logs(world, tmp_path, declared)
    old = _write(world, [world.old(1), world.old(40), world.cutoff - timedelta(seconds=1)])
    young = _write(world, [world.cutoff, world.recent(1), world.recent(20)])

    preview = world.run(dry_run=True)
    stats = world.run()

    assert world.ids(Table("audit_logs", MetaData(), Column("id", Integer))) == set(young)
    assert (
        preview.rows_deleted_by_table["audit_logs"] == stats.rows_deleted_by_table["audit_logs"] == len(old)
    )


@pytest.mark.parametrize(
    ("declared", "sqlite_accepts"),
    [
        ("TEXT", True),
        ("BLOB", False),
        ("BOOLEAN", False),
        ("TIME", False),
        ("JSON", False),
        ("INTEGER", True),
        ("BIGINT", True),
        ("REAL", True),
        ("DOUBLE PRECISION", True),
        ("NUMERIC", True),
        ("DECIMAL(10, 2)", True),
    ],
)
def test_a_time_column_that_holds_no_time_is_refused_saying_what_is_accepted(
    world: CameraWorld, tmp_path: Path, declared: str, sqlite_accepts: bool
):
    sqlite = world.engine.dialect.name == "sqlite"
    if sqlite and sqlite_accepts:
        pytest.skip("served on SQLite: above")
    _audit_logs(world, tmp_path, "BYTEA" if declared == "BLOB" and not sqlite else declared)
    expected = (
        "on SQLite declare it TEXT, VARCHAR, CHAR, CLOB, DATE, DATETIME" if sqlite else "not a timestamp"
    )

    with pytest.raises(SchemaError, match=rf"\(audit_logs\): time_column 'created_at' .*{expected}"):
        prepare_database(world.engine, world.policy)


@pytest.mark.parametrize("declared", ["INTEGER", "REAL", "NUMERIC"])
def test_a_sqlite_policy_time_column_of_unix_seconds_is_served(
    world: CameraWorld, tmp_path: Path, declared: str
):
    if world.engine.dialect.name == "postgresql":
        pytest.skip("PostgreSQL needs a timestamp type: refused above")
    _audit_logs(world, tmp_path, declared)
    raw = table("audit_logs", column("id"), column("created_at"))

    def write(times: list[datetime]) -> list[int]:
        with world.engine.begin() as conn:
            return [
                conn.execute(
                    insert(raw).values(created_at=int(at.timestamp())).returning(raw.c.id)
                ).scalar_one()
                for at in times
            ]

    old = write([world.old(1), world.old(40), world.cutoff - timedelta(seconds=1)])
    young = write([world.cutoff, world.recent(1), world.recent(20)])

    stats = world.run()

    assert world.ids(Table("audit_logs", MetaData(), Column("id", Integer))) == set(young)
    assert stats.rows_deleted_by_table["audit_logs"] == len(old)


def _audit_notes(world: CameraWorld, tmp_path: Path, priority: str) -> set[int]:
    """Notes written today, with a priority 0-4 (declared `priority`), and a policy whose time_column
    names the priority by mistake; their ids."""
    stamp = "TIMESTAMP WITH TIME ZONE" if world.engine.dialect.name == "postgresql" else "DATETIME"
    with world.engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE audit_notes (id INTEGER PRIMARY KEY, created_at {stamp}, priority {priority})"
            )
        )
        for i in range(10):
            conn.execute(
                text("INSERT INTO audit_notes (id, created_at, priority) VALUES (:i, :at, :p)"),
                {"i": i + 1, "at": world.recent(1), "p": i % 5},
            )
    policy = "tables:\n  - table: audit_notes\n    time_column: priority\n    retention_days: 30\n"
    (tmp_path / "policy.yaml").write_text(policy)
    world.policy = read_policy(tmp_path / "policy.yaml")
    return set(range(1, 11))


def _notes_left(world: CameraWorld) -> set[int]:
    return world.ids(Table("audit_notes", MetaData(), Column("id", Integer)))


def test_a_rule_on_a_numeric_column_is_refused_by_doctor_and_the_run_and_nothing_is_deleted(
    world: CameraWorld, tmp_path: Path
):
    notes = _audit_notes(world, tmp_path, "INTEGER")

    report = diagnose(world.engine, world.plan(dry_run=True))
    with pytest.raises(SchemaError, match=r"\(audit_notes\): time_column 'priority' is (declared )?INTEGER"):
        world.run()

    assert not report.ok
    assert any("time_column 'priority' is" in problem for problem in report.blocking)
    assert _notes_left(world) == notes


@pytest.mark.parametrize("sentinel", [-9223372036854775808, -1e12, -1e300])
def test_a_sentinel_too_far_back_to_read_as_a_date_does_not_hide_the_small_numbers_above_it(
    world: CameraWorld, tmp_path: Path, sentinel: float
):
    if world.engine.dialect.name == "postgresql":
        pytest.skip("a PostgreSQL number column is refused by its type, whatever it holds")
    notes = _audit_notes(world, tmp_path, "INTEGER")
    with world.engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_notes (id, priority) VALUES (11, :p)"), {"p": sentinel})

    with pytest.raises(SchemaError, match=r"time_column 'priority' is declared INTEGER and its smallest"):
        world.run()

    assert _notes_left(world) == notes | {11}


@pytest.mark.parametrize("priority", ["TEXT", ""])
def test_doctor_blocks_a_sqlite_policy_column_whose_values_read_as_times_before_1970(
    world: CameraWorld, tmp_path: Path, priority: str
):
    if world.engine.dialect.name == "postgresql":
        pytest.skip("a PostgreSQL timestamp column holds instants only; its numeric columns are refused")
    notes = _audit_notes(world, tmp_path, priority)

    report = diagnose(world.engine, world.plan(dry_run=True))

    assert [p for p in report.blocking if "before 1970" in p] == [
        "10 rows of audit_notes hold a priority that reads as a time before 1970 (a number such as a"
        " priority or a score reads as a Julian day: 3 is in 4713 BC), which a run takes for long expired and"
        " deletes. If priority is not the rows' time, name the column that is in RETENTION_POLICY_FILE's"
        " time_column; if it is, rewrite those values in UTC ('2026-05-17 03:00:00')"
    ]
    assert _notes_left(world) == notes
