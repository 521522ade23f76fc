"""How our records are named and written in the camera system's job tracker (Redis): their keys, our ids
(as opposed to the camera system's own jobs in the same list), and the compare-and-set every write uses."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis

STATUS_LIST = "job:status:list"
_PREFIXES = {"data_cleanup": "cleanup", "orphaned_file_cleanup": "orphan-cleanup"}
# Our ids, as opposed to the camera system's own `cleanup-YYYYmmdd-HHMMSS` and any other job's.
OWN_ID = re.compile(rf"(?:{'|'.join(map(re.escape, _PREFIXES.values()))})-\d{{8}}-\d{{6}}-.{{8}}")

# Replace a record only if it is still what the writer read, and list its id in the same step.
# KEYS: record, status list. ARGV: the value read ('' for none), the new value, TTL, score, job id.
_COMPARE_AND_SET = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return 1
"""


def job_key(job_id: str) -> str:
    """The Redis key of one job's record."""
    return f"job:{job_id}"


def job_id_of(job_type: str, created_at: datetime, run_id: str) -> str:
    """`cleanup-YYYYmmdd-HHMMSS-<run id's first 8 characters>`, as the camera system names its jobs."""
    return f"{_PREFIXES[job_type]}-{created_at.astimezone(UTC):%Y%m%d-%H%M%S}-{run_id[:8]}"


def own_record(job_id: str, raw: str) -> dict[str, Any] | None:
    """The record if it is one of ours (written by a board of this pipeline for the Dagster run it
    names), else None: the camera system's own jobs share the list and are never ours to change."""
    try:
        record = json.loads(raw)
        if not isinstance(record, dict) or not isinstance(record.get("dagster_run_id"), str):
            return None
        created = datetime.fromisoformat(str(record.get("created_at")))
        expected = job_id_of(str(record.get("job_type")), created, record["dagster_run_id"])
    except (ValueError, KeyError, TypeError):
        return None
    return record if expected == job_id else None


def compare_and_set(
    client: redis.Redis, job_id: str, read: str | None, record: Mapping[str, Any], ttl: int, via: Any = None
) -> Any:
    """Write `record` unless the stored one is no longer `read` (None: there was none), and list its id;
    1 if written, 0 if not. `via`: a pipeline of `client` to queue the call on instead."""
    score = datetime.fromisoformat(str(record["created_at"])).timestamp()
    script = client.register_script(_COMPARE_AND_SET)
    args: list[str | int | float] = [read or "", json.dumps(record, default=str), ttl, score, job_id]
    return script(keys=[job_key(job_id), STATUS_LIST], args=args, client=via or client)
