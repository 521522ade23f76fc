"""Range-partitioned `detections` and `events` (PostgreSQL) lose their wholly expired partitions whole:
files queued in bulk, children removed set-based first, the keep rule honoured. The outcome is the same
rows, files and numbers as the batched delete of plain tables, which SQLite runs on the same world."""

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import literal_column, select, text
from sqlalchemy.engine import Engine

from retention_pipeline.core.doctor import diagnose
from retention_pipeline.core.purge import partition_ddl, partitions
from retention_pipeline.core.queries import partition_drop
from retention_pipeline.core.schema import alerts, detections, event_detections, events
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import (
    RETENTION_DAYS,
    THUMBS,
    CameraWorld,
    comparable,
    detached_partitions,
)

pytestmark = both_shapes

# Weekly partitions, bounds in days from the data cutoff: W1 and W2 end before it, W3 straddles it.
WEEKS = (-21.5, -14.5, -7.5, 0.5, 7.5, 40.0)
# The partitions left once W1, the one week wholly expired with nothing protected, went whole.
WEEKS_AFTER_W1 = {"detections_w2", "detections_w3", "detections_w4", "detections_w5", "detections_default"}


def _partition_by_week(world: CameraWorld, table: str, key: str) -> None:
    """Replace `table` by one range-partitioned weekly on `key`, primary key (id, key), default partition."""
    engine = world.engine
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {table} RENAME TO {table}_plain"))
        conn.execute(text(f"ALTER SEQUENCE {table}_id_seq OWNED BY NONE"))
        conn.execute(
            text(
                f"CREATE TABLE {table} (LIKE {table}_plain INCLUDING DEFAULTS, PRIMARY KEY (id, {key}))"
                f" PARTITION BY RANGE ({key})"
            )
        )
        # CASCADE drops the single-column foreign keys (event_detections, alerts): a partitioned table
        # can only be referenced by its whole key, as the camera system's partitioned schema had it.
        conn.execute(text(f"DROP TABLE {table}_plain CASCADE"))
        conn.execute(text(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT"))
        # The camera system's own foreign key out of the table survives partitioning; each partition
        # carries a copy of it, which the partition's drop must remove too.
        conn.execute(
            text(f"ALTER TABLE {table} ADD FOREIGN KEY (camera_id) REFERENCES cameras (id) ON DELETE CASCADE")
        )
        bounds = [world.cutoff + timedelta(days=d) for d in WEEKS]
        for number, (low, high) in enumerate(itertools.pairwise(bounds), start=1):
            conn.execute(
                text(
                    f"CREATE TABLE {table}_w{number} PARTITION OF {table} FOR VALUES FROM (:low) TO (:high)"
                ),
                {"low": low, "high": high},
            )


def _children(world: CameraWorld) -> None:
    """Two tables referencing detections, by its whole key on PostgreSQL: notes (CASCADE), reviews (SET
    NULL)."""
    postgres = world.engine.dialect.name == "postgresql"
    key = "(id, detected_at)" if postgres else "(id)"
    columns = "detection_id, detected_at" if postgres else "detection_id"
    serial = "SERIAL" if postgres else "INTEGER"
    with world.engine.begin() as conn:
        for name, action in (("detection_notes", "CASCADE"), ("detection_reviews", "SET NULL")):
            conn.execute(
                text(
                    f"CREATE TABLE {name} (id {serial} PRIMARY KEY, detection_id INTEGER,"
                    f" detected_at TIMESTAMPTZ, FOREIGN KEY ({columns}) REFERENCES detections {key}"
                    f" ON DELETE {action})"
                )
            )


def _note(world: CameraWorld, table: str, detection_id: int, at: datetime) -> None:
    with world.engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO {table} (detection_id, detected_at) VALUES (:id, :at)"),
            {"id": detection_id, "at": at},
        )


@dataclass
class Seeded:
    world: CameraWorld
    kept_detections: set[int]
    kept_events: set[int]
    kept_files: set[str]
    gone_files: set[str]


@pytest.fixture
def seeded(world: CameraWorld) -> Iterator[Seeded]:
    """Rows in every week: W1 wholly expired with alerts, links, notes, reviews and a thumbnail shared
    with a retained detection; W2 expired except one detection a retained event links (keep rule); W3
    straddling the cutoff with a row exactly at it; the default partition holding the oldest rows."""
    if world.engine.dialect.name == "postgresql":
        _partition_by_week(world, "detections", "detected_at")
        _partition_by_week(world, "events", "started_at")
    _children(world)
    w = world
    retained_event = w.event(w.recent(3))
    shared = w.file(f"{THUMBS}/shared.jpg")
    kept_d = {w.detection(w.recent(2), thumbnail=shared), w.detection(w.cutoff)}
    gone_files: set[str] = set()

    old_event = w.event(w.old(18), alerts_count=2)  # W1
    w1 = [w.detection(w.old(19), events_=(old_event,)), w.detection(w.old(17)), w.detection(w.old(16))]
    w1.append(w.detection(w.old(15), thumbnail=shared))
    _note(w, "detection_notes", w1[0], w.old(19))
    _note(w, "detection_reviews", w1[1], w.old(17))
    protected = w.detection(w.old(10), events_=(retained_event,))  # W2, kept by the keep rule
    w.detection(w.old(9))
    w.event(w.old(9), alerts_count=1)
    kept_d.add(protected)
    w.detection(w.old(3))  # W3, before the cutoff
    w.event(w.old(2))
    w.detection(w.old(40))  # the default partition
    w.event(w.old(41), alerts_count=1)
    kept_d.add(w.detection(w.recent(4)))
    with w.engine.connect() as conn:
        every_file = {
            path
            for row in conn.execute(select(detections.c.thumbnail_path, detections.c.file_path)).all()
            for path in row
            if path
        } | {path for path in conn.execute(select(events.c.clip_path)).scalars() if path}
        kept_files = {
            path
            for row in conn.execute(
                select(detections.c.thumbnail_path, detections.c.file_path).where(detections.c.id.in_(kept_d))
            ).all()
            for path in row
            if path
        } | {
            c for c in conn.execute(select(events.c.clip_path).where(events.c.id == retained_event)).scalars()
        }
    kept_e = {retained_event}
    gone_files = every_file - kept_files
    yield Seeded(w, kept_d, kept_e, kept_files, gone_files)


def _partitions_left(engine: Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = to_regclass(:parent)"
                ),
                {"parent": table},
            ).scalars()
        )


