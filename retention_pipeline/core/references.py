"""What hangs off the rows retention deletes: every foreign key that references `events` or `detections`,
what the database does with its rows on delete, and whether its column is indexed.

Read from the database itself (the camera system's schema is not ours and grows), never assumed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Engine

from .db import sqlite_name
from .index_advice import index_kinds, index_statements
from .tables import Expiry

PARENTS = ("events", "detections")
# Children the purge deletes itself, in the parent's batch and before it: their ON DELETE never fires.
DELETED_FIRST = {("alerts", "event_id"), ("event_detections", "event_id")}
BLOCKING = ("NO ACTION", "RESTRICT")
_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

# PostgreSQL: every foreign key, from any schema, to the parents as unqualified names find them (the
# pipeline's deletes do), its columns in key order; not the clones PostgreSQL keeps on each partition of a
# partitioned child, whose parent's key stands for them. One query, however many schemas and tables.
# A child is at home beside its parent, where the pipeline's unqualified names find it too: not in
# current_schema(), which with search_path "$user", public (or scratch, camera) is an empty schema before
# the tables' own.
_PG_REFERENCES = text(
    "SELECT n.nspname::text, r.relname::text, p.relname::text, c.confdeltype::text,"
    " ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)"
    "  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),"
    " ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)"
    "  JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i),"
    " r.relnamespace = p.relnamespace AND pg_table_is_visible(r.oid)"
    " FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid"
    " JOIN pg_namespace n ON n.oid = r.relnamespace JOIN pg_class p ON p.oid = c.confrelid"
    " WHERE c.contype = 'f' AND c.conparentid = 0 AND c.confrelid IN"
    "  (SELECT to_regclass(quote_ident(name)) FROM unnest(CAST(:parents AS text[])) AS name)"
    " ORDER BY r.relnamespace <> p.relnamespace, n.nspname, r.relname"
)


@dataclass(frozen=True)
class Reference:
    """One foreign key from a child table's column to a parent retention deletes from."""

    table: str
    column: str
    parent: str
    on_delete: str  # CASCADE, SET NULL, SET DEFAULT, NO ACTION or RESTRICT
    indexed: bool
    # The key's column that holds the parent's `id` (a composite key may list it second, or not at all).
    id_column: str | None = None
    # The child's schema when it is not the one the retention tables are in (PostgreSQL), else None.
    schema: str | None = None

    @property
    def name(self) -> str:
        """The child table as a person names it: schema-qualified when in another schema."""
        return self.table if self.schema is None else f"{self.schema}.{self.table}"

    @property
    def home_table(self) -> str | None:
        """The child's name where it may be a retention table (beside them), else None."""
        return self.table if self.schema is None else None

    @property
    def deleted_first(self) -> bool:
        """The purge deletes these children itself, so the foreign key's action never runs."""
        return (self.home_table, self.column) in DELETED_FIRST

    @property
    def blocks_deletes(self) -> bool:
        """Deleting a referenced parent row would fail (NO ACTION / RESTRICT)."""
        return self.on_delete in BLOCKING and not self.deleted_first

    @property
    def slows_deletes(self) -> bool:
        """Without an index, every deleted parent row makes the database scan the whole child table."""
        return not self.indexed and not self.deleted_first and not self.blocks_deletes

    def index_advice(self, engine: Engine) -> list[str]:
        """The statements that give the child's column the index its foreign key needs."""
        return index_statements(engine, self.table, self.column, self.schema)

    def as_dict(self) -> dict[str, Any]:
        """The reference as JSON-ready values."""
        return {
            "table": self.name,
            "schema": self.schema,
            "column": self.column,
            "parent": self.parent,
            "on_delete": self.on_delete,
            "indexed": self.indexed,
        }


def column_holding_id(columns: Iterable[str], parent_columns: Iterable[str]) -> str | None:
    """The foreign key's column paired with the parent's `id` (a composite key may list it anywhere), or
    None when the key does not cover it."""
    return next((mine for mine, theirs in zip(columns, parent_columns, strict=False) if theirs == "id"), None)


def references_to_parents(engine: Engine, parents: Iterable[str] = PARENTS) -> list[Reference]:
    """Every foreign key in the database that references one of `parents` (the tables retention deletes
    from), in table order."""
    if engine.dialect.name == "postgresql":
        return _postgresql_references(engine, list(parents))
    sqlite = engine.dialect.name == "sqlite"
    # SQLite's names ignore the case of ASCII letters: `REFERENCES Detections (id)` is a key to detections,
    # and a table created as `Crops` is the policy's `crops` (but `Événements` is not `événements`).
    named = {(sqlite_name(name) if sqlite else name): name for name in parents}

    def known(name: str) -> str | None:
        return named.get(sqlite_name(name) if sqlite else name)

    inspector = inspect(engine)
    found = []
    for (_schema, table), keys in sorted(inspector.get_multi_foreign_keys().items()):
        sqlite_actions = _sqlite_on_delete(engine, table) if sqlite else {}
        for key in keys:
            parent = known(key["referred_table"])
            if parent is None:
                continue
            columns = key["constrained_columns"]
            column = columns[0]
            on_delete = ((key.get("options") or {}).get("ondelete") or "NO ACTION").upper()
            on_delete = sqlite_actions.get(
                (sqlite_name(column), sqlite_name(key["referred_table"])), on_delete
            )
            found.append(
                Reference(
                    table=known(table) or table,
                    column=column,
                    parent=parent,
                    on_delete=on_delete,
                    indexed=column in index_kinds(inspector, table),
                    id_column=column_holding_id(
                        key["constrained_columns"], key.get("referred_columns") or []
                    ),
                )
            )
    return found


