"""A cleanup that meets the camera system's own locks waits briefly or retries, and completes."""

import threading
import time

from sqlalchemy import select

from retention_pipeline.core.db import write_transaction
from retention_pipeline.core.schema import detections
from retention_pipeline_tests.factories import CameraWorld


def test_a_batch_blocked_by_a_writers_lock_completes_after_it_is_released(world: CameraWorld):
    expired = [world.detection(world.old(), thumbnail=None) for _ in range(5)]
    kept = world.detection(world.recent(), thumbnail=None)
    locked = threading.Event()

    def writer_holding_a_lock() -> None:
        # On PostgreSQL a row lock on an expired detection; on SQLite the database's write lock.
        with write_transaction(world.engine) as conn:
            conn.execute(select(detections.c.id).where(detections.c.id == expired[2]).with_for_update())
            conn.execute(detections.update().where(detections.c.id == kept).values(object_type="car"))
            locked.set()
            time.sleep(1.5)

    writer = threading.Thread(target=writer_holding_a_lock)
    writer.start()
    locked.wait(5)
    started = time.perf_counter()
    stats = world.run(batch_size=2)
    writer.join()

    assert world.ids(detections) == {kept}
    assert stats.detections_deleted == 5
    assert time.perf_counter() - started >= 1.0  # it really waited for the writer
    if world.engine.dialect.name == "postgresql":
        assert stats.db_retries >= 1  # lock_timeout (500 ms) ended the wait; the batch was repeated
