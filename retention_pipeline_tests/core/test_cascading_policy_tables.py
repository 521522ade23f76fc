"""A policy table with files whose foreign key to a retention table is ON DELETE CASCADE: the rows the
cascade removes with an expired parent take their files with them (queued in the parent's batch, or in
a partition's clearing), and the dry run predicts the real run exactly. Both engines, both shapes, plain
and (PostgreSQL) partitioned parents.

Counting: a table's number is the rows its own rule deletes; rows the cascade takes with their parent
are counted with neither, as for every CASCADE child.
"""

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, text
from sqlalchemy.engine import Engine

from retention_pipeline.core.cleanup import SchemaError, clean_table, prepare_database
from retention_pipeline.core.policy import read_policy
from retention_pipeline.core.schema import detections as schema_detections
from retention_pipeline.core.schema import retention_file_queue
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.core.test_partitioned_detections import _partition_by_week
from retention_pipeline_tests.factories import THUMBS, CameraWorld, comparable

pytestmark = both_shapes

POLICY = """
tables:
  - table: crops
    time_column: taken_at
    retention_days: 14
    files: {crop_path: thumbnails}
  - table: event_snapshots
    time_column: taken_at
    retention_days: 14
    files: {snapshot_path: thumbnails}
"""

# For the inserts; the tables themselves are created by their DDL below, foreign keys and all.
_rows = MetaData()
crops = Table(
    "crops",
    _rows,
    Column("id", Integer, primary_key=True),
    Column("detection_id", Integer),
    Column("detected_at", DateTime(timezone=True)),
    Column("taken_at", DateTime(timezone=True)),
    Column("crop_path", String(1024)),
)
event_snapshots = Table(
    "event_snapshots",
    _rows,
    Column("id", Integer, primary_key=True),
    Column("event_id", Integer),
    Column("taken_at", DateTime(timezone=True)),
    Column("snapshot_path", String(1024)),
)


def _tables(world: CameraWorld, tmp_path: Path, detections_key: str = "(id)") -> None:
    """crops -> detections and event_snapshots -> events, both ON DELETE CASCADE, and the policy."""
    postgres = world.engine.dialect.name == "postgresql"
    serial, stamp = ("SERIAL", "TIMESTAMPTZ") if postgres else ("INTEGER", "TIMESTAMP")
    crop_columns = "detection_id, detected_at" if detections_key != "(id)" else "detection_id"
    with world.engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE crops (id {serial} PRIMARY KEY, detection_id INTEGER, detected_at {stamp},"
                f" taken_at {stamp}, crop_path VARCHAR(1024),"
                f" FOREIGN KEY ({crop_columns}) REFERENCES detections {detections_key} ON DELETE CASCADE)"
            )
        )
        conn.execute(
            text(
                f"CREATE TABLE event_snapshots (id {serial} PRIMARY KEY, event_id INTEGER"
                f" REFERENCES events (id) ON DELETE CASCADE, taken_at {stamp},"
                " snapshot_path VARCHAR(1024))"
            )
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    world.policy = read_policy(policy)


def _detections_key(world: CameraWorld, detections_table: str) -> str:
    """The key a child references detections by: partitioned weekly (PostgreSQL only) or plain."""
    if detections_table == "plain":
        return "(id)"
    if world.engine.dialect.name != "postgresql":
        pytest.skip("declarative partitioning is PostgreSQL's")
    _partition_by_week(world, "detections", "detected_at")
    return "(id, detected_at)"


def _crop(world: CameraWorld, detection_id: int | None, taken_at: datetime, detected_at: datetime) -> str:
    path = world.file(f"{THUMBS}/crop{taken_at.timestamp()}_{detection_id}.jpg")
    with world.engine.begin() as conn:
        conn.execute(
            insert(crops).values(
                detection_id=detection_id, detected_at=detected_at, taken_at=taken_at, crop_path=path
            )
        )
    return path


def _snapshot(world: CameraWorld, event_id: int, taken_at: datetime) -> str:
    path = world.file(f"{THUMBS}/snap{taken_at.timestamp()}_{event_id}.jpg")
    with world.engine.begin() as conn:
        conn.execute(insert(event_snapshots).values(event_id=event_id, taken_at=taken_at, snapshot_path=path))
    return path


def _paths(engine: Engine, table: str, column: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text(f"SELECT {column} FROM {table}")).scalars())


