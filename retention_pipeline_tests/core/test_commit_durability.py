"""PostgreSQL: purge batches commit without waiting for the disk (their row locks go at once, whatever a
checkpoint is writing), and each purge step returns only once its batches are on disk, before anything
reports them or unlinks their files."""

from collections.abc import Iterator

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from retention_pipeline.core import purge
from retention_pipeline.core.cleanup import prepare_database
from retention_pipeline.core.purge.durability import flush_commits
from retention_pipeline.core.schema import detections
from retention_pipeline_tests.factories import CameraWorld

TABLES = ("detections", "events", "gpu_stats", "logs", "retention_file_queue")


@pytest.fixture
def noted_deletes(world: CameraWorld) -> Iterator[None]:
    """Each DELETE statement on the purged tables (and the file queue) notes how its transaction will
    commit and where the WAL stood once its rows were gone. Call before the cleanup, after the rows."""
    prepare_database(world.engine)
    with world.engine.begin() as conn:
        conn.execute(text("CREATE TABLE seen_deletes (tbl text, mode text, lsn pg_lsn)"))
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION note_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " INSERT INTO seen_deletes VALUES"
                " (TG_TABLE_NAME, current_setting('synchronous_commit'), pg_current_wal_insert_lsn());"
                " RETURN NULL; END $$"
            )
        )
        for table in TABLES:
            conn.execute(
                text(
                    f"CREATE TRIGGER note AFTER DELETE ON {table}"
                    " FOR EACH STATEMENT EXECUTE FUNCTION note_delete()"
                )
            )
    yield
    with world.engine.begin() as conn:  # the database outlives the test; its camera tables are rebuilt
        conn.execute(text("DROP TABLE seen_deletes"))


def _flushed_past(conn, lsn: str) -> bool:
    return bool(
        conn.execute(text("SELECT pg_current_wal_flush_lsn() >= CAST(:l AS pg_lsn)"), {"l": lsn}).scalar()
    )


def _modes(world: CameraWorld) -> dict[str, set[str]]:
    with world.engine.connect() as conn:
        rows = conn.execute(text("SELECT tbl, mode FROM seen_deletes")).all()
    modes: dict[str, set[str]] = {}
    for table, mode in rows:
        modes.setdefault(table, set()).add(mode)
    return modes


def test_batches_commit_without_waiting_for_the_disk_and_the_file_queue_is_forgotten_waiting(
    postgresql_only: None, world: CameraWorld, request: pytest.FixtureRequest
):
    for _ in range(3):
        event = world.event(world.old(), clip=True, alerts_count=1)
        world.link(event, world.detection(world.old(), thumbnail=True))
        world.gpu(world.old())
        world.log(world.old())
    request.getfixturevalue("noted_deletes")

    stats = world.run(batch_size=2)

    assert (stats.detections_deleted, stats.events_deleted, stats.gpu_stats_deleted) == (3, 3, 3)
    assert (stats.thumbnails_deleted, stats.clips_deleted, stats.logs_deleted) == (3, 3, 3)
    modes = _modes(world)
    for table in ("detections", "events", "gpu_stats", "logs"):
        assert modes[table] == {"off"}, table
    # The queue's rows go only after their files did; a lost commit there would just repeat them.
    assert modes["retention_file_queue"] == {"on"}
    with world.engine.connect() as conn:  # local to each batch, not left on pooled connections
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"


# For each table: one expired row, and its purge step in batches of 4.
PURGE_STEPS = {
    "detections": (
        lambda w: w.detection(w.old()),
        lambda w: purge.purge_table(w.engine, "detections", w.cutoff, 4, delete_images=False),
    ),
    "events": (
        lambda w: w.event(w.old(), clip=True),
        lambda w: purge.purge_table(w.engine, "events", w.cutoff, 4),
    ),
    "gpu_stats": (
        lambda w: w.gpu(w.old()),
        lambda w: purge.purge_table(w.engine, "gpu_stats", w.cutoff, 4),
    ),
}


@pytest.mark.parametrize("table", list(PURGE_STEPS))
def test_a_purge_step_returns_only_once_every_batch_it_committed_is_on_disk(
    postgresql_only: None, world: CameraWorld, request: pytest.FixtureRequest, table: str
):
    expired_row, purge_step = PURGE_STEPS[table]
    for _ in range(40):
        expired_row(world)
    request.getfixturevalue("noted_deletes")

    counts = purge_step(world)

    # The check runs at once: the WAL writer, left alone, flushes deferred commits only every 200 ms.
    with world.engine.connect() as conn:
        last_delete = conn.execute(
            text("SELECT max(lsn) FROM seen_deletes WHERE tbl = :t"), {"t": table}
        ).scalar()
        on_disk = _flushed_past(conn, last_delete)
    assert counts.batches == 10
    assert on_disk, f"the last batch deleted at {last_delete}, not yet flushed"


def test_the_flush_commits_waiting_for_the_disk_even_on_a_server_set_not_to_wait(
    postgresql_only: None, world: CameraWorld
):
    committing: list[str] = []

    def note_commit(conn) -> None:  # before COMMIT is sent: how it will commit
        with conn.connection.dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('synchronous_commit')")
            committing.append(cursor.fetchone()[0])

    def server_set_not_to_wait(dbapi_connection, _record) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")

    world.engine.dispose()
    event.listen(world.engine, "connect", server_set_not_to_wait)
    try:
        with world.engine.begin() as conn:  # a write that commits without waiting, like a batch
            conn.execute(text("CREATE TABLE IF NOT EXISTS unflushed (n int)"))
            conn.execute(text("INSERT INTO unflushed VALUES (1)"))
        with world.engine.connect() as conn:
            written = conn.execute(text("SELECT pg_current_wal_insert_lsn()")).scalar()
        event.listen(world.engine, "commit", note_commit)
        flush_commits(world.engine)  # at once: the WAL writer, left alone, takes up to 600 ms
        event.remove(world.engine, "commit", note_commit)
        with world.engine.connect() as conn:
            flushed = _flushed_past(conn, written)
            session_default = conn.execute(text("SHOW synchronous_commit")).scalar()
    finally:
        event.remove(world.engine, "connect", server_set_not_to_wait)
        world.engine.dispose()
        with world.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS unflushed"))

    assert session_default == "off"
    # "local" makes the flush's COMMIT wait, and its WAL record gives it a commit record to wait for.
    assert committing == ["local"]
    assert flushed, "the write before the flush is not on disk yet"


def test_a_purge_step_that_fails_still_flushes_what_it_committed_before(
    postgresql_only: None, world: CameraWorld, request: pytest.FixtureRequest
):
    ids = [world.detection(world.old()) for _ in range(30)]
    request.getfixturevalue("noted_deletes")
    with world.engine.begin() as conn:  # the last detection cannot be deleted: not a transient error
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF OLD.id = {int(ids[-1])} THEN RAISE EXCEPTION 'refused'; END IF; RETURN OLD; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE DELETE ON detections"
                " FOR EACH ROW EXECUTE FUNCTION refuse_delete()"
            )
        )

    with pytest.raises(DBAPIError, match="refused"):
        purge.purge_table(world.engine, "detections", world.cutoff, 4, delete_images=False)

    assert world.ids(detections) == set(ids[-2:])  # the batch of the last two rolled back
    # Checked at once, a few ms after the last batch committed without waiting.
    with world.engine.connect() as conn:
        last_delete = conn.execute(
            text("SELECT max(lsn) FROM seen_deletes WHERE tbl = 'detections'")
        ).scalar()
        assert _flushed_past(conn, last_delete), "the batches committed before the failure are not on disk"
