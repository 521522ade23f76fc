"""The retention registry: one frozen entry per table retention deletes from, the single source of which
rows expire, which columns name media files, and which children go with them. The built-in entries
describe the camera system's four tables; a policy file adds rules (see policy.py).

A run turns the registry into an `Expiry`: every rule's cutoff, fixed once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Column, ColumnClause, Integer, MetaData, String, Table, column

from .schema import UTCDateTime, detections, events, gpu_stats, logs

# The storage root a media column's files live under -> the kind the file queue and the stats count.
KIND_OF_ROOT = {"thumbnails": "thumbnail", "images": "image", "clips": "clip"}
# How a rule's days are chosen: the run's RETENTION_DAYS, its LOG_RETENTION_DAYS, or the rule's own.
DATA, LOG, OWN = "data", "log", "own"


@dataclass(frozen=True)
class Rule:
    """A row expires when `column` is before this rule's cutoff; NULL there: the rule does not apply."""

    column: str
    retention: str = DATA  # DATA, LOG or OWN
    days: int | None = None  # OWN only
    origin: str = "built-in"  # where the rule was declared, for messages

    def days_under(self, data_days: int, log_days: int) -> int:
        """The days this rule keeps rows, with these RETENTION_DAYS and LOG_RETENTION_DAYS."""
        return {DATA: data_days, LOG: log_days}.get(self.retention, self.days or data_days)

    @property
    def setting(self) -> str | None:
        """The variable its days come from (None: the rule's own retention_days)."""
        return {DATA: "RETENTION_DAYS", LOG: "LOG_RETENTION_DAYS"}.get(self.retention)


@dataclass(frozen=True)
class MediaColumn:
    """A column holding the path of a file that goes when its row goes (NULL or '': no file)."""

    column: str
    kind: str  # thumbnail, image or clip
    only_with_images: bool = False  # detections.file_path: deleted only with DELETE_IMAGES


@dataclass(frozen=True)
class Child:
    """A table the purge empties itself, in the parent's batch and before it, whatever its ON DELETE."""

    table: str
    column: str  # the column holding the parent's id
    counted: bool = False  # reported (alerts_deleted)


@dataclass(frozen=True)
class RetentionTable:
    """Everything retention knows about one table. Every table has an integer primary key `id`."""

    name: str
    rules: tuple[Rule, ...]
    files: tuple[MediaColumn, ...] = ()
    children: tuple[Child, ...] = ()
    keep_rule: str = ""  # said in prose; the rule itself lives in queries/expiring.py
    built_in: bool = True
    # (parent, column): a foreign key whose ON DELETE CASCADE removes this table's rows with an expired
    # parent row, in the parent's batch, earlier in the run (read from the database: references.py).
    cascades_from: tuple[tuple[str, str], ...] = ()

    @property
    def columns(self) -> set[str]:
        """The columns retention reads or filters on; the real table may hold many more."""
        return {"id", *(r.column for r in self.rules), *(f.column for f in self.files)}

    @property
    def retention(self) -> str:
        """Which setting its first rule follows (data, log or own), for checks and observations."""
        return self.rules[0].retention

    def media(self, delete_images: bool = True) -> tuple[MediaColumn, ...]:
        """The media columns whose files a run deletes."""
        return tuple(f for f in self.files if delete_images or not f.only_with_images)

    def with_rule(self, rule: Rule, files: tuple[MediaColumn, ...] = ()) -> RetentionTable:
        """The same table with one more rule (and media columns)."""
        known = {f.column for f in self.files}
        return replace(
            self, rules=(*self.rules, rule), files=(*self.files, *(f for f in files if f.column not in known))
        )


DETECTIONS = RetentionTable(
    "detections",
    (Rule("detected_at"),),
    files=(
        MediaColumn("thumbnail_path", "thumbnail"),
        MediaColumn("file_path", "image", only_with_images=True),
    ),
    keep_rule="also expires with an expired linked event, but never while a retained event links it",
)
EVENTS = RetentionTable(
    "events",
    (Rule("started_at"),),
    files=(MediaColumn("clip_path", "clip"),),
    children=(Child("alerts", "event_id", counted=True), Child("event_detections", "event_id")),
)
GPU_STATS = RetentionTable("gpu_stats", (Rule("recorded_at"),))
LOGS = RetentionTable("logs", (Rule("timestamp", LOG),))
# Purge order: detections before events (deleting an event first would cut the links that make its
# young detections expire with it); tables declared by a policy come after events.
BUILT_IN = (DETECTIONS, EVENTS, GPU_STATS, LOGS)
# Columns of the link and alert tables the keep rule and the event purge read.
CHILD_COLUMNS = {"event_detections": {"event_id", "detection_id"}, "alerts": {"id", "event_id"}}


