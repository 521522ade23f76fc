"""Timestamps as other writers spell them: compared as instants, and found through the time indexes."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import String, column, insert, table, update
from sqlalchemy.engine import Engine

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.doctor import diagnose
from retention_pipeline.core.inventory import oldest_kept, retention_health, table_inventory
from retention_pipeline.core.policy import read_policy
from retention_pipeline.core.queries import expiring
from retention_pipeline.core.schema import camera_metadata, detections, events, gpu_stats, logs
from retention_pipeline.core.tables import Expiry, Registry
from retention_pipeline_tests.factories import CameraWorld, comparable

SECOND = timedelta(seconds=1)
# A reference time late in the UTC day: at +14:00 an instant just before the cutoff is written with the
# next day's date, the spelling that sorts furthest above the cutoff as text.
LATE = datetime(2026, 6, 15, 22, 30, tzinfo=UTC)


def _write_raw(engine: Engine, name: str, ts_column: str, spellings: list[str], **extra: str) -> None:
    raw = table(name, column(ts_column, String), *(column(key, String) for key in extra))
    with engine.begin() as conn:
        conn.execute(insert(raw), [{ts_column: spelling, **extra} for spelling in spellings])


def _sqlite_only(world: CameraWorld) -> None:
    if world.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL stores TIMESTAMPTZ, not text; the text formats are SQLite's problem")


def _respell(engine: Engine, name: str, ts_column: str, row_id: int, stored: object) -> None:
    """Store `stored` as the row's time, as another writer would: text as given, a number as a number."""
    raw = table(name, column("id"), column(ts_column))
    with engine.begin() as conn:
        conn.execute(update(raw).where(raw.c.id == row_id).values({ts_column: stored}))


def _without_colon(at: datetime, hours: int = 0, minutes: int = 0) -> str:
    """`at` as a writer using strftime('%z') spells it: local time and an offset without colon."""
    offset = timedelta(hours=hours, minutes=minutes)
    return at.astimezone(timezone(offset)).strftime("%Y-%m-%d %H:%M:%S%z")


def test_naive_sqlite_style_timestamps_in_other_formats_compare_as_instants(world: CameraWorld):
    # Another writer may store '2026-05-16T03:00:00' or '...+00:00'; all are UTC instants.
    _sqlite_only(world)
    cutoff = world.log_cutoff
    rows = [
        (cutoff - SECOND).strftime("%Y-%m-%dT%H:%M:%S"),
        (cutoff - SECOND).strftime("%Y-%m-%d %H:%M:%S+00:00"),
        cutoff.strftime("%Y-%m-%d %H:%M:%S"),  # exactly at the cutoff, no fraction: kept
        cutoff.strftime("%Y-%m-%dT%H:%M:%S.000000"),
    ]
    _write_raw(world.engine, "logs", "timestamp", rows, level="INFO")

    stats = world.run()

    assert stats.logs_deleted == 2
    assert world.count(logs) == 2


def test_timestamps_written_with_utc_offsets_expire_by_their_instant_whatever_date_they_show(
    engine: Engine, tmp_path: Path
):
    world = CameraWorld(engine, tmp_path / "media", now=LATE)
    cutoff = world.cutoff  # 22:30 UTC

    def spelled(at: datetime, hours: int) -> str:
        offset = timedelta(hours=hours)
        return (at + offset).strftime(
            "%Y-%m-%d %H:%M:%S"
        ) + f"{'+' if hours >= 0 else '-'}{abs(hours):02d}:00"

    expired = [spelled(cutoff - SECOND, 14), spelled(cutoff - SECOND, -14), spelled(cutoff - SECOND, 0)]
    kept = [spelled(cutoff, 14), spelled(cutoff, -14), spelled(cutoff + SECOND, 14)]
    assert spelled(cutoff - SECOND, 14)[:10] > cutoff.date().isoformat()  # shows the next day's date
    _write_raw(engine, "gpu_stats", "recorded_at", expired + kept, gpu_utilization="1", memory_used="1")

    stats = world.run()

    assert stats.gpu_stats_deleted == len(expired)
    assert world.count(gpu_stats) == len(kept)