@pytest.mark.parametrize("detections_table", ["plain", "partitioned"])
def test_rows_a_cascade_takes_with_an_expired_parent_take_their_files_and_the_dry_run_knows(
    world: CameraWorld, tmp_path: Path, detections_table: str
):
    _tables(world, tmp_path, _detections_key(world, detections_table))
    w, now = world, world.now
    young, old = now - timedelta(days=1), now - timedelta(days=20)
    retained_event = w.event(w.recent(3))
    # At old(19) the detection lies in a week wholly before the cutoff: on the partitioned table that
    # week goes whole, the crops through the clearing; the others go through the batches.
    expired_detection, in_batches = w.detection(w.old(19)), w.detection(w.old(3))
    live, kept_by_event = w.detection(w.recent(2)), w.detection(w.old(3), events_=(retained_event,))
    gone = {
        _crop(w, expired_detection, young, w.old(19)),  # young itself: goes with its detection
        _crop(w, expired_detection, old, w.old(19)),  # old too: still its detection's, uncounted
        _crop(w, in_batches, young, w.old(3)),
        _crop(w, live, old, w.recent(2)),  # its own rule: counted
    }
    kept = {
        _crop(w, live, young, w.recent(2)),
        _crop(w, kept_by_event, young, w.old(3)),  # the keep rule keeps its detection, so it stays
        _crop(w, None, young, young),  # no parent
    }
    expired_event, live_event = w.event(w.old(2), clip=False), w.event(w.recent(1), clip=False)
    gone |= {_snapshot(w, expired_event, young), _snapshot(w, live_event, old)}
    kept.add(_snapshot(w, live_event, young))

    preview = w.run(dry_run=True)
    stats = w.run()

    assert (
        _paths(w.engine, "crops", "crop_path") | _paths(w.engine, "event_snapshots", "snapshot_path") == kept
    )
    assert all(w.exists(path) for path in kept)
    assert not any(w.exists(path) for path in gone)
    assert stats.rows_deleted_by_table["crops"] == 1 and stats.rows_deleted_by_table["event_snapshots"] == 1
    assert stats.detections_deleted == 2 and stats.events_deleted == 1
    assert stats.thumbnails_deleted == len(gone) + 2  # and the two detections' own thumbnails
    assert comparable(preview) == comparable(stats)
    again = w.run()
    assert (again.rows_deleted_by_table["crops"], again.thumbnails_deleted, again.files_missing) == (0, 0, 0)


def test_a_file_a_cascaded_row_shares_with_a_surviving_row_stays(world: CameraWorld, tmp_path: Path):
    _tables(world, tmp_path)
    w, young = world, world.now - timedelta(days=1)
    shared = _crop(w, w.detection(w.old(3)), young, w.old(3))
    live = w.detection(w.recent(2))
    with w.engine.begin() as conn:
        conn.execute(
            insert(crops).values(detection_id=live, detected_at=w.recent(2), taken_at=young, crop_path=shared)
        )

    preview = w.run(dry_run=True)
    stats = w.run()

    assert w.exists(shared) and _paths(w.engine, "crops", "crop_path") == {shared}
    assert stats.files_kept_shared == 1 and stats.thumbnails_deleted == 1  # the detection's own
    assert comparable(preview) == comparable(stats)


def test_a_composite_key_that_lists_the_time_first_is_followed_by_its_id_column(
    world: CameraWorld, tmp_path: Path
):
    if world.engine.dialect.name != "postgresql":
        pytest.skip("declarative partitioning is PostgreSQL's")
    _partition_by_week(world, "detections", "detected_at")
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE crops (id SERIAL PRIMARY KEY, detection_id INTEGER, detected_at TIMESTAMPTZ,"
                " taken_at TIMESTAMPTZ, crop_path VARCHAR(1024), FOREIGN KEY (detected_at, detection_id)"
                " REFERENCES detections (detected_at, id) ON DELETE CASCADE)"
            )
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tables:\n  - table: crops\n    time_column: taken_at\n    retention_days: 14\n"
        "    files: {crop_path: thumbnails}\n"
    )
    world.policy = read_policy(policy)
    young = world.now - timedelta(days=1)
    gone = _crop(world, world.detection(world.old(3)), young, world.old(3))
    kept = _crop(world, world.detection(world.recent(2)), young, world.recent(2))

    preview = world.run(dry_run=True)
    stats = world.run()

    assert not world.exists(gone) and world.exists(kept)
    assert comparable(preview) == comparable(stats)


