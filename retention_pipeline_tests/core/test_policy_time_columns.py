"""A policy rule's time column as the database declares it: on SQLite any declaration that can hold a time
the pipeline reads (the camera system's text spellings) is served; PostgreSQL needs a timestamp type."""

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, column, insert, table
from sqlalchemy.types import UserDefinedType

from retention_pipeline.core.cleanup import SchemaError, prepare_database
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
    "declared", ["DATETIME", "TIMESTAMP", "timestamptz", "TIMESTAMP WITH TIME ZONE", "TEXT", "NUMERIC", ""]
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
    ("declared", "sqlite_accepts"), [("TEXT", True), ("BLOB", False), ("BOOLEAN", False)]
)
def test_a_time_column_that_holds_no_time_is_refused_saying_what_is_accepted(
    world: CameraWorld, tmp_path: Path, declared: str, sqlite_accepts: bool
):
    sqlite = world.engine.dialect.name == "sqlite"
    if sqlite and sqlite_accepts:
        pytest.skip("served on SQLite: above")
    _audit_logs(world, tmp_path, "BYTEA" if declared == "BLOB" and not sqlite else declared)
    expected = "on SQLite declare it TEXT, DATETIME, TIMESTAMP, timestamptz" if sqlite else "not a timestamp"

    with pytest.raises(SchemaError, match=rf"\(audit_logs\): time_column 'created_at' .*{expected}"):
        prepare_database(world.engine, world.policy)
