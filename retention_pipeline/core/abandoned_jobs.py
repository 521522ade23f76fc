"""Our records that their run left unfinished (its last write lost, its process killed), settled from
what Dagster says of the run; and our ids whose records have expired, taken off the shared job list.

Only our own records are ever read or changed: the camera system lists its own jobs (and maybe others')
in the same sorted set, with the same `cleanup-` prefix, and they are none of our business.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from .job_records import OWN_ID, STATUS_LIST, compare_and_set, job_key, own_record
from .job_status import COMPLETED, FAILED, UNFINISHED, JobTracker

KILLED_OR_LOST = "The run ended without reporting its outcome (its process was killed or lost)."
# The whole check, however slow Redis is, holds up the run's first op this long at most (plus one
# call's timeout): the rest waits for the next run.
BUDGET_S = 2.0
_SCAN_COUNT = 1000
_READ_CHUNK = 500
# ZSCAN narrows the shared list on the server; OWN_ID then says exactly which ids are ours.
_SCAN_MATCH = "*cleanup-????????-??????-????????"

# The id goes off the list only if its record is still gone (a write may have brought it back).
_UNLIST_IF_GONE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
return redis.call('ZREM', KEYS[2], ARGV[1])
"""


@dataclass(frozen=True)
class RunOutcome:
    """How a run whose record is unfinished ended, as Dagster tells it."""

    completed: bool
    error: str | None = None
    result: Mapping[str, Any] | None = None

    def applied_to(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The record finished as the run finished."""
        finished = {**record, "completed_at": datetime.now(UTC).isoformat()}
        if self.completed:
            result = dict(self.result) if self.result is not None else finished.get("result")
            done = {"status": COMPLETED, "progress": 100, "message": "Completed", "error": None}
            return {**finished, **done, "result": result}
        return {**finished, "status": FAILED, "message": "Failed", "error": self.error or KILLED_OR_LOST}


def succeeded(result: Mapping[str, Any] | None) -> RunOutcome:
    """The run succeeded; `result` its statistics as it reported them."""
    return RunOutcome(completed=True, result=result)


def failed(error: str) -> RunOutcome:
    """The run failed (or was canceled, killed, lost) for this reason."""
    return RunOutcome(completed=False, error=error)


class _OutOfTime(Exception):
    def __init__(self) -> None:
        super().__init__(f"settling abandoned job records took longer than {BUDGET_S:g} s; left for later")


def settle_abandoned(
    tracker: JobTracker,
    outcome_of: Callable[[str], RunOutcome | None],
    trouble: Callable[[Exception], None],
    budget_s: float = BUDGET_S,
) -> list[str]:
    """Finish every unfinished record of ours (of both jobs) whose Dagster run is over, as the run
    ended, and take our ids whose records have expired off the shared list; returns the ids finished.

    `outcome_of` answers for a Dagster run id: None while the run is still going.
    """
    deadline = time.monotonic() + budget_s
    queued: list[tuple[str, bool]] = []  # (job id, whether it is a finish), in the batch's order
    try:
        client = tracker.connect()
        if client is None:
            return []
        unlist = client.register_script(_UNLIST_IF_GONE)
        batch = client.pipeline(transaction=False)
        try:
            ids = list(dict.fromkeys(_own_ids(client, deadline)))  # a scan may repeat an id
            for job_id, raw in zip(ids, _read(client, ids, deadline), strict=True):
                if raw is None:  # expired (or a key of another type, which the script leaves listed)
                    unlist(keys=[job_key(job_id), STATUS_LIST], args=[job_id], client=batch)
                    queued.append((job_id, False))
                elif (finished := _finished(job_id, raw, outcome_of, trouble, deadline)) is not None:
                    compare_and_set(client, job_id, raw, finished, tracker.ttl_seconds, via=batch)
                    queued.append((job_id, True))
        except _OutOfTime as exc:  # what was found so far is still written
            trouble(exc)
        # One round trip for every change; each entry fails or succeeds on its own.
        results = batch.execute(raise_on_error=False) if queued else []
    except Exception as exc:  # a side channel: never fails the run
        trouble(exc)
        return []
    return [
        job_id for (job_id, finish), result in zip(queued, results, strict=True) if finish and result == 1
    ]


def _own_ids(client: redis.Redis, deadline: float) -> Iterator[str]:
    """Every id of ours in the shared list, however many other jobs it lists."""
    cursor = 0
    while True:
        _check(deadline)
        cursor, members = client.zscan(STATUS_LIST, cursor, match=_SCAN_MATCH, count=_SCAN_COUNT)
        yield from (str(member) for member, _score in members if OWN_ID.fullmatch(str(member)))
        if cursor == 0:
            return


def _read(client: redis.Redis, ids: list[str], deadline: float) -> list[str | None]:
    """The records' raw values; MGET reads a key of another type as None instead of failing."""
    reads: list[str | None] = []
    for start in range(0, len(ids), _READ_CHUNK):
        _check(deadline)
        values = client.mget([job_key(job_id) for job_id in ids[start : start + _READ_CHUNK]])
        reads.extend(value if isinstance(value, str) else None for value in values)
    return reads


def _finished(
    job_id: str,
    raw: str,
    outcome_of: Callable[[str], RunOutcome | None],
    trouble: Callable[[Exception], None],
    deadline: float,
) -> dict[str, Any] | None:
    """The record finished as its run ended, or None to leave it (not ours, finished, still going)."""
    record = own_record(job_id, raw)
    if record is None or record.get("status") not in UNFINISHED:
        return None
    _check(deadline)
    try:
        outcome = outcome_of(record["dagster_run_id"])
    except Exception as exc:  # one run Dagster cannot answer for must not stop the others' check
        trouble(exc)
        return None
    return None if outcome is None else outcome.applied_to(record)


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise _OutOfTime()
