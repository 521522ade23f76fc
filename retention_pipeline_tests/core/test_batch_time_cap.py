"""PostgreSQL cuts a batch off at its time cap: the batch rolls back and is repeated smaller, so no
transaction holds the camera rows' locks much past the target, whatever stalls the database."""

import threading

import dagster as dg
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from retention_pipeline.core import db, purge
from retention_pipeline.core.cleanup import prepare_database
from retention_pipeline.core.purge import loop, postgresql
from retention_pipeline.core.purge.batch import Batch
from retention_pipeline.core.queries import expiring
from retention_pipeline.core.schema import alerts, detections, events, gpu_stats, retention_file_queue
from retention_pipeline.core.tables import Expiry
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.core.test_writers import writer_holding_a_transaction
from retention_pipeline_tests.dagster_helpers import execute, failure_messages, plan_config
from retention_pipeline_tests.factories import CameraWorld

pytestmark = both_shapes


def _slow_deletes(
    world: CameraWorld, seconds: float, only_id: int | None = None, table: str = "detections"
) -> None:
    """Every deleted row of `table` (or only one) costs `seconds`, like a stalled disk would."""
    prepare_database(world.engine)
    condition = "true" if only_id is None else f"OLD.id = {int(only_id)}"
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF {condition} THEN PERFORM pg_sleep({float(seconds)}); END IF; RETURN OLD; END $$"
            )
        )
        assert table in ("detections", "events", "gpu_stats")
        conn.execute(
            text(f"CREATE TRIGGER slow BEFORE DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION slow_delete()")
        )


def test_batches_past_the_cap_roll_back_and_are_repeated_smaller_until_every_expired_row_is_gone(
    postgresql_only: None, world: CameraWorld
):
    expired = [world.detection(world.old()) for _ in range(120)]
    kept = world.detection(world.recent())
    _slow_deletes(world, 0.003)  # the first batch (100 rows) would hold its locks for 300 ms

    counts = purge.purge_table(
        world.engine, "detections", world.cutoff, 1000, delete_images=False, target_s=0.05
    )

    assert world.ids(detections) == {kept}
    assert counts.deleted == len(expired)
    assert counts.retries >= 2  # 100 and 50 rows ran past the 80 ms cap
    # Wall-clock ceilings fail on a loaded machine; what the cap guarantees does not: a statement that
    # committed ran under 80 ms at 3 ms a row, so no batch held more than 26 rows (uncapped, the first
    # batch commits all 100 and the purge takes 4 batches).
    assert counts.batches >= len(expired) / 26
    assert counts.longest_transaction_ms >= 80  # the rolled-back attempts' held time is reported
    with world.engine.connect() as conn:  # the cap was the batches' own, not left on pooled connections
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1min"


def test_event_batches_past_the_cap_roll_back_with_their_alerts_and_are_repeated_smaller(
    postgresql_only: None, world: CameraWorld
):
    expired = [world.event(world.old(), alerts_count=1) for _ in range(60)]
    kept = world.event(world.recent(), alerts_count=1)
    _slow_deletes(world, 0.004, table="events")  # 100 events would take 400 ms, 25 take 100 ms

    counts = purge.purge_table(world.engine, "events", world.cutoff, 1000, target_s=0.05)

    assert world.ids(events) == {kept}
    assert (counts.deleted, counts.children_deleted, world.count(alerts)) == (len(expired), len(expired), 1)
    assert counts.retries >= 2
    assert counts.batches >= len(expired) / 20  # 4 ms an event under the 80 ms cap (uncapped: 1 batch)
    assert counts.longest_transaction_ms >= 80


def test_the_cap_bounds_an_event_batch_s_statements_together_not_each_one(
    postgresql_only: None, world: CameraWorld
):
    ids = [world.event(world.old(), alerts_count=1) for _ in range(10)]
    prepare_database(world.engine)
    with world.engine.begin() as conn:  # deleting one event costs 50 ms, and deleting its alert 50 more
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION slow_event_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF (to_jsonb(OLD) ->> TG_ARGV[0])::int = {ids[4]}"
                " THEN PERFORM pg_sleep(0.05); END IF; RETURN OLD; END $$"
            )
        )
        for table, event_id in (("events", "id"), ("alerts", "event_id")):
            trigger = f"CREATE TRIGGER slow BEFORE DELETE ON {table} FOR EACH ROW"
            conn.execute(text(trigger + f" EXECUTE FUNCTION slow_event_delete('{event_id}')"))

    # Each statement of that event's batch ends well within the 80 ms cap; the batch does not.
    with pytest.raises(purge.BatchTooSlow, match="events: 5 batches of a single row"):
        purge.purge_table(world.engine, "events", world.cutoff, 1000, target_s=0.05)

    assert world.ids(events) == set(ids[4:])
    assert world.count(alerts) == len(ids[4:])


