"""What the file step and its preview share: which queued paths a row still references, removing the rest
and counting every outcome, and the chunks they work in (`file_workers.py` hands them to worker threads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

from psycopg2 import extensions  # type: ignore[import-untyped]  # no stubs installed
from sqlalchemy.engine import Connection, Engine

from ..db import is_utf8, text_bytes
from ..files import HardLinks, Outcome, StorageRoots, remove_file, remove_files
from ..queries import path_checks
from ..references import keeping_columns
from ..spellings import Spellings
from ..stats import FileCounts
from ..tables import Expiry, Registry
from . import partition_ddl
from .offline_roots import OfflineRoots

Progress = Callable[[str], None]
T = TypeVar("T")
# Queued paths per unlink chunk and per commit of the drained queue rows.
CHECK_CHUNK = 2000
# Paths per reference check. Each check reads the referencing rows once (a hash join on PostgreSQL, the
# staged names' own index on SQLite): without indexes on the path columns a check per unlink chunk made
# the file step quadratic in the table's size, so chunks of unlinks share one check.
REFERENCE_CHUNK = 25_000


def no_progress(_message: str) -> None:
    pass


def referenced_paths(
    engine: Engine,
    roots: StorageRoots,
    stored: Sequence[str],
    registry: Registry | None = None,
    surviving: Expiry | None = None,
) -> set[str]:
    """The stored paths that some row of a retention table still references, under any of their aliases
    (`surviving`: rows a run with that expiry deletes do not count)."""
    spellings = Spellings(roots)
    aliases = {path: spellings.aliases(path) for path in stored}
    dialect = engine.dialect.name
    # PostgreSQL text cannot hold NUL; such a name cannot be stored there, so it cannot be referenced.
    # Unsorted: SQLite sorts them while staging, PostgreSQL hashes them (neither holds the GIL meanwhile).
    names = list({a for names in aliases.values() for a in names if "\x00" not in a})
    undecodable: list[str] = []
    if not is_utf8("".join(names)):
        # A name whose bytes are not UTF-8 (a file name as Python reads it, or a SQLite path as db.read_text
        # does) cannot travel in JSON. A SQLite row may hold those bytes, so such names are staged as bytes
        # there; a PostgreSQL row cannot, so they are never referenced there.
        undecodable = [name for name in names if not is_utf8(name)] if dialect == "sqlite" else []
        names = [name for name in names if is_utf8(name)]
    if not names and not undecodable:
        return set()
    registry = registry or Registry()
    keeping = keeping_columns(engine)
    if dialect == "postgresql":
        keeping += partition_ddl.detached_media_columns(engine, registry)
    with engine.connect() as conn:
        if dialect == "postgresql":
            names = _storable(conn, names)
        for statement in path_checks.create_check_names(dialect):
            conn.execute(statement)
        conn.commit()
        conn.execute(path_checks.stage_check_names(dialect), path_checks.check_names_param(names))
        if undecodable:
            raw = [{"raw": text_bytes(name)} for name in undecodable]
            conn.execute(path_checks.stage_check_names_from_bytes(), raw)
        if dialect == "postgresql":
            conn.execute(path_checks.steer_reference_check_plan())
        referenced_names = path_checks.select_referenced_names(registry, surviving, keeping)
        hits = set(conn.execute(referenced_names).scalars())
        if dialect == "sqlite":
            conn.execute(path_checks.clear_check_names())
        conn.commit()  # PostgreSQL empties the scratch table at COMMIT
    if not hits:
        return set()
    return {path for path, names in aliases.items() if hits.intersection(names)}


def _storable(conn: Connection, names: list[str]) -> list[str]:
    """The names a PostgreSQL database's encoding can hold: no row holds the others (`玄関/x.jpg` in a
    LATIN1 database), and one of them would fail the whole check."""
    server = conn.connection.dbapi_connection.info.parameter_status("server_encoding")  # type: ignore[union-attr]
    codec = extensions.encodings.get(server)
    # SQL_ASCII stores any bytes: a row may hold any name, so none is dropped (one it cannot send fails).
    if server == "SQL_ASCII" or codec is None or codec == "utf_8" or "".join(names).isascii():
        return names
    return [name for name in names if _encodes(name, codec)]


def _encodes(name: str, codec: str) -> bool:
    try:
        name.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def delete_unreferenced(
    counts: FileCounts,
    roots: StorageRoots,
    entries: Sequence[tuple[str, str]],
    referenced: set[str],
    dry_run: bool,
    links: HardLinks | None = None,
    offline: OfflineRoots | None = None,
) -> set[str]:
    """Keep referenced files, remove (or preview removing) the rest, and count every outcome.

    Returns the paths that stay queued for the next run: those whose unlink was refused (permissions, I/O)
    and missing files under a root in `offline` (which a dry run counts alike).
    """
    resolved_dirs: dict[str, str] = {}  # shared by this chunk only
    doomed = []
    for path, kind in entries:
        if path in referenced:
            counts.files_kept_shared += 1
            counts.count_unfreed(kind)
        else:
            doomed.append((path, kind))
    stored = [path for path, _kind in doomed]
    if dry_run:
        outcomes = [remove_file(roots, path, True, resolved_dirs, links) for path in stored]
    else:
        outcomes = remove_files(roots, stored, resolved_dirs, links)
    staying: set[str] = set()
    for (path, kind), (outcome, freed) in zip(doomed, outcomes, strict=True):
        if outcome is Outcome.DELETED:
            counts.count_deleted(kind, freed)
            continue
        counts.count_unfreed(kind)
        if outcome is Outcome.MISSING:
            root = offline.holding(path, resolved_dirs) if offline is not None else None
            if root is None:
                counts.files_missing += 1
            else:
                counts.roots_offline[root] = counts.roots_offline.get(root, 0) + 1
                staying.add(path)
        elif outcome is Outcome.REFUSED:
            counts.files_refused += 1
            counts.note(counts.refused_examples, path)
        else:
            counts.files_failed += 1
            counts.note(counts.failed_examples, path)
            if outcome is Outcome.BLOCKED:
                staying.add(path)
    return staying


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items (the last one shorter), read lazily from `items`."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def unlink_chunks(items: Iterable[T]) -> Iterator[list[T]]:
    """Lists of CHECK_CHUNK items: what one worker unlinks, and whose queue rows one commit forgets."""
    return chunked(items, CHECK_CHUNK)


def check_sizes() -> Iterator[int]:
    """How many paths each reference check of a file step takes: CHECK_CHUNK, then four times as many, up to
    REFERENCE_CHUNK.

    A small first check lets the workers start unlinking almost at once instead of waiting for a whole
    REFERENCE_CHUNK to be checked; the few extra passes over the referencing rows this costs are bounded.
    """
    size = CHECK_CHUNK
    while True:
        yield size
        size = min(4 * size, REFERENCE_CHUNK)


def chunked_growing(items: Iterable[T]) -> Iterator[list[T]]:
    """Lists of `items` sized by `check_sizes`, read lazily."""
    iterator = iter(items)
    for size in check_sizes():
        chunk = list(islice(iterator, size))
        if not chunk:
            return
        yield chunk
