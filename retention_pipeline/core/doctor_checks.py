"""The checks `doctor` runs that a report is made of, each reading the database (never changing it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection, Engine

from .files import StorageRoots
from .index_advice import index_statements
from .instants import EPOCH_JULIAN_DAY, sqlite_instant, unreadable
from .plan import CleanupPlan
from .purge import partition_catalog, preview_file_deletions
from .references import Reference, cascading_children
from .tables import OWN, column_of, table_of


def count(engine: Engine, statement: Any) -> int:
    """The one number `statement` selects."""
    with engine.connect() as conn:
        return int(conn.execute(statement).scalar_one())


def unreadable_times(engine: Engine, plan: CleanupPlan) -> list[str]:
    """SQLite: a warning for each rule column holding times that read as no instant, which no run deletes
    (one read of the column each: its whole index, or the table where it has none)."""
    warnings = []
    for entry in plan.registry.tables:
        for name in dict.fromkeys(r.column for r in entry.rules):
            column = column_of(entry, name)
            rows = count(engine, select(func.count()).select_from(table_of(entry)).where(unreadable(column)))
            if rows:
                warnings.append(
                    f"{rows} rows of {entry.name} hold a {name} that reads as no time (neither ISO 8601"
                    f" nor unix seconds: '' for instance): no run deletes them by their {name}, and an event"
                    " kept that way keeps the detections it links. Rewrite them in UTC"
                    " ('2026-05-17 03:00:00'), or as NULL if they mean no time and the column allows it"
                )
    return warnings


def times_before_1970(engine: Engine, plan: CleanupPlan) -> list[str]:
    """SQLite: why a policy rule's column looks like no time column (its values read as times before
    1970, as small numbers do: 3 is a Julian day in 4713 BC), which a run would expire row after row.
    Read exactly (one read of the column), not through the run's text bound, which spares '3' stored as
    text but not 3 or '0'."""
    problems = []
    for entry in plan.registry.tables:
        for name in dict.fromkeys(r.column for r in entry.rules if r.retention == OWN):
            column = column_of(entry, name)
            statement = (
                select(func.count())
                .select_from(table_of(entry))
                .where(sqlite_instant(column) < EPOCH_JULIAN_DAY)
            )
            if rows := count(engine, statement):
                problems.append(
                    f"{rows} rows of {entry.name} hold a {name} that reads as a time before 1970 (a number"
                    f" such as a priority or a score reads as a Julian day: 3 is in 4713 BC), which a run"
                    f" takes for long expired and deletes. If {name} is not the rows' time, name the column"
                    " that is in RETENTION_POLICY_FILE's time_column; if it is, rewrite those values in"
                    " UTC ('2026-05-17 03:00:00')"
                )
    return problems


def rules(plan: CleanupPlan) -> list[dict[str, Any]]:
    """Each rule of the run, with the days it applies and where they come from."""
    cutoffs = iter(plan.expiry.cutoffs)  # in the registry's order, one per rule
    overrides = dict(plan.days_by_table)
    rules = []
    for entry in plan.registry.tables:
        for rule in entry.rules:
            _table, _column, cutoff = next(cutoffs)
            days = rule.days_under(plan.retention_days, plan.log_retention_days)
            source = rule.setting or rule.origin
            if entry.name in overrides:
                days, source = overrides[entry.name], "retention_days_by_table"
            rules.append(
                {
                    "table": entry.name,
                    "column": rule.column,
                    "days": days,
                    "source": source,
                    "cutoff": cutoff.isoformat(),
                }
            )
    return rules


def unfollowed_cascades(references: list[Reference], expiry: Any) -> list[str]:
    """Warnings for a policy table a CASCADE empties from a parent a run purges after it or beside it:
    runs do not follow that cascade."""
    registry, handled = expiry.registry, cascading_children(references, expiry)
    warnings = []
    for r in references:
        if r.on_delete != "CASCADE" or r.home_table not in registry or r in handled:
            continue
        taken = (
            "the rows the cascade removes leave their files on disk (the orphan sweep finds them), and a"
            if registry[r.table].files
            else "a"
        )
        warnings.append(
            f"{r.table} (a policy table) is also emptied by ON DELETE CASCADE from {r.parent}, which a run"
            f" purges after it (or beside it): {taken} dry run counts those rows by {r.table}'s own rule"
            f" only. Reference detections, events or a policy table listed before {r.table}"
        )
    return warnings


def advice(engine: Engine, references: list[Reference], unindexed: list[tuple[str, str]]) -> list[str]:
    """The statements that index each slow reference's column and each (table, column) of `unindexed`,
    each once: a column may be both a time column and a foreign key's."""
    statements = [s for r in references if r.slows_deletes for s in r.index_advice(engine)]
    for table, column in unindexed:
        statements += index_statements(engine, table, column)
    return list(dict.fromkeys(statements))