def test_a_retained_event_written_with_an_offset_without_colon_keeps_its_old_detection(world: CameraWorld):
    # julianday() reads '+0000' as no time at all: the event counted neither as expired nor as retained,
    # and the keep rule's NOT (...) let its old detection go.
    _sqlite_only(world)
    retained = world.event(world.recent(1), clip=False)
    _respell(world.engine, "events", "started_at", retained, _without_colon(world.recent(1)))
    kept = world.detection(world.old(3), events_=(retained,))
    expired = world.event(world.old(1), clip=False)
    _respell(world.engine, "events", "started_at", expired, _without_colon(world.old(1), -5, -30))
    goes_with_it = world.detection(world.recent(1), events_=(expired,))

    preview = world.run(dry_run=True)
    stats = world.run()

    assert world.ids(detections) == {kept}
    assert world.ids(events) == {retained}
    assert stats.events_deleted == 1 and stats.detections_deleted == 1
    assert goes_with_it not in world.ids(detections)
    assert comparable(preview) == comparable(stats)


@pytest.mark.parametrize("schema_shape", ["camera"], indirect=True)  # events.deleted_at is the camera's
def test_a_young_event_whose_deleted_at_holds_empty_text_keeps_its_old_detection(
    world: CameraWorld, tmp_path: Path
):
    # A writer that clears a soft delete with '' instead of NULL: under a rule on deleted_at the event
    # is not soft-deleted, so it is retained, and so is every detection it links.
    _sqlite_only(world)
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: events\n    time_column: deleted_at\n    retention_days: 7\n")
    world.policy = read_policy(policy)
    young = world.event(world.recent(20), clip=False)
    _respell(world.engine, "events", "deleted_at", young, "")
    kept = world.detection(world.old(3), events_=(young,))
    soft_deleted = world.event(world.recent(20), clip=False)
    _respell(
        world.engine, "events", "deleted_at", soft_deleted, _without_colon(world.now - timedelta(days=8))
    )

    preview = world.run(dry_run=True)
    stats = world.run()

    assert world.ids(detections) == {kept}
    assert world.ids(events) == {young}
    assert stats.events_deleted == 1 and stats.detections_deleted == 0
    assert comparable(preview) == comparable(stats)


def test_times_written_with_offsets_without_colon_or_as_unix_seconds_expire_by_their_instant(
    world: CameraWorld,
):
    _sqlite_only(world)
    cutoff = world.cutoff
    sixty_days_old = world.now - timedelta(days=60)
    expired: list[object] = [
        _without_colon(sixty_days_old),
        sixty_days_old.strftime("%Y-%m-%dT%H:%M:%S.%f%z"),
        _without_colon(cutoff - SECOND, 14),  # shows the next day's date
        _without_colon(cutoff - SECOND, -9, -30),
        int(sixty_days_old.timestamp()),
        (cutoff - SECOND).timestamp() + 0.5,
    ]
    kept: list[object] = [
        _without_colon(cutoff),  # exactly at the cutoff
        _without_colon(cutoff, 14),
        _without_colon(cutoff + SECOND, -14),
        int(cutoff.timestamp()),
        int(world.recent(1).timestamp()),
    ]
    for stored in expired + kept:
        _respell(world.engine, "gpu_stats", "recorded_at", world.gpu(world.now), stored)

    preview = world.run(dry_run=True)
    stats = world.run()

    assert stats.gpu_stats_deleted == len(expired)
    assert world.count(gpu_stats) == len(kept)
    assert comparable(preview) == comparable(stats)


def test_emergency_mode_steps_to_the_oldest_kept_row_whatever_its_spelling(world: CameraWorld):
    # A step taken from a younger row than the oldest kept one would delete more than the oldest data.
    _sqlite_only(world)
    for stored in (_without_colon(world.recent(3), 14), int(world.recent(2).timestamp()), "", "yesterday"):
        _respell(world.engine, "gpu_stats", "recorded_at", world.gpu(world.now), stored)
    world.gpu(world.recent(4))
    registry = world.plan().registry

    assert oldest_kept(world.engine, registry, world.cutoff) == world.recent(2)
    _respell(
        world.engine, "gpu_stats", "recorded_at", world.gpu(world.now), _without_colon(world.recent(1), -3)
    )
    assert oldest_kept(world.engine, registry, world.cutoff) == world.recent(1)


