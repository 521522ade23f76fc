"""What the observations and the retention_enforced checks read: row estimates of partitioned tables, and
the oldest row of a table whose time column has only a BRIN index (the camera system's gpu_stats)."""

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from retention_pipeline.core import estimates
from retention_pipeline.core.inventory import table_inventory
from retention_pipeline.core.tables import Registry

BRIN = "Bitmap Index Scan on ix_cs_gpu_stats_recorded_at_brin"


def test_a_partitioned_tables_rows_are_its_analyzed_partitions_estimates(
    postgresql_only: None, engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(estimates, "EXACT_COUNT_ROWS", 0)  # every table counts as large: no count(*)
    with engine.begin() as conn:  # the camera system's older installs: gpu_stats partitioned by time
        conn.execute(text("DROP TABLE gpu_stats"))
        conn.execute(
            text(
                "CREATE TABLE gpu_stats (id bigserial, recorded_at timestamptz NOT NULL,"
                " PRIMARY KEY (id, recorded_at)) PARTITION BY RANGE (recorded_at)"
            )
        )
        for n, (start, end) in enumerate((("2026-05-01", "2026-06-01"), ("2026-06-01", "2026-07-01"))):
            conn.execute(
                text(
                    f"CREATE TABLE gpu_stats_p{n} PARTITION OF gpu_stats"
                    f" FOR VALUES FROM ('{start}') TO ('{end}')"
                )
            )
        conn.execute(
            text(
                "INSERT INTO gpu_stats (recorded_at) SELECT timestamptz '2026-05-20' + g * interval '1 hour'"
                " FROM generate_series(1, 500) g"
            )
        )

    def analyze(*tables: str) -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in tables:  # autovacuum analyzes the partitions, never the parent
                conn.execute(text(f"ANALYZE {name}"))

    analyze("gpu_stats_p0")
    half_analyzed = table_inventory(engine, Registry()["gpu_stats"])
    analyze("gpu_stats_p1")
    analyzed = table_inventory(engine, Registry()["gpu_stats"])

    assert (half_analyzed.rows, half_analyzed.rows_estimated) == (500, False)  # counted: p1 never analyzed
    assert (analyzed.rows, analyzed.rows_estimated) == (500, True)
