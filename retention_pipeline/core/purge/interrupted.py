"""A purge step interrupted (Dagster's Terminate, SIGTERM, Ctrl-C) after it had deleted something."""

from __future__ import annotations

from typing import Generic, TypeVar

C = TypeVar("C")


class Interrupted(KeyboardInterrupt, Generic[C]):
    """The step's `interrupt` (also the cause), with `counts`: what it had deleted by then, which stays
    deleted, so the run's figures must hold it. Still an interrupt to whoever does not know this class:
    Dagster handles an uncaught one as it handles the interrupt itself, and no `except Exception` takes it."""

    def __init__(self, interrupt: BaseException, counts: C) -> None:
        super().__init__(str(interrupt) or type(interrupt).__name__)
        self.interrupt, self.counts = interrupt, counts
