"""`doctor`: what a cleanup run will meet on this camera database, found before anything is deleted.

Reads the schema and the storage roots and counts what has expired; it never changes anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine, make_url

from . import doctor_checks as checks
from .cleanup import json_functions_problem, schema_problems
from .db import named, table_names
from .files import StorageRoots
from .index_advice import index_kinds
from .plan import CleanupPlan
from .policy import policy_problems
from .privileges import privilege_problems
from .purge import partition_catalog, partition_ddl, partitions
from .purge.offline_roots import OfflineRoots
from .queries import expiring
from .references import (
    Reference,
    blocking_references_message,
    keeping_columns,
    references_to_parents,
    with_cascades,
)
from .schema import retention_file_queue


@dataclass(frozen=True)
class ColumnIndex:
    """Whether a column leads an index, and of which kinds (btree, brin, ...)."""

    table: str
    column: str
    kinds: tuple[str, ...]

    @property
    def indexed(self) -> bool:
        return bool(self.kinds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "indexed": self.indexed,
            "kinds": list(self.kinds),
        }


@dataclass(frozen=True)
class RootCheck:
    """A storage root: present, and writable (files are unlinked from its directories)."""

    path: str
    exists: bool
    writable: bool

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "exists": self.exists, "writable": self.writable}


@dataclass
class DoctorReport:
    """Everything doctor found; `blocking` holds what would make a run fail."""

    database: str
    dialect: str
    blocking: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    time_columns: list[ColumnIndex] = field(default_factory=list)
    path_columns: list[ColumnIndex] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    roots: list[RootCheck] = field(default_factory=list)
    # Every rule a run applies: table, column, days, where the days come from, and today's cutoff.
    rules: list[dict[str, Any]] = field(default_factory=list)
    expired_rows: dict[str, int] = field(default_factory=dict)
    expired_files: int | None = None
    # Why expired_files was not counted (a read-only standby), or None.
    expired_files_not_counted: str | None = None
    # Tables whose wholly expired partitions a run drops whole: table -> how many it would drop now.
    partitions_to_drop: dict[str, int] = field(default_factory=dict)
    # Indexes worth adding, as the statements that add them, in the order to run them (doctor never does).
    advice: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.blocking

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "database": self.database,
            "blocking": self.blocking,
            "warnings": self.warnings,
            "time_columns": [c.as_dict() for c in self.time_columns],
            "path_columns": [c.as_dict() for c in self.path_columns],
            "references": [
                {**r.as_dict(), "slows_deletes": r.slows_deletes, "blocks_deletes": r.blocks_deletes}
                for r in self.references
            ],
            "roots": [r.as_dict() for r in self.roots],
            "rules": self.rules,
            "expired_rows": self.expired_rows,
            "expired_files": self.expired_files,
            "expired_files_not_counted": self.expired_files_not_counted,
            "partitions_to_drop": self.partitions_to_drop,
            "advice": self.advice,
        }


def _columns(
    engine: Engine, inspector: Any, pairs: list[tuple[str, str]], listed: dict[str, str]
) -> list[ColumnIndex]:
    """Each pair whose table the database has, under the name the database lists it by: on SQLite the
    policy's `crops` is the table created `Crops`, and the CREATE INDEX advice must name it as created."""
    found = []
    for table, column in pairs:
        if (spelled := listed.get(named(engine, table))) is not None:
            kinds = index_kinds(inspector, spelled).get(column, set())
            found.append(ColumnIndex(spelled, column, tuple(sorted(kinds))))
    return list(dict.fromkeys(found))  # once each: two spellings of one table name one column once


def _root(path: str) -> RootCheck:
    exists = os.path.isdir(path)
    return RootCheck(path, exists, exists and os.access(path, os.W_OK | os.X_OK))


def _expired_rows(engine: Engine, plan: CleanupPlan) -> dict[str, int]:
    expiry = with_cascades(engine, plan.expiry)
    counts = {
        name: checks.count(engine, expiring.count_expired(expiry, name)) for name in plan.registry.names
    }
    counts["alerts"] = checks.count(engine, expiring.count_alerts_of_expired_events(expiry))
    return counts


