"""The camera system's tables, as far as retention touches them, plus the pipeline's own bookkeeping table.

The camera tables are a subset of the real schema (same table and column names). The pipeline never
creates or alters them in a real database; `camera_metadata` is created only by the demo and the tests.
The only table the pipeline itself creates is `retention_file_queue` (see `ensure_bookkeeping`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeDecorator

from .db import write_transaction


class UTCDateTime(TypeDecorator[datetime]):
    """TIMESTAMPTZ that only accepts aware datetimes and always returns aware UTC ones.

    SQLite has no time zone type: values are stored as naive UTC text, and naive values read back
    (including ones the camera system wrote) are taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; all times must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)


camera_metadata = MetaData()

cameras = Table(
    "cameras",
    camera_metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255)),
)

events = Table(
    "events",
    camera_metadata,
    Column("id", Integer, primary_key=True),
    Column("batch_id", String(64), nullable=False),
    Column("camera_id", String(64), ForeignKey("cameras.id", ondelete="CASCADE")),
    Column("started_at", UTCDateTime, nullable=False, index=True),
    Column("ended_at", UTCDateTime),
    Column("risk_score", Integer),
    Column("reviewed", Boolean, default=False),
    Column("summary", Text),
    Column("clip_path", String(1024), nullable=True),
)

detections = Table(
    "detections",
    camera_metadata,
    Column("id", Integer, primary_key=True),
    Column("camera_id", String(64), ForeignKey("cameras.id", ondelete="CASCADE")),
    Column("file_path", String(1024), nullable=False, index=True),
    Column("thumbnail_path", String(1024), nullable=True, index=True),
    Column("detected_at", UTCDateTime, nullable=False, index=True),
    Column("object_type", String(64)),
    Column("confidence", Float),
    Column("media_type", String(16)),
)

event_detections = Table(
    "event_detections",
    camera_metadata,
    Column("event_id", Integer, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "detection_id",
        Integer,
        ForeignKey("detections.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    Column("created_at", UTCDateTime),
)

alerts = Table(
    "alerts",
    camera_metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Integer, ForeignKey("events.id", ondelete="CASCADE"), index=True),
    Column("created_at", UTCDateTime),
    Column("message", Text),
)

gpu_stats = Table(
    "gpu_stats",
    camera_metadata,
    Column("id", Integer, primary_key=True),
    Column("recorded_at", UTCDateTime, nullable=False, index=True),
    Column("gpu_utilization", Float),
    Column("memory_used", Integer),
    Column("temperature", Float),
)

logs = Table(
    "logs",
    camera_metadata,
    Column("id", Integer, primary_key=True),
    Column("timestamp", UTCDateTime, nullable=False, index=True),
    Column("level", String(10)),
    Column("component", String(50)),
    Column("message", Text),
)

bookkeeping_metadata = MetaData()

# Files whose rows are already deleted but which are not yet removed from disk. A path is queued in the
# same transaction that deletes its last row, so a crash between the commit and the unlink loses nothing:
# the next run drains the queue. `path` is unique so a shared file is queued once.
retention_file_queue = Table(
    "retention_file_queue",
    bookkeeping_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Unbounded like the camera system's path columns, so no stored path can fail the batch.
    Column("path", String, nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("queued_at", UTCDateTime, nullable=False),
)

FILE_KINDS = ("clip", "image", "thumbnail")


def ensure_bookkeeping(engine: Engine) -> None:
    """Create the pipeline's own queue table if it is missing; camera tables are never touched."""
    # A write transaction from the start: on SQLite, upgrading a read transaction to a write one fails
    # at once with "database is locked" while the camera system is writing.
    with write_transaction(engine) as connection:
        bookkeeping_metadata.create_all(connection, checkfirst=True)
