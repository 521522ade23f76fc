"""The camera system's real database shape (`shared/CAMERA_SCHEMA.md`), as a test fixture on both engines.

Our own `core/schema.py` indexes every path column; the camera system indexes none of them, hangs a dozen
tables off events and detections with CASCADE, SET NULL or no foreign key at all, keys alerts by UUID and
has only a BRIN index on `gpu_stats.recorded_at`. jsonb / tsvector / uuid become TEXT on SQLite, BRIN a plain
index; timestamps are stored as SQLAlchemy stores them on each engine.
"""

from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import postgresql

camera_system_metadata = MetaData()

JSONB = Text().with_variant(postgresql.JSONB(), "postgresql")
TSVECTOR = Text().with_variant(postgresql.TSVECTOR(), "postgresql")
UUID = String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")
STAMP = DateTime(timezone=True)


cameras = Table(
    "cameras",
    camera_system_metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255)),
    Column("folder_path", String(1024), nullable=False, unique=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
)

detections = Table(
    "detections",
    camera_system_metadata,
    Column("id", Integer, primary_key=True),
    Column("camera_id", String(64), ForeignKey("cameras.id", ondelete="CASCADE")),
    Column("file_path", String(1024), nullable=False),
    Column("thumbnail_path", String(1024)),
    Column("detected_at", STAMP, nullable=False),
    Column("object_type", String(64)),
    Column("confidence", Float),
    Column("media_type", String(16)),
    Column("enrichment_data", JSONB),
    Column("search_vector", TSVECTOR),
    Column("labels", JSONB),
    Index("ix_cs_detections_detected_at", "detected_at"),
    Index("ix_cs_detections_detected_at_brin", "detected_at", postgresql_using="brin"),
    Index("ix_cs_detections_camera_time", "camera_id", "detected_at"),
    Index(
        "ix_cs_detections_person",
        "camera_id",
        "detected_at",
        postgresql_where=text("object_type = 'person'"),
        sqlite_where=text("object_type = 'person'"),
    ),
    Index(
        "ix_cs_detections_confident",
        "camera_id",
        "detected_at",
        postgresql_where=text("confidence >= 0.8"),
        sqlite_where=text("confidence >= 0.8"),
    ),
)

events = Table(
    "events",
    camera_system_metadata,
    Column("id", Integer, primary_key=True),
    Column("batch_id", String(64), nullable=False),
    Column("camera_id", String(64), ForeignKey("cameras.id", ondelete="CASCADE")),
    Column("started_at", STAMP, nullable=False),
    Column("ended_at", STAMP),
    Column("risk_score", Integer, CheckConstraint("risk_score BETWEEN 0 AND 100")),
    Column("reviewed", Boolean, nullable=False, server_default=text("false")),
    Column("summary", Text),
    Column("clip_path", String(1024)),
    Column("deleted_at", STAMP),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("context", JSONB),
    Column("search_vector", TSVECTOR),
    Index("ix_cs_events_started_at", "started_at"),
    Index("ix_cs_events_started_at_brin", "started_at", postgresql_using="brin"),
    Index(
        "ix_cs_events_live",
        "started_at",
        "camera_id",
        postgresql_where=text("deleted_at IS NULL"),
        sqlite_where=text("deleted_at IS NULL"),
    ),
)