@dataclass(frozen=True)
class Registry:
    """Every retention table of a run, built-in first, each once."""

    tables: tuple[RetentionTable, ...] = BUILT_IN

    def __getitem__(self, name: str) -> RetentionTable:
        for entry in self.tables:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(entry.name == name for entry in self.tables)

    @property
    def names(self) -> list[str]:
        """Table names in purge order."""
        return [entry.name for entry in self.tables]

    @property
    def declared(self) -> tuple[RetentionTable, ...]:
        """The tables only a policy file names."""
        return tuple(entry for entry in self.tables if not entry.built_in)

    def with_rule(self, table: str, rule: Rule, files: tuple[MediaColumn, ...] = ()) -> Registry:
        """The registry with one more rule, on a table it knows or on a new one."""
        if table in self:
            return Registry(tuple(e.with_rule(rule, files) if e.name == table else e for e in self.tables))
        return Registry((*self.tables, RetentionTable(table, (rule,), files, built_in=False)))

    def with_cascade(self, table: str, parent: str, column: str) -> Registry:
        """The registry with `table`'s rows also going, by ON DELETE CASCADE, with `parent`'s."""
        return Registry(
            tuple(
                replace(e, cascades_from=(*e.cascades_from, (parent, column))) if e.name == table else e
                for e in self.tables
            )
        )

    def purged_before(self, name: str) -> list[str]:
        """The tables a run purges before `name` (the Dagster job's order: detections, events, then the
        policy's tables in turn; gpu_stats and logs run beside them, so before nothing)."""
        order = ["detections", "events", *(e.name for e in self.declared)]
        return order[: order.index(name)] if name in order else []

    def required_columns(self) -> dict[str, set[str]]:
        """table -> the columns retention needs in it."""
        return {**{entry.name: entry.columns for entry in self.tables}, **CHILD_COLUMNS}


def rule_days(
    registry: Registry, data_days: int, log_days: int, overrides: Mapping[str, int]
) -> Iterator[tuple[RetentionTable, Rule, int]]:
    """Every rule with the days it keeps rows in a run; `overrides` (a run's days per table) replace
    every rule of their table."""
    for entry in registry.tables:
        for rule in entry.rules:
            yield entry, rule, overrides.get(entry.name, rule.days_under(data_days, log_days))


@dataclass(frozen=True)
class Expiry:
    """Which rows one run deletes: each rule's cutoff, fixed once, in UTC."""

    registry: Registry
    cutoffs: tuple[tuple[str, str, datetime], ...]  # (table, column, cutoff)

    @classmethod
    def at(
        cls,
        registry: Registry,
        reference_time: datetime,
        data_days: int,
        log_days: int,
        days_by_table: Mapping[str, int] | None = None,
    ) -> Expiry:
        """Every rule's cutoff for a run at `reference_time`; `days_by_table` overrides a table's rules."""
        cutoffs = [
            (entry.name, rule.column, reference_time - timedelta(days=days))
            for entry, rule, days in rule_days(registry, data_days, log_days, days_by_table or {})
        ]
        return cls(registry, tuple(cutoffs))

    @classmethod
    def of(cls, cutoff: datetime | Expiry, log_cutoff: datetime | None = None) -> Expiry:
        """The built-in rules at one data cutoff (and log cutoff), or an Expiry as it is."""
        if isinstance(cutoff, Expiry):
            return cutoff
        log = log_cutoff or cutoff
        cutoffs = [
            (e.name, r.column, log if r.retention == LOG else cutoff) for e in BUILT_IN for r in e.rules
        ]
        return cls(Registry(), tuple(cutoffs))

    def rules_of(self, table: str) -> list[tuple[str, datetime]]:
        """(column, cutoff) of every rule on a table."""
        return [(column_name, cutoff) for name, column_name, cutoff in self.cutoffs if name == table]

    def cutoff(self, table: str) -> datetime:
        """The cutoff of a table's first rule (what its health check and reports show)."""
        return self.rules_of(table)[0][1]


@cache
def table_of(entry: RetentionTable) -> Table:
    """The SQLAlchemy table of an entry: ours for the built-in four, a minimal one for a declared table
    (only the columns retention uses, so a statement never names a column the table lacks)."""
    built_in = {t.name: t for t in (detections, events, gpu_stats, logs)}
    if entry.built_in:
        return built_in[entry.name]
    columns: list[Column[Any]] = [Column("id", Integer, primary_key=True)]
    columns += [Column(r.column, UTCDateTime()) for r in entry.rules]
    columns += [
        Column(f.column, String) for f in entry.files if f.column not in {r.column for r in entry.rules}
    ]
    return Table(entry.name, MetaData(), *columns)


def column_of(entry: RetentionTable, name: str, type_: Any = None) -> Any:
    """A column of an entry's table, also one our own schema does not list (events.deleted_at); `type_`
    for such a column, a timestamp unless told."""
    return column_on(table_of(entry), name, type_)


def column_on(table: Table, name: str, type_: Any = None) -> Any:
    """A column of `table` (an entry's, or a partition of it detached), also one it does not list; `type_`
    for such a column, a timestamp unless told."""
    if name in table.c:
        return table.c[name]
    # A column the camera system has and core/schema.py does not: named on the table only where used,
    # so statements reading the table's other columns never ask for it.
    clause: ColumnClause[Any] = column(name, type_ if type_ is not None else UTCDateTime())
    clause.table = table
    return clause
