"""The purge: deleting expired rows batch by batch, and their files through a durable queue.

Shaped by its two axes. The table is data: `core/tables.py` describes every retention table (rules, media
columns, children, keep rule) and `core/queries/purge_batch.py` builds each batch's statements from that
description.
The engine is code:

- `loop.py`       the engine-free loop: id span, overruns, final flush; `purge_table` is the entry
                  point, `table_batches` picks the engine's batch
- `pacing.py`     batch sizing by the transaction target, retries with backoff, progress every so often
- `batch.py`      what a batch reports, and the parts both engines share
- `postgresql.py` row locks, the batch's time cap (statement_timeout) and lock_timeout
- `partitions.py` PostgreSQL: wholly expired partitions dropped whole, their files queued first;
                  `partition_catalog.py` reads the catalogue, `partition_clearing.py` clears the way
                  (files queued, children removed, in capped chunks), `partition_ddl.py` detaches and
                  drops
- `durability.py` PostgreSQL commits that do not wait for the disk, and the flush that ends a step
- `sqlite.py`     batches under the database's write lock, and the writers' turns between them
- `file_queue.py` the durable file queue: queueing paths, and draining it (the file step);
                  `file_preview.py` the dry run's preview of it, `file_checks.py` what both share
                  (reference checks, removing and counting), `file_workers.py` their worker threads
                  (and what a failed drain had counted), `offline_roots.py` the storage roots that
                  look unmounted, whose missing files stay queued
- `interrupted.py` what an interrupted file drain had deleted, carried with the interrupt
"""

from .file_checks import CHECK_CHUNK, REFERENCE_CHUNK, chunked, referenced_paths
from .file_preview import preview_file_deletions
from .file_queue import drain_file_queue, queue_files, queue_ranges
from .file_workers import FilesFailed
from .interrupted import Interrupted
from .loop import BatchTooSlow, count_rows, purge_table, table_batches
from .offline_roots import offline_warnings
from .pacing import PROGRESS_EVERY_S, BatchSizer, EverySoOften, Progress, Share, with_retries

__all__ = [
    "CHECK_CHUNK",
    "PROGRESS_EVERY_S",
    "REFERENCE_CHUNK",
    "BatchSizer",
    "BatchTooSlow",
    "EverySoOften",
    "FilesFailed",
    "Interrupted",
    "Progress",
    "Share",
    "chunked",
    "count_rows",
    "drain_file_queue",
    "offline_warnings",
    "preview_file_deletions",
    "purge_table",
    "queue_files",
    "queue_ranges",
    "referenced_paths",
    "table_batches",
    "with_retries",
]
