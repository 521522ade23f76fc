"""The policy file (RETENTION_POLICY_FILE): rules operators add to the built-in ones, read and checked
before anything is deleted, with messages naming the file, the entry and the problem.

    tables:
      - table: audit_logs        # any table with an integer primary key `id`
        time_column: created_at
        retention_days: 90
        files: {thumbnail_url: thumbnails}   # optional: column -> storage root
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import DateTime, Integer, String, inspect
from sqlalchemy.engine import Engine

from . import time_declarations
from .db import named, sqlite_name, table_names
from .tables import BUILT_IN, KIND_OF_ROOT, OWN, MediaColumn, Registry, Rule

MAX_DAYS = 36_500  # a century; larger values overflow date arithmetic and are surely typos
_KEYS = {"table", "time_column", "retention_days", "files"}
# Tables the purge handles as part of another table's rows; a rule of their own would bypass that.
_NOT_RULES = {"event_detections", "alerts", "retention_file_queue"}


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the file, the entry and the problem."""


@dataclass(frozen=True)
class DeclaredRule:
    """One entry of the policy file."""

    table: str
    rule: Rule
    files: tuple[MediaColumn, ...] = ()


_MERGE = "tag:yaml.org,2002:merge"


def _key_given_twice(root: yaml.Node | None) -> yaml.ScalarNode | None:
    """A key written twice in one mapping anywhere in the document, or None: YAML would keep the last
    silently, and `retention_days: 400` then `retention_days: 4` must not mean 4 days. Read from the node
    tree as written, before `<<` merges bring keys an entry may override."""
    stack, seen_nodes = [root], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))  # an anchor's node is shared wherever it is used
        if isinstance(node, yaml.MappingNode):
            keys = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
                    if key.value in keys:
                        return key
                    keys.add(key.value)
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return None


def _load(text: str) -> Any:
    """The document, refusing a key given twice in one mapping (yaml.YAMLError)."""
    if (twice := _key_given_twice(yaml.compose(text, Loader=yaml.SafeLoader))) is not None:
        raise yaml.MarkedYAMLError(
            problem=f"key {twice.value!r} is given twice in one entry", problem_mark=twice.start_mark
        )
    return yaml.safe_load(text)


def read_policy(path: Path, ignore_case: bool = False) -> tuple[DeclaredRule, ...]:
    """The rules of a policy file; PolicyError listing every problem it has. `ignore_case` (SQLite, where
    `Events` is the table `events`, but `Événements` not `événements`): each table under one spelling
    (`folded`)."""
    where = f"RETENTION_POLICY_FILE {path}"
    try:
        document = _load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{where} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{where} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{where} is not valid YAML: {' '.join(str(exc).split())}") from None
    if document is None:
        return ()
    if not isinstance(document, dict) or not isinstance(document.get("tables"), list):
        raise PolicyError(f"{where} must hold a mapping with a list under 'tables:'")
    rules, problems = [], []
    for index, entry in enumerate(document["tables"]):
        try:
            rules.append(_entry(entry, index, f"{path}: tables[{index}]"))
        except PolicyError as exc:
            problems.append(str(exc))
    if ignore_case:
        rules = folded(rules)
    if problems or (problems := _columns_given_another_kind(rules)):
        raise PolicyError(f"{where}: " + "; ".join(problems))
    return tuple(rules)


def folded(rules: list[DeclaredRule]) -> list[DeclaredRule]:
    """The rules with every table named as the built-in table, or else as the first rule on it, spelled
    with other cases of ASCII letters: on SQLite `Events` is `events`, and a second registry entry for it
    would skip the keep rule, the alerts and the clips, and escape the events check. `Événements` and
    `événements` stay two tables, as SQLite keeps them."""
    spelling = {entry.name: entry.name for entry in BUILT_IN}
    return [replace(d, table=spelling.setdefault(sqlite_name(d.table), d.table)) for d in rules]


def _columns_given_another_kind(rules: list[DeclaredRule]) -> list[str]:
    """Media columns a table already has (built in, or from an earlier entry) given another storage root:
    the first declaration would win silently, so `files: {file_path: thumbnails}` on detections would
    still delete those images only with DELETE_IMAGES."""
    problems, registry = [], Registry()
    for index, declared in enumerate(rules):
        known = {f.column: f for f in registry[declared.table].files} if declared.table in registry else {}
        for media in declared.files:
            if (first := known.get(media.column)) is not None and first.kind != media.kind:
                images = ", deleted only with DELETE_IMAGES" if first.only_with_images else ""
                problems.append(
                    f"tables[{index}] ({declared.table}): files.{media.column} already holds {first.kind}"
                    f" files{images}; it cannot be given another storage root"
                )
        registry = registry.with_rule(declared.table, declared.rule, declared.files)
    return problems


