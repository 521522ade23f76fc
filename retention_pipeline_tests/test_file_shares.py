"""How the file step splits the queue: one share under the in-process executor, where shares run one after
another and each would start its drain's overlap of reference checks and unlinks again; shares of a fixed
size where they run in parallel; the run's file_chunk_size wherever it is given."""

import os

import dagster as dg
import pytest

from retention_pipeline.core import cleanup
from retention_pipeline.core.cleanup import clean_files, file_chunks, prepare_database
from retention_pipeline.core.db import write_transaction
from retention_pipeline.core.purge.file_queue import queue_files
from retention_pipeline.tags import EXCLUSIVE_TAGS
from retention_pipeline_tests.dagster_helpers import execute, plan_config, point_environment_at
from retention_pipeline_tests.factories import THUMBS, CameraWorld
from retention_pipeline_tests.test_run_lock import data_cleanup_on_either_executor


def _shares(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        s.step_key for s in instance.get_run_step_stats(run_id) if s.step_key.startswith("delete_expired")
    ]


def test_the_in_process_file_step_is_one_share_however_long_the_queue(
    world: CameraWorld, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(cleanup, "PARALLEL_FILE_CHUNK", 2)  # 7 files would make 4 parallel shares
    thumbs = world.old_thumbnails(7)

    result = execute(world, instance, plan_config(dry_run=False, reference_time=world.now.isoformat()))

    assert result.success
    assert len(_shares(instance, result.run_id)) == 1
    assert result.output_for_node("report_cleanup").thumbnails_deleted == 7
    assert not any(os.path.exists(world.media / thumb) for thumb in thumbs)


def test_a_run_the_run_config_puts_in_process_gets_one_file_share(
    world: CameraWorld, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    # A deployment on multi_or_in_process_executor told `in_process` runs its shares one after another.
    point_environment_at(world, monkeypatch)
    monkeypatch.setattr(cleanup, "PARALLEL_FILE_CHUNK", 2)
    thumbs = world.old_thumbnails(7)
    config = {
        **plan_config(dry_run=False, reference_time=world.now.isoformat()),
        "execution": {"config": {"in_process": {}}},
    }

    result = dg.execute_job(
        dg.reconstructable(data_cleanup_on_either_executor), instance, run_config=config, tags=EXCLUSIVE_TAGS
    )

    assert result.success
    assert len(_shares(instance, result.run_id)) == 1
    assert not any(os.path.exists(world.media / thumb) for thumb in thumbs)


def test_a_runs_file_chunk_size_splits_the_in_process_file_step_too(
    world: CameraWorld, instance: dg.DagsterInstance
):
    thumbs = world.old_thumbnails(7)
    config = plan_config(dry_run=False, reference_time=world.now.isoformat(), file_chunk_size=2)

    result = execute(world, instance, config)

    assert result.success
    assert len(_shares(instance, result.run_id)) == 4
    assert result.output_for_node("report_cleanup").thumbnails_deleted == 7
    assert not any(os.path.exists(world.media / thumb) for thumb in thumbs)


def test_parallel_shares_default_to_a_fixed_size_and_together_drain_the_whole_queue(
    world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(cleanup, "PARALLEL_FILE_CHUNK", 3)
    thumbs = [world.file(f"{THUMBS}/q{i}.jpg", 10) for i in range(7)]
    prepare_database(world.engine)
    with write_transaction(world.engine) as conn:
        queue_files(conn, {thumb: "thumbnail" for thumb in thumbs})
    plan = world.plan()

    one_after_another = list(file_chunks(world.engine, plan, parallel=False))
    parallel = list(file_chunks(world.engine, plan, parallel=True))
    counts = [clean_files(world.engine, plan, lambda _message: None, chunk) for chunk in parallel]

    assert len(one_after_another) == 1 and len(parallel) == 3
    assert sum(c.thumbnails_deleted for c in counts) == 7
    assert not any(os.path.exists(world.media / thumb) for thumb in thumbs)