def _rows(engine: Engine, table: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return sorted(conn.execute(text(f"SELECT detection_id FROM {table}")).all(), key=str)


def test_expired_weeks_go_whole_and_every_row_file_and_number_is_the_batched_deletes(seeded: Seeded):
    world = seeded.world

    preview = world.run(dry_run=True, delete_images=True)
    stats = world.run(delete_images=True)

    assert comparable(preview) == comparable(stats)
    assert stats.files_kept_shared == 1  # the thumbnail a retained detection shares
    assert stats.detections_deleted == 7 and stats.events_deleted == 4 and stats.alerts_deleted == 4
    assert world.ids(detections) == seeded.kept_detections
    assert world.ids(events) == seeded.kept_events
    assert all(world.exists(path) for path in seeded.kept_files)
    assert not any(world.exists(path) for path in seeded.gone_files)
    assert world.count(alerts) == 0
    with world.engine.connect() as conn:
        links = set(conn.execute(select(event_detections.c.detection_id)).scalars())
    assert links <= seeded.kept_detections
    assert _rows(world.engine, "detection_notes") == []  # CASCADE
    assert _rows(world.engine, "detection_reviews") == [(None,)]  # SET NULL
    again = world.run(delete_images=True)
    assert (again.detections_deleted, again.events_deleted, again.space_reclaimed) == (0, 0, 0)
    if world.engine.dialect.name == "postgresql":
        # W1 went whole in both tables; W2 holds the protected detection; W3 straddles the cutoff.
        assert _partitions_left(world.engine, "detections") == WEEKS_AFTER_W1
        assert _partitions_left(world.engine, "events") == {
            "events_w3",
            "events_w4",
            "events_w5",
            "events_default",
        }


def test_a_run_killed_between_queueing_and_dropping_loses_and_leaks_nothing(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world

    def killed(*_args: object) -> tuple[str | None, str, float]:
        raise KeyboardInterrupt("killed after the partition's files were queued")

    monkeypatch.setattr(partitions, "_detach", killed)
    with pytest.raises(KeyboardInterrupt):
        world.run(delete_images=True)
    monkeypatch.undo()
    # The files of W1 are queued and its rows still name them: the file step must keep every one.
    assert all(world.exists(path) for path in seeded.gone_files | seeded.kept_files)
    world.run(delete_images=True, retention_days=3650)  # only the file step has work: the queue
    assert all(world.exists(path) for path in seeded.gone_files | seeded.kept_files)

    world.run(delete_images=True)

    assert world.ids(detections) == seeded.kept_detections
    assert world.ids(events) == seeded.kept_events
    assert all(world.exists(path) for path in seeded.kept_files)
    assert not any(world.exists(path) for path in seeded.gone_files)


def _before_detach(
    monkeypatch: pytest.MonkeyPatch, write: Callable[[Engine], None], of: str = "detections"
) -> None:
    """Run `write` (a camera writer's move) once, after a partition of `of` is cleared, before its detach."""
    detach = partitions._detach
    written: list[bool] = []

    def writer_first(engine: Engine, expiry: Any, table: str, *rest: Any) -> tuple[str | None, str, float]:
        if table == of and not written:
            written.append(True)
            write(engine)
        return detach(engine, expiry, table, *rest)

    monkeypatch.setattr(partitions, "_detach", writer_first)


def _detection_at(engine: Engine, at: datetime) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(detections.c.id).where(detections.c.detected_at == at)).scalar_one())


