"""Turn a benchmark database's four retention tables into weekly range-partitioned ones (PostgreSQL), as the
camera system once partitioned them: primary key (id, time column), a default partition, weekly bounds
aligned on the data cutoff so a week either lies wholly before it or wholly after.

Foreign keys to `events.id` and `detections.id` cannot survive (a partitioned table can only be referenced
by its whole key): they are dropped with the plain tables, as the camera system's partitioned schema had
none. The keys out of `events` and `detections` to `cameras` are made again on the partitioned tables.
The rows are the same, so the product's work is the same rows and files.
"""

from datetime import datetime, timedelta

from sqlalchemy import text

from retention_pipeline.core.db import make_engine

TABLES = {
    "events": "started_at",
    "detections": "detected_at",
    "gpu_stats": "recorded_at",
    "logs": "timestamp",
}
CAMERA_KEYED = ("events", "detections")
WEEKS_BEFORE, WEEKS_AFTER = 8, 6  # the generated rows lie between cutoff - 8 weeks and now = cutoff + 30 days


def partition_weekly(url: str, cutoff: datetime) -> int:
    """Partition the four tables weekly around `cutoff`; returns how many partitions were made."""
    engine = make_engine(url)
    made = 0
    with engine.begin() as conn:
        for table, key in TABLES.items():
            # Names are this script's own constants; the bounds are bound parameters.
            conn.execute(text(f"ALTER TABLE {table} RENAME TO {table}_plain"))
            conn.execute(
                text(
                    f"CREATE TABLE {table} (LIKE {table}_plain INCLUDING DEFAULTS, PRIMARY KEY (id, {key}))"
                    f" PARTITION BY RANGE ({key})"
                )
            )
            conn.execute(text(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT"))
            for week in range(-WEEKS_BEFORE, WEEKS_AFTER):
                low = cutoff + timedelta(weeks=week)
                conn.execute(
                    text(
                        f"CREATE TABLE {table}_w{week + WEEKS_BEFORE} PARTITION OF {table}"
                        " FOR VALUES FROM (:low) TO (:high)"
                    ),
                    {"low": low, "high": low + timedelta(weeks=1)},
                )
                made += 1
            conn.execute(text(f"INSERT INTO {table} SELECT * FROM {table}_plain"))  # noqa: S608
            conn.execute(text(f"DROP TABLE {table}_plain CASCADE"))
            conn.execute(text(f"CREATE INDEX ON {table} ({key})"))
            if table in CAMERA_KEYED:  # the camera system's own key out of the table survives partitioning
                conn.execute(
                    text(
                        f"ALTER TABLE {table} ADD FOREIGN KEY (camera_id)"
                        " REFERENCES cameras (id) ON DELETE CASCADE"
                    )
                )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return made