def test_without_a_target_nothing_is_cut_off_and_the_slow_batch_holds_its_locks(
    postgresql_only: None, world: CameraWorld
):
    for _ in range(100):
        world.detection(world.old())
    _slow_deletes(world, 0.003)

    counts = purge.purge_table(
        world.engine, "detections", world.cutoff, 100, delete_images=False, target_s=None
    )

    assert (counts.deleted, counts.batches, counts.retries) == (100, 1, 0)
    assert counts.longest_transaction_ms >= 300


def test_a_single_row_slower_than_the_cap_stops_the_purge_with_advice_and_keeps_what_was_done(
    postgresql_only: None, world: CameraWorld
):
    ids = [world.detection(world.old()) for _ in range(10)]
    _slow_deletes(world, 0.3, only_id=ids[4])

    with pytest.raises(purge.BatchTooSlow, match="TRANSACTION_TARGET_MS=50"):
        purge.purge_table(world.engine, "detections", world.cutoff, 1000, delete_images=False, target_s=0.05)

    assert world.ids(detections) == set(ids[4:])


def test_one_row_batches_cut_off_now_and_then_never_add_up_to_giving_up(world: CameraWorld):
    world.gpu(world.old())
    limits: list[int] = []

    def every_other_batch_overruns(after_id: int, until_id: int, limit: int) -> Batch:
        limits.append(limit)
        if len(limits) > 2 * loop.ONE_ROW_OVERRUNS * 2:
            return Batch(None)
        if len(limits) % 2:
            return Batch(after_id, seconds=0.09, overran=True)
        return Batch(after_id, deleted=1, seconds=0.001)

    counts = loop._purge_in_batches(
        world.engine,
        "gpu_stats",
        expiring.select_expired_id_span(Expiry.of(world.cutoff), "gpu_stats"),
        every_other_batch_overruns,
        purge.BatchSizer(1, target_s=0.05),  # every batch is a single row
        lambda _message: None,
        0,
    )

    assert set(limits) == {1}
    assert (counts.retries, counts.batches) == (2 * loop.ONE_ROW_OVERRUNS, 2 * loop.ONE_ROW_OVERRUNS)
    assert round(counts.longest_transaction_ms) == 90


def _job_meeting_one_slow_row(world: CameraWorld, ids: list[int], table: str) -> dg.ExecuteInProcessResult:
    """data_cleanup with a 50 ms target (80 ms cap) where deleting the fifth row of `table` takes 300 ms."""
    _slow_deletes(world, 0.3, only_id=ids[4], table=table)
    config = plan_config(dry_run=False, reference_time=world.now.isoformat(), transaction_target_ms=50)
    with dg.instance_for_test() as instance:
        return execute(world, instance, config)


def _failed_step(result: dg.ExecuteInProcessResult) -> tuple[str, int]:
    failure = next(e for e in result.all_events if e.is_step_failure)
    return failure.step_key, failure.step_failure_data.user_failure_data.metadata["rows_deleted"].value


def test_through_the_job_a_row_slower_than_the_cap_fails_the_step_with_the_advice_and_no_file_is_lost(
    postgresql_only: None, world: CameraWorld
):
    ids = [world.detection(world.old()) for _ in range(10)]

    result = _job_meeting_one_slow_row(world, ids, "detections")

    assert not result.success
    assert "detections: 5 batches of a single row in a row ran past 80 ms" in failure_messages(result)
    assert _failed_step(result) == ("purge_detections", 4)
    assert world.ids(detections) == set(ids[4:])
    assert world.count(retention_file_queue) == 4  # their thumbnails wait for the next run


def test_through_the_job_a_gpu_stats_row_slower_than_the_cap_fails_its_step_with_counts_and_no_retry(
    postgresql_only: None, world: CameraWorld
):
    ids = [world.gpu(world.old()) for _ in range(10)]

    result = _job_meeting_one_slow_row(world, ids, "gpu_stats")

    assert not result.success
    assert "gpu_stats: 5 batches of a single row in a row ran past 80 ms" in failure_messages(result)
    assert _failed_step(result) == ("purge_gpu_stats", 4)
    assert world.ids(gpu_stats) == set(ids[4:])


