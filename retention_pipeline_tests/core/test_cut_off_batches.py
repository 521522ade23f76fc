"""Batches cut off at their time cap never fail a run: each is rolled back cleanly and repeated, and no
connection is ever used again in an aborted transaction (InFailedSqlTransaction), on either schema."""

from sqlalchemy import text

from retention_pipeline.core.cleanup import prepare_database, run_cleanup
from retention_pipeline.core.lock import ExclusiveRunLock
from retention_pipeline.core.schema import detections, events
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import CameraWorld

ROUNDS = 20


def _jittery_deletes(world: CameraWorld) -> None:
    """PostgreSQL: every deleted detection costs 0-4 ms at random, so batches end anywhere around the
    cap, right at it included."""
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION jittery_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " PERFORM pg_sleep(random() * 0.004); RETURN OLD; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER jittery BEFORE DELETE ON detections"
                " FOR EACH ROW EXECUTE FUNCTION jittery_delete()"
            )
        )


def _threats(world: CameraWorld, detection_ids: list[int]) -> None:
    """Camera shape: rows in threat_detections, whose detection_id has no index (each cascade scans)."""
    if world.camera_shape:
        with world.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO threat_detections (detection_id) VALUES (:d)"),
                [{"d": d} for d in detection_ids],
            )


@both_shapes
def test_twenty_purges_whose_batches_keep_hitting_the_cap_all_succeed_with_the_rows_the_rules_expect(
    world: CameraWorld,
):
    prepare_database(world.engine)
    if world.engine.dialect.name == "postgresql":
        _jittery_deletes(world)
    kept_detections: set[int] = set()
    kept_events: set[int] = set()
    lock = ExclusiveRunLock(world.engine)
    lock.acquire()  # as in a run: every batch's commit checks the lock first
    try:
        for _ in range(ROUNDS):
            retained_event = world.event(world.recent(), clip=False)
            kept_events.add(retained_event)
            expired = [world.detection(world.old(), thumbnail=False) for _ in range(40)]
            kept_by_link = world.detection(world.old(), thumbnail=False, events_=(retained_event,))
            kept_detections |= {kept_by_link, world.detection(world.recent(), thumbnail=False)}
            _threats(world, [*expired, kept_by_link])

            stats = run_cleanup(world.engine, world.plan(transaction_target_ms=5, delete_images=True))

            assert stats.detections_deleted == len(expired)
            assert world.ids(detections) == kept_detections
            assert world.ids(events) == kept_events
    finally:
        lock.release()
    with world.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM event_detections")).scalar() == ROUNDS
        if world.camera_shape:
            threats = conn.execute(text("SELECT count(*) FROM threat_detections")).scalar()
            assert threats == ROUNDS  # only those of the detections kept by a link
