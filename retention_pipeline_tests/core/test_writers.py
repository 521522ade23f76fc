"""A cleanup that meets the camera system's own locks waits briefly or retries, and completes."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import create_engine, event, func, insert, make_url, select, text
from sqlalchemy.engine import Connection, Engine

from retention_pipeline.core.db import make_engine, write_transaction
from retention_pipeline.core.schema import detections, event_detections, logs
from retention_pipeline_tests.factories import CameraWorld


@contextmanager
def writer_holding_a_transaction(
    engine: Engine, work: Callable[[Connection], None], seconds: float | threading.Event
) -> Iterator[None]:
    """A camera-system writer that does `work` and keeps its transaction open `seconds` longer (or until
    the event is set, 5 s at most), on a thread started (and its work done) before the body runs and
    joined after it."""
    ready = threading.Event()

    def writer() -> None:
        with write_transaction(engine) as conn:
            work(conn)
            ready.set()
            if isinstance(seconds, threading.Event):
                seconds.wait(5)
            else:
                time.sleep(seconds)

    thread = threading.Thread(target=writer)
    thread.start()
    ready.wait(5)
    try:
        yield
    finally:
        thread.join()


def test_a_batch_blocked_by_a_writers_lock_completes_after_it_is_released(world: CameraWorld):
    expired = [world.detection(world.old(), thumbnail=None) for _ in range(5)]
    kept = world.detection(world.recent(), thumbnail=None)

    def lock_a_row(conn: Connection) -> None:
        # On PostgreSQL a row lock on an expired detection; on SQLite the database's write lock.
        conn.execute(select(detections.c.id).where(detections.c.id == expired[2]).with_for_update())
        conn.execute(detections.update().where(detections.c.id == kept).values(object_type="car"))

    with writer_holding_a_transaction(world.engine, lock_a_row, 1.5):
        started = time.perf_counter()
        stats = world.run(batch_size=2)

    assert world.ids(detections) == {kept}
    assert stats.detections_deleted == 5
    assert time.perf_counter() - started >= 1.0  # it really waited for the writer
    if world.engine.dialect.name == "postgresql":
        assert stats.db_retries >= 1  # lock_timeout (500 ms) ended the wait; the batch was repeated


def test_an_expired_detection_linked_to_a_retained_event_while_its_batch_waits_is_kept(world: CameraWorld):
    expired = [world.detection(world.old(), thumbnail=None) for _ in range(4)]
    retained_event = world.event(world.recent(), clip=None)

    def link_an_old_detection(conn: Connection) -> None:
        # The link is not committed when the batch starts: the batch must wait for it (PostgreSQL: the
        # link's KEY SHARE lock on the detection; SQLite: the write lock) and then see it.
        link = {"event_id": retained_event, "detection_id": expired[1], "created_at": world.now}
        conn.execute(insert(event_detections).values(**link))

    with writer_holding_a_transaction(world.engine, link_an_old_detection, 0.3):
        stats = world.run(batch_size=10)

    assert world.ids(detections) == {expired[1]}
    assert world.count(event_detections) == 1
    assert stats.detections_deleted == 3


def test_a_young_detection_linked_while_its_batch_is_deleting_is_judged_by_a_later_batch_not_this_one(
    postgresql_only: None, world: CameraWorld
):
    # The batch locks the rows that may expire; a young one in its id range is not among them. While the
    # batch is about to delete, the camera links that young one to an old event (committed) and to a
    # retained event (committed a moment later, while the DELETE would wait on it). Judged by this
    # batch, its snapshot would see only the first link and delete a detection a retained event keeps.
    old_event, retained_event = world.event(world.old(5), clip=None), world.event(world.recent(5), clip=None)
    first = world.detection(world.old(5), thumbnail=None)
    young = world.detection(world.recent(10), thumbnail=None)
    last = world.detection(world.old(4), thumbnail=None)
    camera = create_engine(world.engine.url)
    pending: list[threading.Thread] = []

    def link_mid_batch(conn, cursor, statement, parameters, context, executemany) -> None:
        if pending or "DELETE FROM detections" not in statement:
            return
        with camera.begin() as linker:
            linker.execute(
                insert(event_detections).values(event_id=old_event, detection_id=young, created_at=world.now)
            )
        keeper = camera.connect()
        transaction = keeper.begin()
        keeper.execute(
            insert(event_detections).values(event_id=retained_event, detection_id=young, created_at=world.now)
        )

        def commit_soon() -> None:
            time.sleep(0.2)
            transaction.commit()
            keeper.close()

        pending.append(threading.Thread(target=commit_soon))
        pending[0].start()

    event.listen(world.engine, "before_cursor_execute", link_mid_batch)
    try:
        stats = world.run(transaction_target_ms=0)
    finally:
        event.remove(world.engine, "before_cursor_execute", link_mid_batch)
        for thread in pending:
            thread.join()
        camera.dispose()

    assert pending, "the camera never linked mid-batch: the scenario did not happen"
    assert young in world.ids(detections)
    assert (
        stats.detections_deleted == 2
        and first not in world.ids(detections)
        and last not in world.ids(detections)
    )
    assert world.count(event_detections) == 1  # the retained event's link; the old event went with its links


def test_each_statement_sees_rows_committed_since_its_transaction_began_whatever_the_server_default(
    postgresql_only: None, database_url: str
):
    # The keep rule's checks (a batch's DELETE sees the links committed while it waited for its row locks)
    # rely on READ COMMITTED; a server whose databases default to REPEATABLE READ must not give the
    # pipeline's transactions an older snapshot.
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    name = admin.dialect.identifier_preparer.quote(make_url(database_url).database or "")
    with admin.connect() as conn:
        conn.execute(text(f"ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'"))
    engine, writer = make_engine(database_url), make_engine(database_url)
    try:
        with write_transaction(engine) as conn:
            before = conn.execute(select(func.count()).select_from(logs)).scalar_one()
            with writer.begin() as other:
                other.execute(insert(logs).values(timestamp=datetime.now(UTC), message="late"))
            after = conn.execute(select(func.count()).select_from(logs)).scalar_one()
        assert after == before + 1
    finally:
        engine.dispose()
        writer.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {name} RESET default_transaction_isolation"))
        admin.dispose()
