"""What the observations and the retention_enforced checks read: row estimates of partitioned tables, and
the oldest row of a table whose time column has only a BRIN index (the camera system's gpu_stats)."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, inspect, text
from sqlalchemy.engine import Engine

from retention_pipeline.core import estimates
from retention_pipeline.core.inventory import retention_health, table_inventory
from retention_pipeline.core.tables import Registry
from retention_pipeline_tests.camera_schema import gpu_stats
from retention_pipeline_tests.factories import LOG_RETENTION_DAYS, RETENTION_DAYS, CameraWorld

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
        # p2: the next month, pre-created by a partition manager; empty, autovacuum never analyzes it
        months = (("2026-05-01", "2026-06-01"), ("2026-06-01", "2026-07-01"), ("2026-07-01", "2026-08-01"))
        for n, (start, end) in enumerate(months):
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

    since = datetime.now(UTC)
    with engine.begin() as conn:  # a cleanup drops the wholly expired partition p0 (287 rows)
        conn.execute(text("DROP TABLE gpu_stats_p0"))
    after_drop = table_inventory(engine, Registry()["gpu_stats"], 287, since)

    assert (half_analyzed.rows, half_analyzed.rows_estimated) == (500, False)  # counted: p1 never analyzed
    assert (analyzed.rows, analyzed.rows_estimated) == (500, True)  # the empty p2 counts 0
    # the dropped rows are gone from the leaves' sum already: not taken off a second time
    assert (after_drop.rows, after_drop.rows_estimated) == (213, True)


@contextmanager
def statements_on_gpu_stats(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if "FROM gpu_stats" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plans(engine: Engine, statements: list[tuple[str, Any]]) -> list[str]:
    """Each statement's plan where PostgreSQL takes any other path it has over a sequential scan (at this
    size it would read the few pages whole): a statement BRIN cannot serve still reads the whole table."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        return [
            "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            for statement, parameters in statements
        ]


@pytest.mark.parametrize("schema_shape", ["camera"], indirect=True)
@pytest.mark.parametrize("expired", [False, True])
def test_the_oldest_gpu_stat_and_its_check_are_read_through_the_brin_index(
    expired: bool, world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(estimates, "EXACT_COUNT_ROWS", 0)  # the estimate: no count(*)
    now = world.now
    first = now - timedelta(days=40 if expired else RETENTION_DAYS - 1, minutes=7)
    times = [first + timedelta(hours=n) for n in range(int((now - first).total_seconds() // 3600))]
    with world.engine.begin() as conn:
        conn.execute(insert(gpu_stats), [{"recorded_at": at} for at in times])
    if world.engine.dialect.name == "postgresql":
        with world.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE gpu_stats"))
    entry = Registry()["gpu_stats"]

    with statements_on_gpu_stats(world.engine) as seen:
        observed = table_inventory(world.engine, entry, horizon=now - timedelta(days=RETENTION_DAYS))
        health = retention_health(
            world.engine, Registry(), "gpu_stats", RETENTION_DAYS, LOG_RETENTION_DAYS, now
        )

    assert observed.oldest == health.oldest == first
    assert table_inventory(world.engine, entry).oldest == first  # the same as a plain min()
    overdue = sum(at < now - timedelta(days=RETENTION_DAYS + 1) for at in times)  # a run one day ago's
    assert bool(overdue) == expired
    assert (health.passed, health.overdue_rows) == (not expired, overdue)
    if world.engine.dialect.name == "postgresql":
        # Nothing expired, the health check reads nothing but BRIN ranges; when something is, only its
        # count (the purge's own predicate, within the id span of the expired rows) takes another path.
        counting = ("min(gpu_stats.id)", "count(*)")
        assert expired or not any(c in s[0] for s in seen for c in counting)
        reads = plans(world.engine, [s for s in seen if not any(c in s[0] for c in counting)])
        assert reads and all(BRIN in plan and "Seq Scan" not in plan for plan in reads), reads


@pytest.mark.parametrize("schema_shape", ["camera"], indirect=True)
@pytest.mark.parametrize("index", ["none", "btree"])
def test_the_oldest_row_of_a_table_without_a_brin_only_time_column_is_one_min(index: str, world: CameraWorld):
    # The windows serve a BRIN index only: with no index each would be one more full scan, with a btree
    # one min() reads one entry.
    now = world.now
    first = now - timedelta(days=RETENTION_DAYS - 1, minutes=7)
    with world.engine.begin() as conn:
        for found in inspect(conn).get_indexes("gpu_stats"):
            if found["column_names"][:1] == ["recorded_at"]:
                conn.execute(text(f"DROP INDEX {found['name']}"))
        if index == "btree":
            conn.execute(text("CREATE INDEX ix_gpu_stats_recorded_at_btree ON gpu_stats (recorded_at)"))
        conn.execute(insert(gpu_stats), [{"recorded_at": first + timedelta(hours=n)} for n in range(48)])

    with statements_on_gpu_stats(world.engine) as seen:
        observed = table_inventory(world.engine, Registry()["gpu_stats"], horizon=now - timedelta(days=30))

    assert observed.oldest == first
    assert len([s for s in seen if "min(gpu_stats.recorded_at)" in s[0]]) == 1, seen
