"""The file step's dry run: exactly what draining the queue would do to files for the rows a run at the
cutoff would delete, without touching any.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy.engine import Engine

from ..files import HardLinks, StorageRoots
from ..queries import path_checks
from ..references import with_cascades
from ..stats import FileCounts
from ..tables import Expiry
from .file_checks import (
    CHECK_CHUNK,
    Progress,
    chunked_growing,
    delete_unreferenced,
    no_progress,
    referenced_paths,
    unlink_chunks,
)
from .file_workers import in_parallel
from .offline_roots import OfflineRoots
from .pacing import PROGRESS_EVERY_S


def preview_file_deletions(
    engine: Engine,
    roots: StorageRoots,
    expiry: Expiry | datetime,
    delete_images: bool,
    progress: Progress = no_progress,
    progress_every_s: float = PROGRESS_EVERY_S,
    offline: OfflineRoots | None = None,
    queued: bool = True,
) -> FileCounts:
    """What a real run with this expiry would do to files, without touching any (`offline`: as for
    `drain_file_queue`; `queued` False: in a database without the queue yet, as doctor may meet).

    The distinct candidate paths (files of rows that would expire, plus files already queued) are
    streamed from the database into a temporary file first, so the read transaction lasts one query,
    not the whole preview (a long one would hold back WAL checkpoints and vacuum), and memory does not
    grow with their number. The checks and stat() calls then run chunk by chunk from that file.
    """
    offline = offline or OfflineRoots.look(roots)
    expiry = with_cascades(engine, Expiry.of(expiry))
    statement = path_checks.select_stale_file_candidates(expiry, delete_images, queued)
    with tempfile.TemporaryFile("w+", newline="", encoding="utf-8", errors="surrogateescape") as spill:
        writer = csv.writer(spill)
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=CHECK_CHUNK).execute(statement)
            for part in result.partitions():
                writer.writerows((row.path, row.kind) for row in part)
        spill.seek(0)
        rows = csv.reader(spill)
        links = HardLinks()

        def chunks() -> Iterator[tuple[list[tuple[str, str]], set[str]]]:
            for entries in chunked_growing((path, kind) for path, kind in rows):
                stored = [path for path, _ in entries]
                referenced = referenced_paths(engine, roots, stored, expiry.registry, expiry)
                for part in unlink_chunks(entries):
                    yield part, referenced

        def handle(chunk: tuple[list[tuple[str, str]], set[str]]) -> FileCounts:
            entries, referenced = chunk
            counts = FileCounts()
            delete_unreferenced(counts, roots, entries, referenced, True, links, offline)
            return counts

        return in_parallel(chunks(), handle, progress, "files (dry run)", progress_every_s)
