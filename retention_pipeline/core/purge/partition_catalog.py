"""PostgreSQL's catalogue, read for whole-partition drops: how a table is partitioned, its leaf
partitions' ranges, and the foreign keys that reference it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Text, cast, column, func, not_, or_, select, table, text
from sqlalchemy.engine import Engine

from ..queries.partition_drop import ForeignKey
from ..tables import Expiry

DETACHED_PREFIX = "retention_detached_"

_pg_class = table("pg_class", column("oid"), column("relname"), column("relowner"))
_pg_inherits = table("pg_inherits", column("inhrelid"), column("inhparent"))

_ON_DELETE = {"c": "CASCADE", "n": "SET NULL"}

# quote_ident: to_regclass reads an identifier, which would fold a policy table's "AuditLog" to auditlog.
_PARTITION_KEY = text(
    "SELECT p.partstrat, array_length(p.partattrs::int2[], 1), a.attname"
    " FROM pg_partitioned_table p"
    " JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]"
    " WHERE p.partrelid = to_regclass(quote_ident(:parent))"
)
# Each leaf partition with its bounds as timestamps (upper NULL for DEFAULT, MAXVALUE or a sub-partitioned
# partition, none of which is dropped whole; lower NULL for MINVALUE).
_PARTITIONS = text(
    "SELECT c.relname,"
    " CAST((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']*)''\\)'))[1] AS timestamptz),"
    " CASE WHEN c.relkind = 'r' THEN"
    "  CAST((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']*)''\\)'))[1] AS timestamptz)"
    " END"
    " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = to_regclass(quote_ident(:parent)) AND pg_table_is_visible(c.oid)"
)
# Every foreign key referencing the parent (not its per-partition clones), its columns in key order.
_FOREIGN_KEYS = text(
    "SELECT n.nspname::text, r.relname::text, c.confdeltype,"
    " ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)"
    "  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),"
    " ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)"
    "  JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)"
    " FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid"
    " JOIN pg_namespace n ON n.oid = r.relnamespace"
    " WHERE c.contype = 'f' AND c.confrelid = to_regclass(quote_ident(:parent)) AND c.conparentid = 0"
)
# Foreign keys declared on one partition itself: its drop would fail, so the table is left to the batches.
_KEYS_TO_A_PARTITION = text(
    "SELECT count(*) FROM pg_constraint c JOIN pg_inherits i ON i.inhrelid = c.confrelid"
    " WHERE c.contype = 'f' AND c.conparentid = 0 AND i.inhparent = to_regclass(quote_ident(:parent))"
)


@dataclass(frozen=True)
class Partition:
    """One leaf partition and its range [lower, upper) (lower None: MINVALUE)."""

    name: str
    lower: datetime | None
    upper: datetime


@dataclass(frozen=True)
class PartitionedTable:
    """A retention table whose wholly expired partitions may go whole."""

    table: str
    key: str  # the rule's time column the table is partitioned on
    cutoff: datetime
    foreign_keys: tuple[ForeignKey, ...]


def partitioned(
    engine: Engine, expiry: Expiry, table: str, owned_only: bool = True
) -> PartitionedTable | None:
    """`table` when its partitions may go whole: PostgreSQL, range-partitioned on one of its rules'
    columns, referenced by no foreign key but ON DELETE CASCADE or SET NULL ones, and (`owned_only`)
    owned, with its partitions, by a role the run's role acts as."""
    if engine.dialect.name != "postgresql" or len(detached_prefix(table)) > 50:  # our names fit in 63
        return None
    if owned_only and not_owned(engine, table):
        # DETACH and DROP need ownership, which no GRANT of a right gives: its rows go in batches.
        return None
    with engine.connect() as conn:
        key = conn.execute(_PARTITION_KEY, {"parent": table}).first()
        references = conn.execute(_FOREIGN_KEYS, {"parent": table}).all()
        to_a_partition = conn.execute(_KEYS_TO_A_PARTITION, {"parent": table}).scalar_one()
    if key is None or key[0] != "r" or key[1] != 1 or to_a_partition:
        return None
    cutoffs = [cutoff for column, cutoff in expiry.rules_of(table) if column == key[2]]
    if not cutoffs or any(row[2] not in _ON_DELETE for row in references):
        return None
    foreign_keys = tuple(
        ForeignKey(child, tuple(cols), tuple(parent_cols), _ON_DELETE[action], schema)
        for schema, child, action, cols, parent_cols in references
    )
    # Several rules on the key's column: a row expires when any says so, so the latest cutoff decides.
    return PartitionedTable(table, key[2], max(cutoffs), foreign_keys)


def expired_partitions(engine: Engine, table: str, cutoff: datetime) -> list[Partition]:
    """The leaf partitions of `table` whose whole range lies before `cutoff`, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(_PARTITIONS, {"parent": table}).all()
    expired = [Partition(name, low, up) for name, low, up in rows if up is not None and up <= cutoff]
    return sorted(expired, key=lambda partition: partition.upper)


def detached_prefix(table: str) -> str:
    """How a partition of `table` detached by a run is renamed (followed by its own name)."""
    return f"{DETACHED_PREFIX}{table}__"


def not_owned(engine: Engine, table: str) -> list[tuple[str, str]]:
    """(relation, owner) for `table` and each partition of it whose owner the run's role neither is nor acts
    as, which DETACH and DROP require (a partition may have another owner than its table); [] when none."""
    parent = func.to_regclass(func.quote_ident(table))
    partitions = select(_pg_inherits.c.inhrelid).where(_pg_inherits.c.inhparent == parent)
    with engine.connect() as conn:
        rows = conn.execute(
            select(cast(_pg_class.c.relname, Text), cast(func.pg_get_userbyid(_pg_class.c.relowner), Text))
            .where(or_(_pg_class.c.oid == parent, _pg_class.c.oid.in_(partitions)))
            .where(not_(func.pg_has_role(_pg_class.c.relowner, "USAGE")))
            .order_by(_pg_class.c.relname)
        ).all()
    return [(relation, owner) for relation, owner in rows]