def test_a_time_that_reads_as_no_instant_is_never_deleted_by_it_and_doctor_counts_it(world: CameraWorld):
    _sqlite_only(world)
    unreadable: list[object] = [
        "",
        "2026-04-16 03:00:00 UTC",
        "yesterday",
        int(world.old(30).timestamp() * 1000),  # milliseconds: past year 9999 as seconds
    ]
    for stored in unreadable:
        _respell(world.engine, "gpu_stats", "recorded_at", world.gpu(world.now), stored)
    world.gpu(world.old(30))
    event = world.event(world.recent(1), clip=False)
    _respell(world.engine, "events", "started_at", event, "17/05/2026 03:00")
    linked = world.detection(world.old(3), events_=(event,))

    report = diagnose(world.engine, world.plan(dry_run=True))
    preview = world.run(dry_run=True)
    stats = world.run()

    assert stats.gpu_stats_deleted == 1
    assert world.count(gpu_stats) == len(unreadable)
    assert world.ids(detections) == {linked} and world.ids(events) == {event}
    assert comparable(preview) == comparable(stats)
    assert [w.split(" hold ")[0] for w in report.warnings if "reads as no time" in w] == [
        "1 rows of events",
        f"{len(unreadable)} rows of gpu_stats",
    ]


def test_the_oldest_row_an_observation_reports_is_read_as_an_instant_whatever_sorts_first(world: CameraWorld):
    _sqlite_only(world)
    entry = Registry()["gpu_stats"]
    oldest, newer = world.old(10), world.recent(10)
    for stored in ("", int(oldest.timestamp()), "yesterday"):  # the number and '' sort before any date
        _respell(world.engine, "gpu_stats", "recorded_at", world.gpu(world.now), stored)
    world.gpu(newer)

    observed = table_inventory(world.engine, entry)
    health = retention_health(world.engine, Registry(), "gpu_stats", 30, 7, world.now)

    assert (observed.rows, observed.oldest) == (4, oldest)
    assert health.oldest == oldest and health.overdue_rows == 1
    _respell(world.engine, "gpu_stats", "recorded_at", 2, _without_colon(world.old(50), hours=2))
    assert table_inventory(world.engine, entry).oldest == world.old(50)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    camera_metadata.create_all(engine)
    return engine


def _plan(engine: Engine, statement) -> str:
    compiled = statement.compile(engine)
    values = [compiled.construct_params()[key] for key in compiled.positiontup]
    values = [v.replace(tzinfo=None).isoformat(" ") if isinstance(v, datetime) else v for v in values]
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), tuple(values)).all()
    return "\n".join(row[3] for row in rows)


def test_on_sqlite_finding_what_expired_searches_the_time_indexes_instead_of_reading_them_whole(
    sqlite_engine: Engine,
):
    # julianday(column) alone cannot use an index: "nothing expired" read every entry (0.33 s for the
    # detections of a 1M database). The text bound in front of it lets SQLite search the index.
    cutoff = LATE - timedelta(days=30)

    assert "ix_gpu_stats_recorded_at (recorded_at<?)" in _plan(
        sqlite_engine, expiring.select_expired_id_span(Expiry.of(cutoff), "gpu_stats")
    )
    detection_span = _plan(sqlite_engine, expiring.select_expired_detection_id_span(Expiry.of(cutoff)))
    assert "ix_detections_detected_at (detected_at<?)" in detection_span
    assert "ix_events_started_at (started_at<?)" in detection_span
    assert "ix_logs_timestamp (timestamp<?)" in _plan(
        sqlite_engine, expiring.count_expired(Expiry.of(cutoff), "logs")
    )
