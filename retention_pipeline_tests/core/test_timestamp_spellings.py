"""Timestamps as other writers spell them: compared as instants, and found through the time indexes."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import String, column, insert, table
from sqlalchemy.engine import Engine

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.queries import expiring
from retention_pipeline.core.schema import camera_metadata, gpu_stats, logs
from retention_pipeline.core.tables import Expiry
from retention_pipeline_tests.factories import CameraWorld

SECOND = timedelta(seconds=1)
# A reference time late in the UTC day: at +14:00 an instant just before the cutoff is written with the
# next day's date, the spelling that sorts furthest above the cutoff as text.
LATE = datetime(2026, 6, 15, 22, 30, tzinfo=UTC)


def _write_raw(engine: Engine, name: str, ts_column: str, spellings: list[str], **extra: str) -> None:
    raw = table(name, column(ts_column, String), *(column(key, String) for key in extra))
    with engine.begin() as conn:
        conn.execute(insert(raw), [{ts_column: spelling, **extra} for spelling in spellings])


def test_naive_sqlite_style_timestamps_in_other_formats_compare_as_instants(world: CameraWorld):
    # Another writer may store '2026-05-16T03:00:00' or '...+00:00'; all are UTC instants.
    if world.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL stores TIMESTAMPTZ, not text; the text formats are SQLite's problem")
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