def _postgresql_references(engine: Engine, parents: list[str]) -> list[Reference]:
    """`references_to_parents` from the catalogue: the inspector reads one schema at a time."""
    with engine.connect() as conn:
        rows = conn.execute(_PG_REFERENCES, {"parents": parents}).all()
    inspector = inspect(engine)
    found = []
    for schema, table, parent, action, columns, parent_columns, home in rows:
        in_schema = None if home else schema
        found.append(
            Reference(
                table=table,
                column=columns[0],
                parent=parent,
                on_delete=_ON_DELETE[action],
                indexed=columns[0] in index_kinds(inspector, table, in_schema),
                id_column=column_holding_id(columns, parent_columns),
                schema=in_schema,
            )
        )
    return found


def _sqlite_on_delete(engine: Engine, table: str) -> dict[tuple[str, str], str]:
    """(column, parent) -> ON DELETE of `table`'s foreign keys, as SQLite itself reports them."""
    # SQLAlchemy reads the action from the table's SQL text and misses it on a column's inline
    # `REFERENCES parent (id) ON DELETE CASCADE`, which would make a cascading child look like NO ACTION
    # and refuse every run.
    keys = func.pragma_foreign_key_list(table).table_valued("from", "table", "on_delete")
    with engine.connect() as conn:
        rows = conn.execute(select(keys.c["from"], keys.c.table, keys.c.on_delete)).all()
    return {(sqlite_name(column), sqlite_name(parent)): action.upper() for column, parent, action in rows}


def blocking_references_message(references: list[Reference]) -> str | None:
    """Why a run must not start because some deletes would fail half-way, or None."""
    blocking = [r for r in references if r.blocks_deletes]
    if not blocking:
        return None
    named = ", ".join(f"{r.name}.{r.column} -> {r.parent} (ON DELETE {r.on_delete})" for r in blocking)
    return (
        f"foreign key(s) {named} would make deleting an expired row fail while such a row references it."
        " Nothing was deleted. Change the foreign key to ON DELETE CASCADE or SET NULL, or clear those"
        " rows first; `retention-pipeline doctor` lists every reference."
    )


def cascading_children(references: list[Reference], expiry: Expiry) -> list[Reference]:
    """The references whose ON DELETE CASCADE empties a retention table (declared by a policy) with a
    parent the run purges before it: the parent's batches queue those rows' files, and the rows count with
    neither table, in the dry run as in the run."""
    registry = expiry.registry
    return [
        r
        for r in references
        if r.on_delete == "CASCADE"
        and r.id_column is not None  # one by another column the batches, which walk ids, cannot follow
        and r.home_table in registry
        and r.parent in registry.purged_before(r.table)
    ]


def with_cascades(engine: Engine, expiry: Expiry) -> Expiry:
    """The expiry with every retention table's cascading parents read from the database, so that the
    files of rows a CASCADE removes are queued and those rows counted like the rest (see
    `cascading_children`)."""
    registry = expiry.registry
    if not registry.declared:
        return expiry  # only a policy's table can be such a child
    for r in cascading_children(references_to_parents(engine, registry.names), expiry):
        column = str(r.id_column)
        if (r.parent, column) not in registry[r.table].cascades_from:
            registry = registry.with_cascade(r.table, r.parent, column)
    return Expiry(registry, expiry.cutoffs)


# Columns of camera tables retention never deletes from whose paths name media files: such a row keeps its
# file as long as it lives. zone_anomalies keeps its thumbnail_url when the detection it came from goes
# (its foreign key sets NULL).
KEEPING_COLUMNS = (("zone_anomalies", "thumbnail_url"),)


def keeping_columns(engine: Engine) -> list[tuple[str, str]]:
    """The KEEPING_COLUMNS this database has (the camera system's schema has them, ours does not)."""
    inspector = inspect(engine)
    present = []
    for table_name, column_name in KEEPING_COLUMNS:
        # Whatever its declared type (none, a domain, a varchar): the check compares it as text.
        if inspector.has_table(table_name) and any(
            c["name"] == column_name for c in inspector.get_columns(table_name)
        ):
            present.append((table_name, column_name))
    return present
