"""An emergency pass that fails part-way (a row batch, a file chunk, a lost run lock): the rows and files it
had deleted are counted in the run's tags, `status` and the job record, as the passes before it are."""

import json
from datetime import timedelta
from typing import Any

import dagster as dg
import pytest

from retention_pipeline.core.lock import LOST_MESSAGE, RunLockLost
from retention_pipeline.core.purge import loop
from retention_pipeline.core.schema import detections
from retention_pipeline.failed_runs import first_failure, step_failure_reason
from retention_pipeline.history import cleanup_status
from retention_pipeline.settings import Settings
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.dagster_helpers import failure_messages
from retention_pipeline_tests.factories import THUMBS, CameraWorld
from retention_pipeline_tests.test_disk_pressure import FixedDisk, emergency_run
from retention_pipeline_tests.test_file_step_failure import _seventh_chunk_fails

# The camera system's real shape too: no path indexes, CASCADE / SET NULL children, uuid alerts.
pytestmark = both_shapes

DATABASE_ERROR = "server closed the connection unexpectedly"


def _oldest_day(world: CameraWorld, extra: int) -> None:
    """`extra` more detections (with their thumbnails) on the oldest of `full`'s 30 days, which the first
    emergency pass (29 days) deletes with the one already there."""
    for _ in range(extra):
        world.detection(world.now - timedelta(days=29, hours=12))


def _thumbnails(world: CameraWorld) -> int:
    return sum(1 for path in (world.media / THUMBS).rglob("*") if path.is_file())


def third_batch_fails(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Every purge's 3rd batch of the run meets `error` (the normal pass has nothing expired: no batch)."""
    real, calls = loop.table_batches, [0]

    def batches(*args: Any, **kwargs: Any) -> Any:
        step = real(*args, **kwargs)

        def failing(*batch: Any) -> Any:
            calls[0] += 1
            if calls[0] == 3:
                raise error
            return step(*batch)

        return failing

    monkeypatch.setattr(loop, "table_batches", batches)


def _reported(instance: dg.DagsterInstance, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's tags and what `status` says of it."""
    status = cleanup_status(instance, Settings.from_env(), limit=5)
    assert status["last_run"]["run_id"] == run_id
    return dict(instance.get_run_by_id(run_id).tags), status


@pytest.mark.parametrize(
    "error, words",
    [(RuntimeError(DATABASE_ERROR), DATABASE_ERROR), (RunLockLost(LOST_MESSAGE), "lost its lock")],
    ids=["database_error", "lock_lost"],
)
def test_a_pass_failing_at_a_later_row_batch_counts_the_batches_it_committed(
    full: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch, error: Exception, words: str
):
    _oldest_day(full, 5)
    third_batch_fails(monkeypatch, error)

    result = emergency_run(full, instance, FixedDisk(free=5.0), batch_size=2, transaction_target_ms=0)

    gone = 35 - full.count(detections)
    assert not result.success and words in failure_messages(result)
    # What operators read (the CLI, the job tracker): the error's own words, not only its chained cause.
    failure = first_failure(instance, result.run_id)
    assert failure is not None and words in step_failure_reason(*failure)
    assert gone == 4  # two batches of two committed, the third failed
    tags, status = _reported(instance, result.run_id)
    assert (tags["failed_step"], tags["detections_deleted"]) == ("relieve_disk_pressure", str(gone))
    assert status["last_run"]["stats"]["detections_deleted"] == gone
    assert status["runs"][0]["headline"]["detections_deleted"] == str(gone)


@pytest.mark.parametrize(
    "error, words",
    [(RuntimeError(DATABASE_ERROR), DATABASE_ERROR), (RunLockLost(LOST_MESSAGE), "lost its lock")],
    ids=["database_error", "lock_lost"],
)
def test_a_pass_whose_file_step_fails_counts_its_rows_and_the_files_it_deleted(
    full: CameraWorld,
    instance,
    redis_server,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    words: str,
):
    monkeypatch.setenv("JOB_STATUS_REDIS_URL", redis_server.url)
    _oldest_day(full, 40)
    _seventh_chunk_fails(monkeypatch, error)
    thumbs_before = _thumbnails(full)

    result = emergency_run(full, instance, FixedDisk(free=5.0))

    files_gone = thumbs_before - _thumbnails(full)
    rows_gone = 70 - full.count(detections)
    assert not result.success and words in failure_messages(result)
    # Every row of the day went; of its 41 thumbnails, those of every file chunk but the 7th.
    assert rows_gone == 41 and 30 <= files_gone < 41
    tags, status = _reported(instance, result.run_id)
    assert (tags["detections_deleted"], tags["files_deleted"]) == (str(rows_gone), str(files_gone))
    stats = status["last_run"]["stats"]
    assert (stats["detections_deleted"], stats["thumbnails_deleted"]) == (rows_gone, files_gone)
    client = redis_server.client()
    [record] = [json.loads(client.get(f"job:{job_id}")) for job_id in client.zrange("job:status:list", 0, -1)]
    assert record["status"] == "failed" and words in record["error"]
    assert (record["result"]["detections_deleted"], record["result"]["thumbnails_deleted"]) == (
        rows_gone,
        files_gone,
    )
