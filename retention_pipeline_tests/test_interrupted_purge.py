"""A row purge interrupted (Terminate in the UI) after some of its batches committed: the run still ends
CANCELED, and its tags and `status` report the rows those batches deleted."""

import os
import signal

import dagster as dg
import pytest

from retention_pipeline.core.purge import sqlite
from retention_pipeline.core.schema import detections
from retention_pipeline.history import committed_counts, recent_cleanup_runs
from retention_pipeline.tags import EXCLUSIVE_TAGS
from retention_pipeline_tests.dagster_helpers import environment_for, plan_config
from retention_pipeline_tests.factories import CameraWorld
from retention_pipeline_tests.test_run_lock import data_cleanup_in_process


def test_a_terminated_row_purge_reports_the_batches_it_committed(
    world: CameraWorld, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    for name, value in environment_for(world).items():
        monkeypatch.setenv(name, value)
    for _ in range(40):
        world.detection(world.old())
    real, commits = sqlite.WriterTurns.after_commit, [0]

    def terminated_after_the_third_batch(turns: sqlite.WriterTurns) -> None:
        commits[0] += 1
        if commits[0] == 3:  # the UI's Terminate marks the run CANCELING, then signals its process
            instance.report_run_canceling(instance.get_runs(limit=1)[0])
            os.kill(os.getpid(), signal.SIGINT)
        real(turns)

    monkeypatch.setattr(sqlite.WriterTurns, "after_commit", terminated_after_the_third_batch)
    config = plan_config(
        dry_run=False, reference_time=world.now.isoformat(), batch_size=5, transaction_target_ms=0
    )

    run = dg.execute_job(
        dg.reconstructable(data_cleanup_in_process),
        instance,
        run_config=config,
        tags=EXCLUSIVE_TAGS,
        raise_on_error=False,
    )

    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
    deleted = 40 - world.count(detections)
    assert 15 <= deleted < 40
    assert committed_counts(instance, run.run_id)["detections_deleted"] == deleted
    tags = instance.get_run_by_id(run.run_id).tags
    assert (tags["failed_step"], tags["detections_deleted"]) == ("purge_detections", str(deleted))
    [row] = recent_cleanup_runs(instance, 1)
    assert row["detections_deleted"] == deleted