def test_the_progress_counts_the_files_queued_for_rows_a_cascade_takes(world: CameraWorld, tmp_path: Path):
    _tables(world, tmp_path)
    w, young = world, world.now - timedelta(days=1)
    for _ in range(3):
        detection = w.detection(w.old(3))
        _crop(w, detection, young, w.old(3))
        _crop(w, detection, young - timedelta(hours=1), w.old(3))
    prepare_database(w.engine, w.policy)
    messages: list[str] = []

    counts = clean_table(w.engine, w.plan(), "detections", messages.append)

    queued = w.count(retention_file_queue)
    assert counts.deleted == 3 and queued == 3 + 6  # each detection's thumbnail and its two crops
    assert counts.files_queued == queued
    assert messages[-1] == f"detections: done, 3 deleted in 1 batches, {queued} files queued"


CHAIN_POLICY = """
tables:
  - table: crops
    time_column: taken_at
    retention_days: 14
    files: {crop_path: thumbnails}
  - table: crop_marks
    time_column: taken_at
    retention_days: 14
    files: {mark_path: thumbnails}
  - table: notes
    time_column: taken_at
    retention_days: 14
  - table: note_images
    time_column: taken_at
    retention_days: 14
    files: {image_path: thumbnails}
"""


def _chain_tables(world: CameraWorld, tmp_path: Path, detections_key: str) -> None:
    """detections -> crops -> crop_marks and events -> notes (no files) -> note_images, each step ON
    DELETE CASCADE, and a policy that lists every parent before its child."""
    postgres = world.engine.dialect.name == "postgresql"
    serial, stamp = ("SERIAL", "TIMESTAMPTZ") if postgres else ("INTEGER", "TIMESTAMP")
    crop_columns = "detection_id, detected_at" if detections_key != "(id)" else "detection_id"
    tables = (
        f"crops (id {serial} PRIMARY KEY, detection_id INTEGER, detected_at {stamp}, taken_at {stamp},"
        f" crop_path VARCHAR(1024), FOREIGN KEY ({crop_columns}) REFERENCES detections {detections_key}"
        " ON DELETE CASCADE)",
        f"crop_marks (id {serial} PRIMARY KEY, parent_id INTEGER REFERENCES crops (id) ON DELETE CASCADE,"
        f" taken_at {stamp}, mark_path VARCHAR(1024))",
        f"notes (id {serial} PRIMARY KEY, parent_id INTEGER REFERENCES events (id) ON DELETE CASCADE,"
        f" taken_at {stamp})",
        f"note_images (id {serial} PRIMARY KEY, parent_id INTEGER REFERENCES notes (id) ON DELETE CASCADE,"
        f" taken_at {stamp}, image_path VARCHAR(1024))",
    )
    with world.engine.begin() as conn:
        for table in tables:
            conn.execute(text(f"CREATE TABLE {table}"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(CHAIN_POLICY)
    world.policy = read_policy(policy)


def _chained(world: CameraWorld, table: str, parent_id: int, taken_at: datetime, path: str | None) -> int:
    """A row of crop_marks, notes or note_images; returns its id."""
    columns = {"crop_marks": "mark_path", "note_images": "image_path"}
    values = {"parent_id": parent_id, "taken_at": taken_at}
    if table in columns:
        values[columns[table]] = path
    names = ", ".join(values)
    with world.engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + n for n in values)})"), values
        )
        return int(conn.execute(text(f"SELECT max(id) FROM {table}")).scalar_one())