def test_a_partition_referenced_again_before_its_detach_is_left_to_the_batches(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world
    old = world.old(16)
    _before_detach(
        monkeypatch, lambda engine: _note(world, "detection_notes", _detection_at(engine, old), old)
    )

    stats = world.run(delete_images=True)

    assert stats.detections_deleted == 7
    assert world.ids(detections) == seeded.kept_detections
    assert _rows(world.engine, "detection_notes") == []  # the batched delete's cascade took the late one
    assert "detections_w1" in _partitions_left(world.engine, "detections")


@pytest.mark.parametrize("one_deleted", [False, True], ids=["added", "added-one-deleted"])
def test_a_late_row_in_a_cleared_partition_goes_with_it_and_its_files_too(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch, one_deleted: bool
):
    world = seeded.world
    late: list[tuple[int, str, str]] = []

    def late_write(engine: Engine) -> None:
        if one_deleted:  # the partition's count stays what the clearing saw: only its ids tell
            with engine.begin() as conn:
                conn.execute(detections.delete().where(detections.c.detected_at == world.old(16)))
        detection_id = world.detection(world.old(17.5))
        with engine.connect() as conn:
            row = conn.execute(
                select(detections.c.thumbnail_path, detections.c.file_path).where(
                    detections.c.id == detection_id
                )
            ).one()
        late.append((detection_id, row.thumbnail_path, row.file_path))

    _before_detach(monkeypatch, late_write)

    stats = world.run(delete_images=True)

    ((detection_id, thumbnail, image),) = late
    assert detection_id not in world.ids(detections)
    # Its files were queued from the detached partition, before the drop.
    assert world.exists(thumbnail) is False and world.exists(image) is False
    assert stats.detections_deleted == (7 if one_deleted else 8)  # the late row too
    assert world.ids(detections) == seeded.kept_detections
    assert not any(world.exists(path) for path in seeded.gone_files)
    assert "detections_w1" not in _partitions_left(world.engine, "detections")
    assert detached_partitions(world.engine) == {}


def test_a_cleared_week_the_camera_detaches_before_us_is_passed_over_and_not_counted(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world

    def camera_detaches(engine: Engine) -> None:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE detections DETACH PARTITION detections_w1"))

    _before_detach(monkeypatch, camera_detaches)

    stats = world.run(delete_images=True)

    assert stats.detections_deleted == 7 - 4  # W1's rows left the table, but not by us
    assert world.ids(detections) == seeded.kept_detections
    assert _rows(world.engine, "detection_notes") == []  # its way had been cleared, as a batch would
    assert "detections_w1" not in _partitions_left(world.engine, "detections")


def test_an_alert_raised_for_an_old_event_while_its_week_is_cleared_goes_with_it(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world
    old_event_at = world.old(18)

    def raise_an_alert(engine: Engine) -> None:
        with engine.connect() as conn:
            event_id = conn.execute(
                select(events.c.id).where(events.c.started_at == old_event_at)
            ).scalar_one()
        world.alert(event_id, world.now)

    _before_detach(monkeypatch, raise_an_alert, of="events")

    stats = world.run(delete_images=True)

    assert world.count(alerts) == 0  # none left pointing at a dropped event
    assert stats.alerts_deleted == 5
    assert world.ids(events) == seeded.kept_events
    assert "events_w1" not in _partitions_left(world.engine, "events")


def test_alerts_referencing_events_by_their_whole_key_are_counted_when_a_week_goes_whole(
    postgresql_only: None, seeded: Seeded
):
    world = seeded.world
    with world.engine.begin() as conn:  # the only way to reference a partitioned table: its whole key
        conn.execute(text("ALTER TABLE alerts ADD COLUMN event_started_at TIMESTAMPTZ"))
        conn.execute(
            text(
                "UPDATE alerts SET event_started_at = e.started_at FROM events e WHERE e.id = alerts.event_id"
            )
        )
        conn.execute(
            text(
                "ALTER TABLE alerts ADD FOREIGN KEY (event_id, event_started_at)"
                " REFERENCES events (id, started_at) ON DELETE CASCADE"
            )
        )

    preview = world.run(dry_run=True, delete_images=True)
    stats = world.run(delete_images=True)

    assert stats.alerts_deleted == preview.alerts_deleted == 4  # W1's two went with the week, counted
    assert comparable(preview) == comparable(stats)
    assert world.count(alerts) == 0
    assert world.ids(events) == seeded.kept_events
    assert "events_w1" not in _partitions_left(world.engine, "events")


def test_a_late_link_to_a_retained_event_keeps_its_detection(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world
    old = world.old(17)
    retained_event = next(iter(seeded.kept_events))
    _before_detach(monkeypatch, lambda engine: world.link(retained_event, _detection_at(engine, old)))

    stats = world.run(delete_images=True)

    kept = _detection_at(world.engine, old)
    assert world.ids(detections) == seeded.kept_detections | {kept}
    assert stats.detections_deleted == 6
    assert "detections_w1" in _partitions_left(world.engine, "detections")


def _killed_after_the_detach(monkeypatch: pytest.MonkeyPatch, world: CameraWorld) -> None:
    def killed(*_args: object) -> int:
        raise KeyboardInterrupt("killed after the week was detached, before its count and its drop")

    monkeypatch.setattr(partition_ddl, "count_and_sum", killed)
    with pytest.raises(KeyboardInterrupt):
        world.run(delete_images=True)
    monkeypatch.undo()
    assert detached_partitions(world.engine) == {"retention_detached_detections__detections_w1": 4}


def _files_of_the_detached_week(world: CameraWorld) -> set[str]:
    with world.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT thumbnail_path, file_path FROM retention_detached_detections__detections_w1")
        )
        return {path for row in rows for path in row if path}


def _as_the_batched_delete_leaves_it(seeded: Seeded) -> None:
    world = seeded.world
    assert world.ids(detections) == seeded.kept_detections
    assert world.ids(events) == seeded.kept_events
    assert all(world.exists(path) for path in seeded.kept_files)
    assert not any(world.exists(path) for path in seeded.gone_files)
    assert detached_partitions(world.engine) == {}


def test_a_week_a_killed_run_detached_is_cleared_again_and_dropped_by_the_next(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world
    _killed_after_the_detach(monkeypatch, world)
    assert all(world.exists(path) for path in seeded.gone_files | seeded.kept_files)

    stats = world.run(delete_images=True)

    assert stats.detections_deleted == 7  # the killed run reported nothing; each row is counted once
    _as_the_batched_delete_leaves_it(seeded)
    assert "detections_w1" not in _partitions_left(world.engine, "detections")


def test_a_detached_week_not_wholly_expired_at_the_next_runs_cutoff_is_not_dropped(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world
    _killed_after_the_detach(monkeypatch, world)

    kept_whole = _files_of_the_detached_week(world)

    # Retention lengthened after the kill: W1 (15 to 21.5 days before the cutoff) is no longer all expired.
    stats = world.run(delete_images=True, retention_days=RETENTION_DAYS + 17)

    assert detached_partitions(world.engine) == {"retention_detached_detections__detections_w1": 4}
    assert stats.detections_deleted == 1  # only the default partition's detection, 40 days old
    # The killed run had queued the week's files; they stay as long as its rows do.
    assert kept_whole and all(world.exists(path) for path in kept_whole)


def test_rows_of_a_detached_week_whose_drop_stays_busy_are_counted_by_the_run_that_drops_it(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world
    monkeypatch.setattr(partition_ddl, "drop", lambda *_args: (False, 0.0))

    first = world.run(delete_images=True)
    monkeypatch.undo()
    second = world.run(delete_images=True)

    assert first.detections_deleted == 7 - 4
    assert second.detections_deleted == 4
    _as_the_batched_delete_leaves_it(seeded)


def test_a_detached_week_a_retained_event_now_links_is_not_dropped(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world
    old = world.old(17)
    with world.engine.connect() as conn:
        linked = conn.execute(select(detections.c.id).where(detections.c.detected_at == old)).scalar_one()
    _killed_after_the_detach(monkeypatch, world)
    world.link(next(iter(seeded.kept_events)), linked)  # to a detection of the detached week
    kept_whole = _files_of_the_detached_week(world)

    stats = world.run(delete_images=True)

    assert detached_partitions(world.engine) == {"retention_detached_detections__detections_w1": 4}
    assert kept_whole and all(world.exists(path) for path in kept_whole)
    assert stats.detections_deleted == 7 - 4
    with world.engine.connect() as conn:
        links = set(conn.execute(select(event_detections.c.detection_id)).scalars())
    assert linked in links
    report = diagnose(world.engine, world.plan(dry_run=True))
    assert any(
        w.startswith("retention_detached_detections__detections_w1 is a partition") for w in report.warnings
    )


def test_a_detached_week_attached_again_under_our_name_is_an_ordinary_partition_again(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world
    _killed_after_the_detach(monkeypatch, world)
    low, high = (world.cutoff + timedelta(days=d) for d in WEEKS[:2])
    with world.engine.begin() as conn:  # as a person would, after the kill, keeping the name
        conn.execute(
            text(
                "ALTER TABLE detections ATTACH PARTITION retention_detached_detections__detections_w1"
                " FOR VALUES FROM (:low) TO (:high)"
            ),
            {"low": low, "high": high},
        )

    # While its rows are not expired, it is left alone and nothing warns of it.
    kept = world.run(delete_images=True, retention_days=RETENTION_DAYS + 30)
    report = diagnose(world.engine, world.plan(dry_run=True))
    stats = world.run(delete_images=True)

    assert kept.detections_deleted == 1  # only the default partition's detection, 40 days old
    assert not any(w.startswith("retention_detached_") for w in report.warnings)
    assert stats.detections_deleted == 7 - 1  # then the week goes whole, as any expired one
    _as_the_batched_delete_leaves_it(seeded)
    assert _partitions_left(world.engine, "detections") == WEEKS_AFTER_W1


def test_a_link_made_while_a_busy_parent_delays_the_detach_keeps_the_week(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world
    old = world.old(17)
    retained_event = next(iter(seeded.kept_events))
    reader = world.engine.connect()
    reader.execute(text("SELECT count(*) FROM detections"))  # holds the parent: the first attempt times out

    def pause(seconds: float) -> None:
        # While the detach waits to try again, the camera links a detection of the week to a retained
        # event, and the reader lets the parent go.
        world.link(retained_event, _detection_at(world.engine, old))
        reader.rollback()

    monkeypatch.setattr(partition_ddl, "time", SimpleNamespace(perf_counter=time.perf_counter, sleep=pause))
    try:
        stats = world.run(delete_images=True)
    finally:
        reader.close()

    assert world.ids(detections) == seeded.kept_detections | {_detection_at(world.engine, old)}
    assert stats.detections_deleted == 6
    assert "detections_w1" in _partitions_left(world.engine, "detections")


def test_a_detached_week_waits_for_a_busy_cameras_table_and_goes_once_it_is_free(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
):
    world = seeded.world
    _killed_after_the_detach(monkeypatch, world)
    reader = world.engine.connect()
    reader.execute(
        text("SELECT count(*) FROM cameras")
    )  # dropping the week's foreign key needs cameras alone
    try:
        gone, _seconds = partition_ddl.drop(world.engine, "retention_detached_detections__detections_w1")
        assert gone is False
    finally:
        reader.rollback()
        reader.close()
    assert detached_partitions(world.engine) == {"retention_detached_detections__detections_w1": 4}

    stats = world.run(delete_images=True)

    assert stats.detections_deleted == 7
    _as_the_batched_delete_leaves_it(seeded)


def _slow_clearing(monkeypatch: pytest.MonkeyPatch, slow_chunks: int) -> None:
    """The first `slow_chunks` clearing chunks each take 2 s, far past the batches' time cap (80 ms)."""
    count_rows = partition_drop.count_rows
    calls = [0]

    def slow(source: Any, rows: Any) -> Any:
        calls[0] += 1
        statement = count_rows(source, rows)
        if calls[0] <= slow_chunks:
            return statement.where(literal_column("(SELECT pg_sleep(2)) IS NOT NULL"))
        return statement

    monkeypatch.setattr(partition_drop, "count_rows", slow)


@pytest.mark.parametrize("slow_chunks, goes_whole", [(1, True), (1_000, False)], ids=["once", "always"])
def test_a_clearing_chunk_past_the_time_cap_is_rolled_back_and_repeated_smaller_or_left_to_the_batches(
    postgresql_only: None, seeded: Seeded, monkeypatch: pytest.MonkeyPatch, slow_chunks: int, goes_whole: bool
):
    world = seeded.world
    _slow_clearing(monkeypatch, slow_chunks)

    stats = world.run(delete_images=True)

    assert stats.detections_deleted == 7
    assert stats.longest_transaction_ms < 1000  # cut off at the cap, not left to run its 2 s
    _as_the_batched_delete_leaves_it(seeded)
    # Cleared at a smaller size and dropped whole; or, never fitting the cap, emptied by the batches.
    assert ("detections_w1" in _partitions_left(world.engine, "detections")) is not goes_whole


def test_doctor_counts_only_the_partitions_a_run_would_drop(postgresql_only: None, seeded: Seeded):
    world = seeded.world
    plan = world.plan()

    assert partitions.partitions_to_drop(world.engine, plan.expiry, "detections") == 1  # W2 is protected
    assert partitions.partitions_to_drop(world.engine, plan.expiry, "events") == 2
