"""Dropping wholly expired partitions against one plain DELETE of the same rows (PostgreSQL only).

Schema: the camera system's `logs` and `gpu_stats` columns, range-partitioned by their time column in
daily partitions over DAYS days, with a default partition; two thirds of the rows expired. Each variant
runs on its own copy of one generated database, side by side in one run:

- plain_delete: `DELETE FROM logs WHERE timestamp < cutoff` and the same for gpu_stats, one transaction;
- count_only: `SELECT count(*) … WHERE ts < cutoff` per table and nothing else: what any exact report of
  the deleted rows must read at least, whatever deletes them;
- product: `purge_table` for logs and gpu_stats as data_cleanup runs them (partitions wholly before the
  cutoff dropped whole, the boundary partition in batches).

While each variant runs, a camera writer inserts a log line and a GPU stat stamped now (into the current
partition), each its own transaction, every 5 ms; the table gives its slowest and 99th-percentile commit.

    python benchmarks/bench_partitions.py [--logs 2000000] [--gpu-stats 1000000]

Prints a Markdown table and writes benchmarks/results/partitions.json.
"""

import argparse
import json
import multiprocessing
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench_cleanup import NOW, RESULTS, pg_admin, pg_url
from sqlalchemy import column as sa_column
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy import table as sa_table

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.purge import purge_table
from retention_pipeline.core.tables import Expiry

