"""Which columns lead an index, and the statements that add a missing one, for a person to run as printed
(the pipeline never creates an index)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

# The table and, when it is partitioned, its partitions at every depth, each with its parent (0 for the
# table): PostgreSQL builds no index CONCURRENTLY on a partitioned table, so its partitions get theirs
# one by one. `home`: an unqualified name finds the relation (pg_table_is_visible), as it finds the table
# itself when no schema is given: through the search path, whose first schema may not hold it.
_PARTITION_TREE = text(
    "WITH RECURSIVE tree(oid, parent, depth) AS ("
    " SELECT c.oid, CAST(0 AS oid), 0 FROM pg_class c"
    "  WHERE c.oid = CASE WHEN :schema IS NULL THEN to_regclass(quote_ident(:table))"
    "   ELSE to_regclass(format('%I.%I', :schema, :table)) END"
    " UNION ALL SELECT i.inhrelid, i.inhparent, t.depth + 1 FROM tree t"
    "  JOIN pg_class p ON p.oid = t.oid AND p.relkind = 'p' JOIN pg_inherits i ON i.inhparent = t.oid)"
    " SELECT t.oid, t.parent, n.nspname::text, c.relname::text, c.relkind::text,"
    "  pg_table_is_visible(c.oid)"
    " FROM tree t JOIN pg_class c ON c.oid = t.oid JOIN pg_namespace n ON n.oid = c.relnamespace"
    " ORDER BY t.depth, c.relname"
)


def index_kinds(inspector: Any, table: str, schema: str | None = None) -> dict[str, set[str]]:
    """Leading column -> kinds of the indexes it leads (primary key and unique constraints as btree)."""
    kinds: dict[str, set[str]] = {}
    primary = inspector.get_pk_constraint(table, schema=schema).get("constrained_columns") or []
    if primary:
        kinds.setdefault(primary[0], set()).add("btree")
    for unique in inspector.get_unique_constraints(table, schema=schema):
        if unique["column_names"]:
            kinds.setdefault(unique["column_names"][0], set()).add("btree")
    for index in inspector.get_indexes(table, schema=schema):
        columns = index["column_names"]
        options = index.get("dialect_options") or {}
        if columns and columns[0] is not None and _serves_every_lookup(columns[0], options):
            kinds.setdefault(columns[0], set()).add(options.get("postgresql_using", "btree"))
    return kinds


def _serves_every_lookup(column: str, options: dict[str, Any]) -> bool:
    """False for a partial index whose WHERE may leave out rows a look-up by `column` needs; `column IS NOT
    NULL` leaves out none a look-up of a value can find."""
    where = options.get("postgresql_where")
    if where is None:
        where = options.get("sqlite_where")
    if where is None:
        return True
    spelled = " ".join(str(where).lower().replace("(", " ").replace(")", " ").replace('"', " ").split())
    return spelled == f"{column.lower()} is not null"


def index_statements(engine: Engine, table: str, column: str, schema: str | None = None) -> list[str]:
    """The statements that index `column` of `table` (in `schema`, None: the default one), in the order
    to run them; names quoted as the database needs them ("ThreatNotes" keeps its case).

    On PostgreSQL none blocks writes for the build: CONCURRENTLY on a plain table; on a partitioned one
    (which refuses CONCURRENTLY) an index ON ONLY the parent, one CONCURRENTLY per partition and an
    ATTACH of each, after which the parent's index is valid and later partitions get theirs by
    themselves."""
    quote = engine.dialect.identifier_preparer.quote

    def named(name: str, in_schema: str | None) -> str:
        return f"{quote(in_schema)}.{quote(name)}" if in_schema is not None else quote(name)

    def create(how: str, in_schema: str | None, name: str, on: str = "ON") -> str:
        # An index lives in its table's schema: CREATE INDEX takes its name unqualified.
        index = quote(f"ix_{name}_{column}")
        return f"CREATE INDEX{how} {index} {on} {named(name, in_schema)} ({quote(column)});"

    if engine.dialect.name != "postgresql":
        return [create("", schema, table)]
    with engine.connect() as conn:
        tree = conn.execute(_PARTITION_TREE, {"schema": schema, "table": table}).all()
    if not tree or tree[0][4] != "p":
        return [create(" CONCURRENTLY", schema, table)]
    nodes = {oid: (None if home else nspname, name, kind) for oid, _, nspname, name, kind, home in tree}
    children: dict[int, list[int]] = {}
    for oid, parent, *_ in tree:
        children.setdefault(parent, []).append(oid)
    statements: list[str] = []

    def build(oid: int) -> None:
        in_schema, name, kind = nodes[oid]
        if kind == "p":
            statements.append(create("", in_schema, name, on="ON ONLY"))
        else:
            statements.append(create(" CONCURRENTLY", in_schema, name))
        for child in children.get(oid, []):
            build(child)
            child_schema, child_name, _ = nodes[child]
            statements.append(
                f"ALTER INDEX {named(f'ix_{name}_{column}', in_schema)}"
                f" ATTACH PARTITION {named(f'ix_{child_name}_{column}', child_schema)};"
            )

    build(tree[0][0])
    return statements