@pytest.mark.parametrize("detections_table", ["plain", "partitioned"])
def test_files_two_cascade_steps_down_go_with_the_expired_row_at_the_top_and_the_dry_run_knows(
    world: CameraWorld, tmp_path: Path, detections_table: str
):
    _chain_tables(world, tmp_path, _detections_key(world, detections_table))
    w, young, old = world, world.now - timedelta(days=1), world.now - timedelta(days=20)
    crop_id = 0

    def crop(detection: int, detected_at: datetime) -> str:
        nonlocal crop_id
        path = _crop(w, detection, young, detected_at)
        with w.engine.connect() as conn:
            crop_id = int(conn.execute(text("SELECT max(id) FROM crops")).scalar_one())
        return path

    def mark(at: datetime, name: str) -> str:
        path = w.file(f"{THUMBS}/{name}.jpg")
        _chained(w, "crop_marks", crop_id, at, path)
        return path

    gone, kept = set(), set()
    # A detection in a wholly expired week (dropped whole when partitioned) and one in the batches.
    for number, at in enumerate((w.old(19), w.old(3))):
        gone.add(crop(w.detection(at), at))
        gone.add(mark(young, f"mark_of_expired{number}"))
    kept.add(crop(w.detection(w.recent(2)), w.recent(2)))
    kept.add(mark(young, "mark_young"))
    gone.add(mark(old, "mark_old"))  # its own rule: counted

    expired_event, live_event = w.event(w.old(2), clip=False), w.event(w.recent(1), clip=False)
    note = _chained(w, "notes", expired_event, young, None)
    gone.add(path := w.file(f"{THUMBS}/image_of_expired_event.jpg"))
    _chained(w, "note_images", note, young, path)
    old_note = _chained(w, "notes", live_event, old, None)  # its own rule: counted
    gone.add(path := w.file(f"{THUMBS}/image_of_old_note.jpg"))
    _chained(w, "note_images", old_note, young, path)
    young_note = _chained(w, "notes", live_event, young, None)
    kept.add(path := w.file(f"{THUMBS}/image_of_young_note.jpg"))
    _chained(w, "note_images", young_note, young, path)

    preview = w.run(dry_run=True)
    stats = w.run()

    assert all(w.exists(path) for path in kept)
    assert not any(w.exists(path) for path in gone)
    by_table = stats.rows_deleted_by_table
    assert (by_table["crops"], by_table["crop_marks"], by_table["notes"], by_table["note_images"]) == (
        0,
        1,
        1,
        0,
    )
    assert stats.thumbnails_deleted == len(gone) + 2  # and the two detections' own thumbnails
    assert comparable(preview) == comparable(stats)
    again = w.run()
    assert (sum(again.rows_deleted_by_table.values()), again.thumbnails_deleted) == (0, 0)


def test_a_policy_table_without_files_that_a_cascade_empties_counts_the_same_in_the_dry_run(
    world: CameraWorld, tmp_path: Path
):
    _chain_tables(world, tmp_path, "(id)")
    w, old = world, world.now - timedelta(days=20)
    expired_event = w.event(w.old(2), clip=False)
    _chained(w, "notes", expired_event, old, None)  # old by its own rule too, but goes with its event
    _chained(w, "notes", w.event(w.recent(1), clip=False), old, None)

    preview = w.run(dry_run=True)
    stats = w.run()

    assert stats.rows_deleted_by_table["notes"] == 1
    assert comparable(preview) == comparable(stats)


def test_a_foreign_key_that_names_its_parent_in_other_letter_case_is_followed(
    world: CameraWorld, tmp_path: Path
):
    # SQLite's names, and PostgreSQL's unquoted ones, ignore case: `REFERENCES Detections` is detections.
    postgres = world.engine.dialect.name == "postgresql"
    serial, stamp = ("SERIAL", "TIMESTAMPTZ") if postgres else ("INTEGER", "TIMESTAMP")
    with world.engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE crops (id {serial} PRIMARY KEY, detection_id INTEGER"
                f" REFERENCES Detections (id) ON DELETE CASCADE, detected_at {stamp}, taken_at {stamp},"
                " crop_path VARCHAR(1024))"
            )
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.split("  - table: event_snapshots")[0])
    world.policy = read_policy(policy)
    young = world.now - timedelta(days=1)
    gone = _crop(world, world.detection(world.old(3)), young, world.old(3))
    kept = _crop(world, world.detection(world.recent(2)), young, world.recent(2))

    preview = world.run(dry_run=True)
    stats = world.run()

    assert not world.exists(gone) and world.exists(kept)
    assert comparable(preview) == comparable(stats)


def test_a_blocking_foreign_key_that_names_its_parent_in_other_letter_case_refuses_the_run(
    world: CameraWorld,
):
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE notes (id INTEGER PRIMARY KEY, detection_id INTEGER REFERENCES Detections (id))"
            )
        )
    detections = [world.detection(world.old(3)) for _ in range(3)]
    with world.engine.begin() as conn:
        conn.execute(text("INSERT INTO notes (id, detection_id) VALUES (1, :id)"), {"id": detections[1]})

    with pytest.raises(SchemaError, match=r"notes\.detection_id -> detections \(ON DELETE NO ACTION\)"):
        world.run(batch_size=1)

    assert world.count(schema_detections) == 3  # refused before the first batch, not half-way
