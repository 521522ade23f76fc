"""PostgreSQL: the rights of DATABASE_URL's role that a run uses, each derived from what the run touches,
and the GRANT statements that give the missing ones. doctor reports them; a real run refuses to start
without them, before its first delete (a right found missing half-way would leave rows deleted and their
files stuck queued, every later file step failing the same way)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, null, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement

from .purge.loop import locks_its_rows
from .references import keeping_columns, with_cascades
from .schema import retention_file_queue
from .tables import Expiry, Registry

_QUEUE = retention_file_queue.name


@dataclass(frozen=True)
class Need:
    """One right on one table (on one of its columns: that column's or the table's right serves)."""

    table: str
    privilege: str
    column: str | None = None
    # SELECT ... FOR UPDATE takes its row locks with UPDATE on any one column (GRANT UPDATE (id) ON ...).
    any_column: bool = False


def needs(engine: Engine, registry: Registry, tables: set[str], delete_images: bool = True) -> list[Need]:
    """What a run does to the tables this database has: it reads and deletes the retention tables, locks
    the batches of those with files or children (FOR UPDATE: UPDATE), reads and deletes their children
    (alerts, event_detections) itself, reads the columns whose rows keep their files, and fills and drains
    its queue."""
    # The cascades read from the database, as the purge reads them: a policy table emptied by one makes
    # its parent's batches queue files, so lock. Images count as the run's DELETE_IMAGES says, as the purge
    # decides.
    expiry = with_cascades(engine, Expiry(registry, ()))
    found: list[Need] = []
    for entry in registry.tables:
        if entry.name not in tables:
            continue
        found += [Need(entry.name, "SELECT")]
        if locks_its_rows(expiry, entry.name, delete_images):
            found += [Need(entry.name, "UPDATE", any_column=True)]
        found += [Need(entry.name, "DELETE")]
        found += [Need(c.table, p) for c in entry.children if c.table in tables for p in ("SELECT", "DELETE")]
    found += [Need(table, "SELECT", column) for table, column in keeping_columns(engine)]
    if _QUEUE in tables:
        found += [Need(_QUEUE, p) for p in ("SELECT", "INSERT", "UPDATE", "DELETE")]
    return list(dict.fromkeys(found))


def _granted(need: Need) -> ColumnElement[Any]:
    table = func.quote_ident(need.table)  # resolved through the search path, as the run's statements are
    if need.column is not None:
        return func.has_column_privilege(table, need.column, need.privilege)
    if need.any_column:
        return func.has_any_column_privilege(table, need.privilege)
    return func.has_table_privilege(table, need.privilege)


def privilege_problems(
    engine: Engine, registry: Registry, tables: set[str], delete_images: bool = True
) -> list[str]:
    """PostgreSQL: what the role of DATABASE_URL may not do that a run does, as the GRANT statements that
    fix it. The role's own rights, whoever owns the tables."""
    if engine.dialect.name != "postgresql":
        return []  # SQLite: whoever may open the file for writing may do all of it
    quote = engine.dialect.identifier_preparer.quote
    needed = needs(engine, registry, tables, delete_images)
    probes = [_granted(n) for n in needed]
    # Where an unqualified CREATE puts the queue: the first existing schema of the search path.
    probes.append(func.has_schema_privilege(func.current_schema(), "CREATE"))
    # NULL (no sequence: not our queue's serial id) counts as granted.
    queued = _QUEUE in tables
    sequence = func.pg_get_serial_sequence(func.quote_ident(_QUEUE), "id")
    probes.append(func.has_sequence_privilege(sequence, "USAGE") if queued else null())
    probes.append(sequence if queued else null())
    # The file step stages the paths it checks in a temporary table.
    probes.append(func.has_database_privilege(func.current_database(), "TEMPORARY"))
    with engine.connect() as conn:
        *granted, may_create, may_number, sequence_name, may_stage = conn.execute(select(*probes)).one()
        user, schema, database = conn.execute(
            select(func.current_user(), func.current_schema(), func.current_database())
        ).one()
    missing: dict[str, list[str]] = {}
    for need, ok in zip(needed, granted, strict=True):
        if not ok and need.privilege not in missing.get(need.table, []):
            missing.setdefault(need.table, []).append(need.privilege)
    problems = [
        f"the database role {user} may not {'/'.join(p)} table {table}, which a run does: run"
        f" GRANT {', '.join(p)} ON {quote(table)} TO {quote(user)}; (or use a role that may in DATABASE_URL)"
        for table, p in missing.items()
    ]
    if may_number is False:
        problems.append(
            f"the database role {user} may not use the id sequence of {_QUEUE}, which each queued file"
            f" takes: run GRANT USAGE ON SEQUENCE {sequence_name} TO {quote(user)};"
        )
    if not may_stage:
        problems.append(
            f"the database role {user} may not create temporary tables, in which the file step checks"
            " which files rows still use: run"
            f" GRANT TEMPORARY ON DATABASE {quote(database)} TO {quote(user)};"
        )
    if not queued and not may_create:
        problems.append(
            f"the database role {user} may not CREATE in schema {schema}, where the first run creates its"
            f" {_QUEUE} table: run GRANT CREATE ON SCHEMA {quote(schema or 'public')} TO {quote(user)};"
            " or create it once with a role that may (then GRANT SELECT, INSERT, UPDATE, DELETE on it,"
            f" and USAGE on its id sequence, to {user})"
        )
    return problems