def diagnose(engine: Engine, plan: CleanupPlan, database_url: str | None = None) -> DoctorReport:
    """Read the database and the storage roots; change nothing (`database_url`: the configured URL to
    show, where the engine's own says less, as a read-only SQLite engine's does)."""
    shown = make_url(database_url) if database_url else engine.url
    report = DoctorReport(shown.render_as_string(hide_password=True), engine.dialect.name)
    registry = plan.registry
    problems = policy_problems(engine, plan.policy) or schema_problems(engine, registry)
    report.blocking += problems
    report.rules = checks.rules(plan)
    inspector = inspect(engine)
    listed = table_names(engine, inspector.get_table_names())
    tables = set(listed.values())
    queued = retention_file_queue.name in tables  # created by the first run, never by doctor
    lacking = privilege_problems(engine, registry, tables, plan.delete_images)
    report.blocking += lacking
    # The run refuses to start without them (its file step could not tell a shared file from an orphan).
    no_json = json_functions_problem(engine)
    report.blocking += [no_json] if no_json else []
    # Once each: two rules on one column read it through the same index.
    time_columns = list(dict.fromkeys((e.name, r.column) for e in registry.tables for r in e.rules))
    report.time_columns = _columns(engine, inspector, time_columns, listed)
    # Columns whose rows keep their files though retention never deletes them are read by the check too.
    path_columns = [(e.name, f.column) for e in registry.tables for f in e.files] + keeping_columns(engine)
    report.path_columns = _columns(engine, inspector, path_columns, listed)
    report.references = references_to_parents(engine, registry.names)
    if blocked := blocking_references_message(report.references):
        report.blocking.append(blocked)
    report.warnings += checks.unfollowed_cascades(report.references, plan.expiry)
    if not problems:
        report.warnings += checks.partitions_not_owned(engine, plan)
    unindexed = [(c.table, c.column) for c in report.time_columns if not c.indexed]
    report.advice = checks.advice(engine, report.references, unindexed)
    report.roots = [_root(str(root)) for root in _storage_roots(plan)]
    report.warnings += _root_warnings(engine, plan, report.roots, queued and not lacking)
    if not problems and not lacking:  # counting reads what the role may not read, and needs scratch
        report.expired_rows = _expired_rows(engine, plan)
        if engine.dialect.name == "sqlite":  # a PostgreSQL timestamp column holds instants only
            report.warnings += checks.unreadable_times(engine, plan)
            # Blocking, though the run refuses it only in a column declared numeric (in a text one, finding
            # them would cost every run a read of the column): such a run deletes rows it should keep,
            # which no later run can undo.
            report.blocking += checks.times_before_1970(engine, plan)
        if not no_json:  # the preview's reference check needs them
            try:
                report.expired_files = checks.files_a_run_deletes(engine, plan, queued)
            except checks.FilesNotCounted as exc:  # not blocking: a run on the primary is not affected
                report.expired_files_not_counted = str(exc)
        report.partitions_to_drop = {
            name: partitions.partitions_to_drop(engine, plan.expiry, name)
            for name in registry.names
            if partition_catalog.partitioned(engine, plan.expiry, name) is not None
        }
        report.warnings += [
            f"{detached} is a partition of {name} a killed run detached and did not drop: the next run"
            " drops it (unless a retained event links one of its rows: then attach it again by hand)"
            for name in report.partitions_to_drop
            for detached in partition_ddl.left_behind(engine, name, registry.names)
        ]
    return report


def _root_warnings(engine: Engine, plan: CleanupPlan, checks: list[RootCheck], queued: bool) -> list[str]:
    """A missing or unwritable root; an empty one while the queue holds files under it (unmounted?)."""
    offline = OfflineRoots.look(StorageRoots.from_dirs(plan.media_root, plan.storage_dirs))
    waiting: dict[str, int] = {}
    if offline.offline and queued:  # the queue is read only when some root looks unmounted
        resolved_dirs: dict[str, str] = {}
        with engine.connect() as conn:
            for path in conn.execute(select(retention_file_queue.c.path)).scalars():
                if (root := offline.holding(path, resolved_dirs)) is not None:
                    waiting[root] = waiting.get(root, 0) + 1
    warnings = []
    for check, configured in zip(checks, offline.roots.walk_roots, strict=True):
        stay = f"runs keep the files queued under it ({waiting.get(configured, 0)} now) until it is back"
        if not check.exists:
            warnings.append(f"storage root {check.path} does not exist: is its volume mounted? {stay}")
            continue
        if configured in waiting:
            warnings.append(f"storage root {check.path} is empty: is its volume mounted? {stay}")
        if not check.writable:
            warnings.append(f"storage root {check.path} is not writable: its files cannot be deleted")
    return warnings


def _storage_roots(plan: CleanupPlan) -> list[str]:
    return [os.path.normpath(os.path.join(plan.media_root, d)) for d in plan.storage_dirs]
