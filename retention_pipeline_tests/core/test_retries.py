"""Transient database errors repeat the batch; others fail at once."""

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from retention_pipeline.core import purge
from retention_pipeline.core.db import is_transient
from retention_pipeline.core.purge import pacing
from retention_pipeline.core.stats import RowCounts


class _Orig(Exception):
    def __init__(self, message: str, pgcode: str | None = None):
        super().__init__(message)
        if pgcode:
            self.pgcode = pgcode


def _error(message: str, pgcode: str | None = None, cls=OperationalError):
    return cls("DELETE ...", {}, _Orig(message, pgcode))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_error("database is locked"), True),
        (_error("canceling statement due to lock timeout", "55P03"), True),
        (_error("deadlock detected", "40P01"), True),
        (_error("terminating connection due to administrator command", "57P01"), True),
        (_error("server closed the connection unexpectedly"), True),
        (_error("duplicate key", "23505", IntegrityError), False),
        (_error("no such table: detections"), False),
        (ValueError("not a database error"), False),
    ],
)
def test_transient_errors_are_recognised(error, transient):
    assert is_transient(error) is transient


def test_a_transient_error_repeats_the_batch_and_is_counted(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pacing.time, "sleep", lambda _s: None)
    attempts = []

    def step():
        attempts.append(1)
        if len(attempts) < 3:
            raise _error("database is locked")
        return "done"

    counts = RowCounts()
    assert purge.with_retries(step, counts, lambda _m: None) == "done"
    assert counts.retries == 2


def test_a_permanent_error_is_raised_without_retrying(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pacing.time, "sleep", lambda _s: None)
    counts = RowCounts()

    def step():
        raise _error("no such column: thumbnail_path")

    with pytest.raises(OperationalError):
        purge.with_retries(step, counts, lambda _m: None)
    assert counts.retries == 0


def test_retries_give_up_after_the_last_delay(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pacing.time, "sleep", lambda _s: None)
    counts = RowCounts()

    def step():
        raise _error("database is locked")

    with pytest.raises(OperationalError):
        purge.with_retries(step, counts, lambda _m: None)
    assert counts.retries == len(pacing.RETRY_DELAYS_S)
