"""A row purge interrupted (a KeyboardInterrupt, as Ctrl-C or Dagster's Terminate raises it) after it has
deleted rows, wherever the interrupt lands: the interrupt goes on unchanged, and the counts its caller
handed it (`committed`) hold every row gone, the partitions dropped whole (PostgreSQL) and the batches
committed."""

import pytest

from retention_pipeline.core import purge
from retention_pipeline.core.purge import loop, partition_ddl
from retention_pipeline.core.stats import RowCounts
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.core.test_partitions import _timestamps, log_world
from retention_pipeline_tests.factories import CameraWorld

# The camera system's real shape too: no path indexes, CASCADE / SET NULL children, uuid alerts.
pytestmark = both_shapes

__all__ = ["log_world"]  # a fixture


@pytest.mark.parametrize(
    "where", ["while_dropping_the_partitions", "between_the_partitions_and_the_batches", "at_the_final_flush"]
)
def test_an_interrupted_purge_carries_every_row_it_deleted(
    log_world: CameraWorld, monkeypatch: pytest.MonkeyPatch, where: str
):
    world = log_world
    before = len(_timestamps(world.engine))
    if where == "while_dropping_the_partitions":
        if world.engine.dialect.name != "postgresql":
            pytest.skip("SQLite has no partitions")
        real_drop, drops = partition_ddl.drop, [0]

        def interrupted_drop(engine, name):
            drops[0] += 1
            if drops[0] == 3:
                raise KeyboardInterrupt
            return real_drop(engine, name)

        monkeypatch.setattr(partition_ddl, "drop", interrupted_drop)
    elif where == "between_the_partitions_and_the_batches":

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(loop, "table_batches", interrupted)
    else:  # every batch committed: the flush to disk and the "done" line still to come
        real_flush, flushes = loop.flush_commits, [0]

        def interrupted(engine):
            flushes[0] += 1
            if flushes[0] == 1:
                raise KeyboardInterrupt
            return real_flush(engine)

        monkeypatch.setattr(loop, "flush_commits", interrupted)

    committed = RowCounts()
    with pytest.raises(KeyboardInterrupt) as stopped:  # a bare one would end the test session
        purge.purge_table(world.engine, "logs", world.plan().expiry, 2, committed=committed)

    gone = before - len(_timestamps(world.engine))
    assert stopped.type is KeyboardInterrupt  # the interrupt itself, for Dagster to end the run by
    if where == "while_dropping_the_partitions":
        # P1 and P2 (two rows each) dropped; P3, detached at the interrupt, is the next run's to drop and
        # count, as after a kill.
        assert committed.deleted == 4
        return
    assert committed.deleted == gone
    if where == "at_the_final_flush":
        assert gone == 11
    elif world.engine.dialect.name == "postgresql":  # P1-P4 dropped whole, the batches not begun
        assert gone == 8
