"""PostgreSQL cuts a batch off at its time cap: the batch rolls back and is repeated smaller, so no
transaction holds the camera rows' locks much past the target, whatever stalls the database."""

import pytest
from sqlalchemy import text

from retention_pipeline.core import purge
from retention_pipeline.core.cleanup import prepare_database
from retention_pipeline.core.schema import detections
from retention_pipeline_tests.factories import CameraWorld


def _slow_deletes(world: CameraWorld, seconds: float, only_id: int | None = None) -> None:
    """Every deleted detection (or only one) costs `seconds`, like a stalled disk would."""
    prepare_database(world.engine)
    condition = "true" if only_id is None else f"OLD.id = {int(only_id)}"
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF {condition} THEN PERFORM pg_sleep({float(seconds)}); END IF; RETURN OLD; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER slow BEFORE DELETE ON detections FOR EACH ROW EXECUTE FUNCTION slow_delete()"
            )
        )


def test_batches_past_the_cap_roll_back_and_are_repeated_smaller_until_every_expired_row_is_gone(
    postgresql_only: None, world: CameraWorld
):
    expired = [world.detection(world.old()) for _ in range(120)]
    kept = world.detection(world.recent())
    _slow_deletes(world, 0.002)  # the first batch (100 rows) would hold its locks for 200 ms

    counts = purge.purge_detections(world.engine, world.cutoff, 1000, False, target_s=0.05)

    assert world.ids(detections) == {kept}
    assert counts.deleted == len(expired)
    assert counts.retries >= 2  # 100 and 50 rows ran past the 80 ms cap
    assert counts.longest_transaction_ms < 150  # the rolled-back attempts count too


def test_without_a_target_nothing_is_cut_off_and_the_slow_batch_holds_its_locks(
    postgresql_only: None, world: CameraWorld
):
    for _ in range(100):
        world.detection(world.old())
    _slow_deletes(world, 0.002)

    counts = purge.purge_detections(world.engine, world.cutoff, 100, False, target_s=None)

    assert (counts.deleted, counts.batches, counts.retries) == (100, 1, 0)
    assert counts.longest_transaction_ms >= 200


def test_a_single_row_slower_than_the_cap_stops_the_purge_with_advice_and_keeps_what_was_done(
    postgresql_only: None, world: CameraWorld
):
    ids = [world.detection(world.old()) for _ in range(10)]
    _slow_deletes(world, 0.3, only_id=ids[4])

    with pytest.raises(purge.BatchTooSlow, match="TRANSACTION_TARGET_MS=50"):
        purge.purge_detections(world.engine, world.cutoff, 1000, False, target_s=0.05)

    assert world.ids(detections) == set(ids[4:])