def test_gpu_stats_batches_past_the_cap_roll_back_and_are_repeated_smaller(
    postgresql_only: None, world: CameraWorld
):
    expired = [world.gpu(world.old()) for _ in range(120)]
    kept = world.gpu(world.recent())
    _slow_deletes(world, 0.003, table="gpu_stats")

    counts = purge.purge_table(world.engine, "gpu_stats", world.cutoff, 1000, target_s=0.05)

    assert world.ids(gpu_stats) == {kept}
    assert counts.deleted == len(expired)
    assert counts.retries >= 2  # uncapped, the first batch commits 100 rows in 300 ms and none is repeated
    assert counts.batches >= len(expired) / 26
    with world.engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1min"


def test_a_gpu_stats_row_slower_than_the_cap_stops_the_purge_with_advice(
    postgresql_only: None, world: CameraWorld
):
    ids = [world.gpu(world.old()) for _ in range(10)]
    _slow_deletes(world, 0.3, only_id=ids[4], table="gpu_stats")

    with pytest.raises(purge.BatchTooSlow, match="gpu_stats: 5 batches of a single row"):
        purge.purge_table(world.engine, "gpu_stats", world.cutoff, 1000, target_s=0.05)

    assert world.ids(gpu_stats) == set(ids[4:])


def _lock_detection(detection_id: int):
    def lock(conn: Connection) -> None:
        conn.execute(select(detections.c.id).where(detections.c.id == detection_id).with_for_update())

    return lock


@pytest.mark.parametrize("target_s", [0.05, None])
def test_a_capped_batch_stops_waiting_for_a_writers_row_lock_within_its_cap(
    postgresql_only: None, world: CameraWorld, monkeypatch: pytest.MonkeyPatch, target_s: float | None
):
    # The connections' lock_timeout is 5 s here: a batch that waited by it would still be waiting, holding
    # the rows it locked before the writer's, when the writer commits after 1.5 s.
    monkeypatch.setattr(db, "PG_LOCK_TIMEOUT_MS", 5000)
    engine = db.make_engine(world.engine.url.render_as_string(hide_password=False))
    expired = [world.detection(world.old(), thumbnail=None) for _ in range(5)]
    prepare_database(world.engine)
    progress: list[str] = []

    with writer_holding_a_transaction(world.engine, _lock_detection(expired[2]), 1.5):
        counts = purge.purge_table(
            engine,
            "detections",
            world.cutoff,
            1000,
            delete_images=False,
            progress=progress.append,
            target_s=target_s,
        )
    engine.dispose()

    assert world.ids(detections) == set()
    assert counts.deleted == len(expired)
    if target_s is None:  # no cap: the batch waited for the writer and committed once
        assert (counts.retries, counts.batches) == (0, 1)
        assert counts.longest_transaction_ms >= 1000
    else:  # its lock wait ended at 40 ms (half the 80 ms cap) as a lock timeout, repeated after a pause
        assert counts.retries >= 1
        assert any("lock timeout" in message for message in progress), progress
        # The failed attempt held the two rows it had locked for those 40 ms: that counts, though the
        # batch that committed took a few ms.
        assert 40 <= counts.longest_transaction_ms < 1000


def test_a_lock_statement_that_runs_past_the_cap_is_cut_off_and_repeated_smaller(
    postgresql_only: None, world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    # Lock waits allowed past the cap, so the 80 ms statement cap ends this one: the lock statement is
    # under the batch's cap like the statements after it (it used to run under the connection's 60 s).
    monkeypatch.setattr(postgresql, "LOCK_WAIT_SHARE", 4.0)
    expired = [world.detection(world.old(), thumbnail=None) for _ in range(5)]
    prepare_database(world.engine)
    progress: list[str] = []
    cut_off = threading.Event()

    def noting(message: str) -> None:
        progress.append(message)
        if "rolled back" in message:
            cut_off.set()

    # The writer holds its row lock until a batch has been cut off by it (at most 5 s), however long a
    # loaded machine takes to get there, then lets the repeated batch through.
    with writer_holding_a_transaction(world.engine, _lock_detection(expired[2]), cut_off):
        counts = purge.purge_table(
            world.engine,
            "detections",
            world.cutoff,
            1000,
            delete_images=False,
            progress=noting,
            target_s=0.05,
        )

    assert world.ids(detections) == set()
    assert counts.deleted == len(expired)
    assert counts.retries >= 1
    assert any("ran past 80 ms and was rolled back" in message for message in progress), progress
    assert not any("lock timeout" in message for message in progress), progress