DAYS = 30
KEEP_DAYS = 10  # the last third of the days is kept
CUTOFF = (NOW - timedelta(days=KEEP_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
TABLES = {
    "logs": ("timestamp", "level VARCHAR(10), component VARCHAR(50) NOT NULL, message TEXT NOT NULL"),
    "gpu_stats": ("recorded_at", "gpu_utilization FLOAT, memory_used INTEGER, temperature FLOAT"),
}
FILLERS = {
    "logs": "'INFO', 'camera', 'frame processed'",
    "gpu_stats": "random() * 100, (random() * 8000)::int, 40 + random() * 40",
}


def build(url: str, rows: dict[str, int]) -> None:
    engine = make_engine(url)
    first_day = CUTOFF - timedelta(days=DAYS - KEEP_DAYS)
    with engine.begin() as conn:
        for table, (column, columns) in TABLES.items():
            conn.execute(
                text(
                    f"CREATE TABLE {table} (id BIGSERIAL, {column} TIMESTAMPTZ NOT NULL, {columns},"
                    f" PRIMARY KEY (id, {column})) PARTITION BY RANGE ({column})"
                )
            )
            conn.execute(text(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT"))
            for day in range(DAYS + 1):
                low = first_day + timedelta(days=day)
                conn.execute(
                    text(
                        f"CREATE TABLE {table}_d{day} PARTITION OF {table} FOR VALUES FROM (:low) TO (:high)"
                    ),
                    {"low": low, "high": low + timedelta(days=1)},
                )
            conn.execute(text(f"CREATE INDEX ON {table} ({column})"))
            # Rows spread evenly over the days, in insertion order (ids rise with time, as a camera writes).
            # This script's own constant names; the values are bound parameters.
            names = ", ".join(c.split()[0] for c in columns.split(", "))
            conn.execute(
                text(
                    f"INSERT INTO {table} ({column}, {names})"  # noqa: S608
                    " SELECT :first + (CAST(:span AS bigint) * g / :n) * interval '1 second',"
                    f" {FILLERS[table]}"
                    " FROM generate_series(0, :n - 1) AS g"
                ),
                {"first": first_day, "span": DAYS * 86400, "n": rows[table]},
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


class CameraWriter:
    """The camera system at work, in its own process: a row stamped now in each of `tables` (logs,
    gpu_stats, detections), one transaction each, every 5 ms; how long each insert took from BEGIN to the
    end of COMMIT."""

    def __init__(
        self, url: str, tables: tuple[str, ...] = ("logs", "gpu_stats"), first_id: int = 1_000_000_000
    ) -> None:
        self.stopping, self.results = multiprocessing.Event(), multiprocessing.Queue()
        self.process = multiprocessing.Process(
            target=_write, args=(url, tables, self.stopping, self.results, first_id)
        )
        self.process.start()

    def figures(self) -> dict:
        """The writer's inserts, slowest and 99th-percentile insert in ms (BEGIN to the end of COMMIT), and
        the slowest INSERT statement alone: a lock the writer waits for holds the statement, while a COMMIT
        waits for the disk (its WAL flush), which a checkpoint slows whoever holds which lock."""
        self.stopping.set()
        timings = self.results.get(timeout=60)
        self.process.join()
        waits = sorted(total for total, _statement in timings)
        return {
            "writer_inserts": len(waits),
            "writer_max_ms": waits[-1] * 1000,
            "writer_p99_ms": statistics.quantiles(waits, n=100)[98] * 1000,
            "writer_max_statement_ms": max(statement for _total, statement in timings) * 1000,
        }


def _row_now(table: str, row_id: int) -> Any:
    """An insert of one row stamped now into `table`, with the columns the camera system requires.

    Ids are the writer's own, far above the generated ones: a partitioned copy's id column has no default.
    """
    now = datetime.now(UTC)
    if table == "logs":
        logs = sa_table(table, *(sa_column(c) for c in ("id", "timestamp", "component", "message")))
        return insert(logs).values(id=row_id, timestamp=now, component="camera", message="frame")
    if table == "gpu_stats":
        gpu = sa_table(table, *(sa_column(c) for c in ("id", "recorded_at", "gpu_utilization")))
        return insert(gpu).values(id=row_id, recorded_at=now, gpu_utilization=50.0)
    found = sa_table(table, *(sa_column(c) for c in ("id", "camera_id", "file_path", "detected_at")))
    return insert(found).values(id=row_id, camera_id="cam", file_path="/media/now.jpg", detected_at=now)


def _write(url: str, tables: tuple[str, ...], stopping: Any, results: Any, first_id: int) -> None:
    engine = make_engine(url)
    seconds = []
    with engine.connect() as conn:
        while not stopping.is_set():
            for table in tables:
                statement = _row_now(table, first_id + len(seconds))
                started = time.perf_counter()
                with conn.begin():
                    conn.execute(statement)
                    executed = time.perf_counter()
                seconds.append((time.perf_counter() - started, executed - started))
            time.sleep(0.005)
    engine.dispose()
    results.put(seconds)


def _on_expired_rows(url: str, act: Any) -> tuple[int, float]:
    """`act(conn, rows, expired)` on each table's expired rows, in one transaction: the sum of what it
    returns, and the seconds it took."""
    engine = make_engine(url)
    started = time.perf_counter()
    total = 0
    with engine.begin() as conn:
        for table, (column, _columns) in TABLES.items():
            rows = sa_table(table, sa_column(column))
            total += act(conn, rows, rows.c[column] < CUTOFF)
    seconds = time.perf_counter() - started
    engine.dispose()
    return total, seconds


def plain_delete(url: str) -> dict:
    deleted, seconds = _on_expired_rows(
        url, lambda conn, rows, expired: conn.execute(delete(rows).where(expired)).rowcount
    )
    return {"rows": deleted, "db_seconds": seconds, "longest_txn_ms": seconds * 1000}


def count_only(url: str) -> dict:
    counted, seconds = _on_expired_rows(
        url,
        lambda conn, rows, expired: conn.execute(
            select(func.count()).select_from(rows).where(expired)
        ).scalar(),
    )
    return {"rows": counted, "db_seconds": seconds, "longest_txn_ms": 0.0}


def product(url: str) -> dict:
    engine = make_engine(url)
    expiry = Expiry.of(CUTOFF, CUTOFF)
    started = time.perf_counter()
    counts = [purge_table(engine, table, expiry, 10_000, target_s=0.05) for table in TABLES]
    seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "rows": sum(c.deleted for c in counts),
        "db_seconds": seconds,
        "longest_txn_ms": max(c.longest_transaction_ms for c in counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=2_000_000)
    parser.add_argument("--gpu-stats", type=int, default=1_000_000)
    args = parser.parse_args()
    import pandas as pd

    base = f"bench_parts_{uuid.uuid4().hex[:8]}"
    pg_admin(f'CREATE DATABASE "{base}"')
    started = time.perf_counter()
    build(pg_url(base), {"logs": args.logs, "gpu_stats": args.gpu_stats})
    print(
        f"built {args.logs} logs, {args.gpu_stats} gpu_stats in {time.perf_counter() - started:.0f}s",
        file=sys.stderr,
    )
    results = []
    variants = (("plain_delete", plain_delete), ("count_only", count_only), ("product", product))
    try:
        for variant, run in variants:
            pg_admin(f'CREATE DATABASE "{base}_{variant}" TEMPLATE "{base}"')
            writer = CameraWriter(pg_url(f"{base}_{variant}"))
            time.sleep(0.5)  # the writer's connection is open and inserting before the variant starts
            figures = run(pg_url(f"{base}_{variant}"))
            figures.update(writer.figures())
            figures.update(variant=variant, logs=args.logs, gpu_stats=args.gpu_stats)
            results.append(figures)
            print(f"{variant}: {figures}", file=sys.stderr)
    finally:
        pg_admin(
            *(
                f'DROP DATABASE IF EXISTS "{base}{s}" WITH (FORCE)'
                for s in ("", *(f"_{v}" for v, _ in variants))
            )
        )
    frame = pd.DataFrame(results)
    floor = frame.loc[frame.variant == "plain_delete", "db_seconds"].iloc[0]
    frame["rows_per_s"] = frame.rows / frame.db_seconds
    frame["db_vs_plain_delete"] = frame.db_seconds / floor
    print("schema: camera columns of logs and gpu_stats, range-partitioned daily (PostgreSQL)")
    print(
        frame[
            [
                "variant",
                "logs",
                "gpu_stats",
                "rows",
                "db_seconds",
                "rows_per_s",
                "longest_txn_ms",
                "db_vs_plain_delete",
                "writer_max_ms",
                "writer_p99_ms",
            ]
        ].to_markdown(index=False, floatfmt=".3f")
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "partitions.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
