"""Policy table and column names told apart as the database tells them apart: SQLite ignores the case of
ASCII letters only (`Audit` is `audit`, `Événements` is not `événements`); PostgreSQL keeps quoted names
as created. The policy is read as the settings read it (folded on SQLite)."""

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert, select

from retention_pipeline.core.cleanup import SchemaError
from retention_pipeline.core.db import sqlite_name
from retention_pipeline.core.policy import read_policy
from retention_pipeline.core.references import references_to_parents
from retention_pipeline.core.schema import events
from retention_pipeline_tests.factories import CameraWorld


def _table(world: CameraWorld, name: str, *times: str) -> Table:
    table = Table(
        name,
        MetaData(),
        Column("id", Integer, primary_key=True),
        *(Column(time, DateTime(timezone=True), nullable=False) for time in times),
    )
    table.create(world.engine)
    at = {time: world.now - timedelta(days=30) for time in times}  # a month old in every time column
    with world.engine.begin() as conn:
        conn.execute(insert(table), [{"id": 1, **at}])
    return table


def _policy(world: CameraWorld, tmp_path: Path, *rules: tuple[str, str, int]) -> None:
    path = tmp_path / "policy.yaml"
    text = "tables:\n" + "".join(
        f'  - table: "{table}"\n    time_column: "{column}"\n    retention_days: {days}\n'
        for table, column, days in rules
    )
    path.write_text(text, encoding="utf-8")
    world.policy = read_policy(path, ignore_case=world.engine.dialect.name == "sqlite")


def _left(world: CameraWorld, *tables: Table) -> dict[str, list[int]]:
    with world.engine.connect() as conn:
        return {table.name: list(conn.scalars(select(table.c.id))) for table in tables}


def test_sqlite_names_fold_ascii_letters_only():
    assert sqlite_name("AuditLogs") == "auditlogs"
    assert sqlite_name("Événements") == "Événements"  # SQLite: another table than `événements`
    assert sqlite_name("ÉVÉNEMENTS") == "ÉvÉnements"


def test_tables_whose_names_differ_in_an_accented_letters_case_keep_their_own_rules(
    world: CameraWorld, tmp_path: Path
):
    # Both engines hold two tables here (SQLite folds É to é no more than PostgreSQL does).
    upper = _table(world, "Événements", "created_at", "updated_at")
    lower = _table(world, "événements", "created_at", "updated_at")
    _policy(world, tmp_path, ("Événements", "created_at", 90), ("événements", "updated_at", 7))

    stats = world.run()

    assert _left(world, upper, lower) == {"Événements": [1], "événements": []}
    assert stats.rows_deleted_by_table.get("événements") == 1
    assert stats.rows_deleted_by_table.get("Événements", 0) == 0


def test_a_policy_table_spelled_with_another_case_of_an_accented_letter_is_refused_before_any_delete(
    world: CameraWorld, tmp_path: Path
):
    # SQLite itself answers "no such table: Événements" for the table created as `événements`.
    table = _table(world, "événements", "created_at")
    expired_event = world.event(world.old(), clip=False)
    _policy(world, tmp_path, ("Événements", "created_at", 7))

    with pytest.raises(SchemaError) as refused:
        world.run()

    assert "the database has no table 'Événements' (it spells it 'événements'" in str(refused.value)
    assert "Nothing was deleted" in str(refused.value)
    assert _left(world, table) == {"événements": [1]}
    assert expired_event in world.ids(events)


@pytest.mark.parametrize("declared", ["CRÉÉ_LE", "Créé_Le"])
def test_a_time_column_spelled_in_another_case_is_refused_naming_the_tables_spelling(
    world: CameraWorld, tmp_path: Path, declared: str
):
    # `Créé_Le` is a spelling SQLite would read as `créé_le`; the pipeline matches columns as the table
    # spells them everywhere (index look-ups, declared types), so it asks for that spelling.
    table = _table(world, "audit", "créé_le")
    _policy(world, tmp_path, ("audit", declared, 7))

    with pytest.raises(SchemaError) as refused:
        world.run()

    assert f"the table has no column {declared!r} (it spells it 'créé_le'" in str(refused.value)
    assert _left(world, table) == {"audit": [1]}


def test_an_ascii_case_difference_still_names_one_table_on_sqlite_only(world: CameraWorld, tmp_path: Path):
    table = _table(world, "Audit", "created_at")
    _policy(world, tmp_path, ("audit", "created_at", 7))
    if world.engine.dialect.name == "postgresql":
        # PostgreSQL keeps a quoted name's case: `audit` is another table, which this database lacks.
        with pytest.raises(SchemaError, match="no table 'audit' \\(it spells it 'Audit'"):
            world.run()
        return
    world.run()
    assert _left(world, table) == {"Audit": []}


def test_a_foreign_key_names_its_parent_as_sqlite_resolves_the_name(world: CameraWorld):
    if world.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's folding of a REFERENCES name; PostgreSQL keeps a quoted name as written")
    _table(world, "événements", "created_at")
    _table(world, "Événements", "created_at")
    with world.engine.begin() as conn:
        conn.exec_driver_sql(
            'CREATE TABLE notes (id INTEGER PRIMARY KEY, ev INTEGER REFERENCES "Événements" (id)'
            " ON DELETE CASCADE)"
        )
        # `éVéNEMENTS` is `événements` to SQLite: only its ASCII letters fold.
        conn.exec_driver_sql(
            'CREATE TABLE "Notes2" (id INTEGER PRIMARY KEY, ev INTEGER REFERENCES "éVéNEMENTS" (id))'
        )

    def found(parent: str) -> list[tuple[str, str, str]]:
        return [(r.name, r.parent, r.on_delete) for r in references_to_parents(world.engine, [parent])]

    assert found("événements") == [("Notes2", "événements", "NO ACTION")]
    assert found("Événements") == [("notes", "Événements", "CASCADE")]
