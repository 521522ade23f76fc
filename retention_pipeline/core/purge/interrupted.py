"""A file drain interrupted (Dagster's Terminate, SIGTERM, Ctrl-C) after it had deleted files. A row purge
needs no such carrier: it fills the counts its caller hands it (`purge_table`'s `committed`) batch by
batch, so the caller holds them whatever stops it."""

from __future__ import annotations

from ..stats import FileCounts


class Interrupted(KeyboardInterrupt):
    """The drain's `interrupt` (also the cause), with `counts`: the files its chunks had deleted by then,
    which stay deleted, so the run's figures must hold them. Still an interrupt to whoever does not know
    this class: Dagster handles an uncaught one as it handles the interrupt itself, and no
    `except Exception` takes it."""

    def __init__(self, interrupt: BaseException, counts: FileCounts) -> None:
        super().__init__(str(interrupt) or type(interrupt).__name__)
        self.interrupt, self.counts = interrupt, counts