def _entry(entry: Any, index: int, origin: str) -> DeclaredRule:
    if not isinstance(entry, dict):
        raise PolicyError(f"tables[{index}] must be a mapping with table, time_column and retention_days")
    name = entry.get("table")
    if isinstance(name, str):
        name = name.strip()  # before any check: "alerts " must be refused like "alerts"
    label = f"tables[{index}] ({name or 'no table'})"
    if unknown := set(entry) - _KEYS:
        raise PolicyError(f"{label}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    for key in ("table", "time_column"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise PolicyError(f"{label}: '{key}' must be a table column name, got {entry.get(key)!r}")
    name = str(name)  # checked above: a non-empty string
    if name.lower() in _NOT_RULES:
        raise PolicyError(f"{label}: {name} rows go with their parent rows; it cannot have a rule of its own")
    days = entry.get("retention_days")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise PolicyError(
            f"{label}: retention_days must be an integer between 1 and {MAX_DAYS}, got {days!r}"
        )
    files = entry.get("files") or {}
    if not isinstance(files, dict):
        raise PolicyError(f"{label}: 'files' must map a column to a storage root, got {files!r}")
    media = []
    for column_name, root in files.items():
        if not isinstance(root, str) or root not in KIND_OF_ROOT:
            raise PolicyError(
                f"{label}: files.{column_name} names storage root {root!r};"
                f" use one of {', '.join(KIND_OF_ROOT)}"
            )
        media.append(MediaColumn(str(column_name), KIND_OF_ROOT[root]))
    rule = Rule(entry["time_column"].strip(), OWN, days, origin=origin)
    return DeclaredRule(name, rule, tuple(media))


def registry_with(rules: tuple[DeclaredRule, ...]) -> Registry:
    """The built-in registry plus the policy's rules."""
    registry = Registry()
    for declared in rules:
        registry = registry.with_rule(declared.table, declared.rule, declared.files)
    return registry


def rules_that_keep_nothing(
    registry: Registry, data_days: int, log_days: int, overridden: frozenset[str] = frozenset()
) -> list[str]:
    """Why some policy rule can never keep a row: another rule on the same column deletes sooner (a row
    goes when any rule says so), so its longer days would only mislead (tables in `overridden` get one
    run's days for every rule, and are skipped)."""
    problems = []
    for entry in registry.tables:
        if entry.name in overridden:
            continue
        for rule in entry.rules:
            if rule.retention != OWN or rule.days is None:
                continue
            for other in entry.rules:
                days = other.days_under(data_days, log_days)
                if other is rule or other.column != rule.column or days >= rule.days:
                    continue
                setting = other.setting or f"the retention_days of {other.origin}"
                problems.append(
                    f"RETENTION_POLICY_FILE {rule.origin} ({entry.name}): retention_days {rule.days} on"
                    f" {rule.column} would keep nothing longer: the {other.origin} rule on the same column"
                    f" deletes rows after {days} days ({setting}). A rule can only make rows go sooner;"
                    f" raise {setting} or remove one of the rules"
                )
    return problems


def policy_problems(engine: Engine, rules: tuple[DeclaredRule, ...]) -> list[str]:
    """What makes the policy's rules unusable on this database: a missing table or column, a time column
    that is not a timestamp, a table without an integer `id`, a file column that is not text."""
    inspector = inspect(engine)
    tables = table_names(engine, inspector.get_table_names())
    problems = []
    for declared in rules:
        label = f"RETENTION_POLICY_FILE {declared.rule.origin} ({declared.table})"
        if (table := tables.get(named(engine, declared.table))) is None:
            hint = _spelled(declared.table, tables.values())
            problems.append(f"{label}: the database has no table {declared.table!r}{hint}")
            continue
        types = {c["name"]: c["type"] for c in inspector.get_columns(table)}
        primary_key = inspector.get_pk_constraint(table).get("constrained_columns") or []
        if not isinstance(types.get("id"), Integer) or "id" not in primary_key:
            problems.append(
                f"{label}: the table needs an integer primary key column 'id' to be purged in batches"
            )
        time_type = types.get(declared.rule.column)
        if time_type is None:
            hint = _spelled(declared.rule.column, types)
            problems.append(f"{label}: the table has no column {declared.rule.column!r}{hint}")
        elif problem := _not_a_time(engine, table, declared.rule.column, time_type):
            problems.append(f"{label}: time_column {declared.rule.column!r} {problem}")
        for media in declared.files:
            if media.column not in types:
                hint = _spelled(media.column, types)
                problems.append(f"{label}: files names column {media.column!r}, which the table lacks{hint}")
            elif not isinstance(types[media.column], String):
                problems.append(f"{label}: files column {media.column!r} is {types[media.column]}, not text")
    return problems


def _not_a_time(engine: Engine, table: str, column: str, reflected: Any) -> str | None:
    """Why this column cannot be a rule's time column, or None."""
    if engine.dialect.name != "sqlite":
        return None if isinstance(reflected, DateTime) else f"is {reflected}, not a timestamp"
    return time_declarations.problem(engine, table, column)


def _spelled(name: str, names: Iterable[str]) -> str:
    """A hint naming the database's spelling when it differs from `name` only in letters' case (a non-ASCII
    letter's, which SQLite tells apart; any on PostgreSQL), else ''. Columns are matched as spelled."""
    other = next((n for n in names if n != name and n.casefold() == name.casefold()), None)
    return "" if other is None else f" (it spells it {other!r}: write the name as the database does)"