class FilesNotCounted(Exception):
    """The dry run's file preview cannot run on this server; the message says why."""


# read_only_sql_transaction. A hot standby refuses SET TRANSACTION READ WRITE with feature_not_supported
# ("cannot set transaction read-write mode during recovery"), which many other failures raise too: that
# one counts only from a server in recovery.
_READ_ONLY = "25006"
_IN_RECOVERY_ONLY = "0A000"


def files_a_run_deletes(engine: Engine, plan: CleanupPlan, queued: bool) -> int:
    """The files a dry run would delete now (the dry run's own preview: not a file a surviving row still
    uses, not one already gone), however the run is split; FilesNotCounted where the server allows no
    transaction to write, not even to a temporary table (a hot standby)."""
    roots = StorageRoots.from_dirs(plan.media_root, plan.storage_dirs)
    if engine.dialect.name == "postgresql":
        if _in_recovery(engine):
            raise FilesNotCounted(
                "the server is a read-only standby (in recovery), where the preview cannot create the"
                " temporary table it checks paths in; run doctor against the primary to count them"
            )
        # The preview stages the paths it checks in a temporary table, private to its session and gone
        # with it, which a read-only transaction may not create: its transactions alone may write (the
        # listener is this copy's, not the engine's; both share the pool).
        engine = engine.execution_options()
        event.listen(engine, "begin", _read_write)
    try:
        counts = preview_file_deletions(engine, roots, plan.expiry, plan.delete_images, queued=queued)
    except Exception as exc:
        # Raised through SQLAlchemy (DBAPIError: .orig) or, from the begin listener, by the driver itself.
        code = getattr(getattr(exc, "orig", exc), "pgcode", None)
        if code != _READ_ONLY and not (code == _IN_RECOVERY_ONLY and _in_recovery(engine)):
            raise
        message = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise FilesNotCounted(
            f"the server refused the preview's writable transaction ({message}); run doctor against a"
            " server that accepts writes to count them"
        ) from None
    return counts.thumbnails_deleted + counts.images_deleted + counts.clips_deleted


def _in_recovery(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(select(func.pg_is_in_recovery())).scalar_one())


def _read_write(conn: Connection) -> None:
    # On the driver's own cursor: a streaming connection would wrap the statement in a server-side one.
    cursor = conn.connection.cursor()
    cursor.execute("SET TRANSACTION READ WRITE")
    cursor.close()


def partitions_not_owned(engine: Engine, plan: CleanupPlan) -> list[str]:
    """PostgreSQL: a warning for each partitioned retention table whose expired partitions a run would drop
    whole but may not, not owning it (no GRANT gives DETACH or DROP): the run deletes its rows in batches."""
    warnings = []
    for name in plan.registry.names:
        if partition_catalog.partitioned(engine, plan.expiry, name, owned_only=False) is None:
            continue
        lacking = partition_catalog.not_owned(engine, name)
        if lacking:
            warnings.append(_not_owned_warning(engine, name, lacking))
    return warnings


def _not_owned_warning(engine: Engine, table: str, lacking: list[tuple[str, str]]) -> str:
    """Which of `table` and its partitions the role does not own, by whom they are owned, and the way out."""
    partitions = [relation for relation, _owner in lacking if relation != table]
    what = [f"table {table}"] if len(partitions) < len(lacking) else []
    if partitions:
        shown = ", ".join(partitions[:3]) + (
            f" and {len(partitions) - 3} more" if len(partitions) > 3 else ""
        )
        what.append(
            f"{len(partitions)} of its partitions ({shown})"
            if what
            else f"partitions {shown} of table {table}"
        )
    owners = sorted({owner for _relation, owner in lacking})
    quoted = ", ".join(engine.dialect.identifier_preparer.quote(owner) for owner in owners)
    way_out = f"run as {owners[0]} or GRANT {quoted}" if len(owners) == 1 else f"GRANT {quoted}"
    owned_by = f"owner: {owners[0]}" if len(owners) == 1 else f"owners: {', '.join(owners)}"
    return (
        f"the database role of DATABASE_URL does not own {' and '.join(what)} ({owned_by}), and dropping or"
        " detaching its expired partitions needs the owner: a run deletes their rows in batches instead"
        f" (slower, and the space returns only after VACUUM). To drop them whole, {way_out} TO the role of"
        " DATABASE_URL"
    )