event_detections = Table(
    "event_detections",
    camera_system_metadata,
    Column("event_id", Integer, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
    Column("detection_id", Integer, ForeignKey("detections.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", STAMP),
    Index("ix_cs_event_detections_event", "event_id"),
    Index("ix_cs_event_detections_detection", "detection_id"),
)

alert_rules = Table(
    "alert_rules",
    camera_system_metadata,
    Column("id", UUID, primary_key=True),
    Column("name", String(255)),
)

alerts = Table(
    "alerts",
    camera_system_metadata,
    Column("id", UUID, primary_key=True),
    Column("event_id", Integer, ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column("rule_id", UUID, ForeignKey("alert_rules.id", ondelete="SET NULL")),
    Column("dedup_key", String(255), nullable=False, server_default=text("'k'")),
    Column("created_at", STAMP),
    Column("message", Text),
    Index("ix_cs_alerts_event", "event_id"),
)


def _child(name: str, parent: str, ondelete: str, unique: bool, column: str | None = None) -> Table:
    """A table hanging off `parent` by `column` (default `<parent>_id`); SET NULL columns are nullable."""
    column = column or f"{parent.removesuffix('s')}_id"
    return Table(
        name,
        camera_system_metadata,
        Column("id", Integer, primary_key=True),
        Column(
            column,
            Integer,
            ForeignKey(f"{parent}.id", ondelete=ondelete),
            nullable=ondelete == "SET NULL",
            unique=unique,
        ),
        Column("note", Text),
    )


event_audits = _child("event_audits", "events", "CASCADE", unique=True)
event_feedback = _child("event_feedback", "events", "CASCADE", unique=True)
event_verifications = _child("event_verifications", "events", "CASCADE", unique=False)
event_notify_decisions = _child("event_notify_decisions", "events", "CASCADE", unique=False)
person_embeddings = _child("person_embeddings", "events", "SET NULL", unique=False, column="source_event_id")
experiment_results = _child("experiment_results", "events", "SET NULL", unique=False)

pose_results = _child("pose_results", "detections", "CASCADE", unique=True)
demographics_results = _child("demographics_results", "detections", "CASCADE", unique=True)
reid_embeddings = _child("reid_embeddings", "detections", "CASCADE", unique=True)
action_results = _child("action_results", "detections", "CASCADE", unique=True)
threat_detections = _child("threat_detections", "detections", "CASCADE", unique=False)

zone_anomalies = Table(
    "zone_anomalies",
    camera_system_metadata,
    Column("id", String(64), primary_key=True),
    Column("detection_id", Integer, ForeignKey("detections.id", ondelete="SET NULL")),
    Column("thumbnail_url", String(1024)),
    Column("timestamp", STAMP),
)

entities = Table(
    "entities",
    camera_system_metadata,
    Column("id", UUID, primary_key=True),
    Column("primary_detection_id", Integer),  # no foreign key: the reference may dangle
)

gpu_stats = Table(
    "gpu_stats",
    camera_system_metadata,
    Column("id", Integer, primary_key=True),
    Column("recorded_at", STAMP, nullable=False),
    Column("gpu_utilization", Float),
    Column("memory_used", Integer),
    Column("temperature", Float),
    # BRIN only on PostgreSQL; on SQLite the brin option is ignored and this is a plain index.
    Index("ix_cs_gpu_stats_recorded_at_brin", "recorded_at", postgresql_using="brin"),
)

logs = Table(
    "logs",
    camera_system_metadata,
    Column("id", Integer, primary_key=True),
    Column("timestamp", STAMP, nullable=False),
    Column(
        "level",
        String(10),
        CheckConstraint("level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')"),
    ),
    Column("component", String(50), nullable=False),
    Column("message", Text, nullable=False),
    Column("source", String(16), CheckConstraint("source IN ('backend', 'frontend')")),
    Column("event_id", Integer),  # no foreign key
    Column("detection_id", Integer),  # no foreign key
    Index("ix_cs_logs_timestamp", "timestamp"),
    Index("ix_cs_logs_timestamp_brin", "timestamp", postgresql_using="brin"),
)

# Children of events and detections, with how the camera system's foreign key treats them on delete.
EVENT_CHILDREN = {
    "event_audits": "CASCADE",
    "event_feedback": "CASCADE",
    "event_verifications": "CASCADE",
    "event_notify_decisions": "CASCADE",
    "person_embeddings": "SET NULL",
    "experiment_results": "SET NULL",
}
DETECTION_CHILDREN = {
    "pose_results": "CASCADE",
    "demographics_results": "CASCADE",
    "reid_embeddings": "CASCADE",
    "action_results": "CASCADE",
    "threat_detections": "CASCADE",
    "zone_anomalies": "SET NULL",
}
CHILD_COLUMN = {"person_embeddings": "source_event_id"}

# The indexes the camera system lacks and `doctor` recommends; the benchmark adds them for its "with" run.
PATH_COLUMNS = (("detections", "file_path"), ("detections", "thumbnail_path"), ("events", "clip_path"))


def path_indexes() -> list[Index]:
    """Indexes on the three path columns, built on throw-away tables so the schema above never gets them."""
    return [
        Index(f"ix_cs_{name}_{column}", Table(name, MetaData(), Column(column, String)).c[column])
        for name, column in PATH_COLUMNS
    ]


def create_camera_system_schema(engine: Any) -> None:
    """Create the camera system's tables on an empty database (alerts, entities: the caller gives uuids)."""
    camera_system_metadata.create_all(engine)


def drop_camera_system_schema(engine: Any) -> None:
    """Drop the camera system's tables if they exist."""
    camera_system_metadata.drop_all(engine)
