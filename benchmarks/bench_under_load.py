"""How long the purge's transactions hold, and how long a camera writer waits, while PostgreSQL is busy.

On one N-detection database from bench_cleanup's generator (two identical copies), the four row purges
run as the job runs them (the product's defaults: batch_size 10000, a 50 ms target, an 80 ms cap) while a
camera writer commits a new event with five linked detections every 20 ms. On the first copy nothing
else runs; on the second, another process bulk-loads a second database of the same size on the same
server, over and over (the eighth round saw a 215 ms batch while `make bench-rows` built its database).

Every attempt of every batch is timed from BEGIN to the end of COMMIT (or of its rollback), including the
ones cut off at the cap and those that fail with a lock timeout and are repeated; so is every writer
transaction. Prints a Markdown table and writes benchmarks/results/under_load.json.

    python benchmarks/bench_under_load.py [--n 1000000]
"""

import argparse
import json
import multiprocessing
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import create_engine, insert, text

sys.path.insert(0, str(Path(__file__).parent))
import bench_cleanup as generator

from retention_pipeline.core import purge
from retention_pipeline.core.cleanup import prepare_database
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.schema import detections, event_detections, events

RESULTS = Path(__file__).parent / "results"
TARGET_S = generator.TARGET_MS / 1000 or None
WRITER_EVERY_S = 0.02
FIRST_NEW_ID = 100_000_000  # the writer's rows, clear of the generator's ids


def _bulk_loader(name: str, n: int) -> None:
    """Builds an N-detection database, drops it and starts again, until terminated."""
    while True:
        generator.pg_admin(f'CREATE DATABASE "{name}"')
        generator.build_database(generator.pg_url(name), n)
        generator.pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')


class Writer(multiprocessing.Process):
    """A camera: every 20 ms one transaction adds an event and five detections linked to it.

    A process of its own: as a thread of the purge's process its timings would include waits for the GIL.
    """

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = multiprocessing.Event()
        self._out: multiprocessing.Queue = multiprocessing.Queue()

    def run(self) -> None:
        engine = make_engine(self.url)
        seconds: list[float] = []
        next_id = FIRST_NEW_ID
        while not self.stop.wait(WRITER_EVERY_S):
            now = datetime.now(UTC)
            found = [next_id + k for k in range(5)]
            started = time.perf_counter()
            with engine.begin() as conn:
                conn.execute(
                    insert(events),
                    {"id": next_id, "batch_id": "w", "camera_id": "cam", "started_at": now, "clip_path": ""},
                )
                conn.execute(
                    insert(detections),
                    [
                        {
                            "id": d,
                            "camera_id": "cam",
                            "file_path": "",
                            "thumbnail_path": "",
                            "detected_at": now,
                            "object_type": "person",
                            "confidence": 0.9,
                            "media_type": "image",
                        }
                        for d in found
                    ],
                )
                conn.execute(
                    insert(event_detections),
                    [{"event_id": next_id, "detection_id": d, "created_at": now} for d in found],
                )
            seconds.append(time.perf_counter() - started)
            next_id += 5
        engine.dispose()
        self._out.put(seconds)

    def finish(self) -> list[float]:
        """Stop the writer; the seconds each of its transactions took."""
        self.stop.set()
        seconds: list[float] = self._out.get()
        self.join()
        return seconds


def _timed_steps(held: list[dict], step_name: list[str]) -> None:
    """Wrap the purge's batch steps so every attempt's held time (committed, cut off or failed) is kept."""

    def traced(factory):  # type: ignore[no-untyped-def]
        def build(*args, **kwargs):  # type: ignore[no-untyped-def]
            step = factory(*args, **kwargs)

            def timed(after_id: int, until_id: int, limit: int):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                try:
                    batch = step(after_id, until_id, limit)
                except Exception as exc:
                    held.append(
                        {
                            "step": step_name[0],
                            "ms": (time.perf_counter() - started) * 1000,
                            "outcome": "error",
                        }
                    )
                    print(f"  {step_name[0]}: {type(exc).__name__} {str(exc)[:80]}", file=sys.stderr)
                    raise
                if batch.last_id is not None or batch.overran:
                    outcome = "cut off" if batch.overran else "committed"
                    held.append({"step": step_name[0], "ms": batch.seconds * 1000, "outcome": outcome})
                return batch

            return timed

        return build

    purge.loop.table_batches = traced(purge.loop.table_batches)


def run_purge(url: str, label: str) -> dict:
    """The four row purges in the job's order with a camera writer running; every held time."""
    engine = make_engine(url)
    prepare_database(engine)
    held: list[dict] = []
    step_name = ["detections"]
    _timed_steps(held, step_name)
    writer = Writer(url)
    writer.start()
    started = time.perf_counter()
    cutoff, size = generator.CUTOFF, generator.BATCH_SIZE
    deleted = purge.purge_table(
        engine, "detections", cutoff, size, delete_images=True, target_s=TARGET_S
    ).deleted
    step_name[0] = "events"
    deleted += purge.purge_table(engine, "events", cutoff, size, target_s=TARGET_S).deleted
    for table in ("gpu_stats", "logs"):
        step_name[0] = table
        deleted += purge.purge_table(engine, table, cutoff, size, target_s=TARGET_S).deleted
    seconds = time.perf_counter() - started
    writer_seconds = writer.finish()
    engine.dispose()
    frame = pd.DataFrame(held)
    ms = frame.ms
    writes = [s * 1000 for s in writer_seconds]
    return {
        "load": label,
        "rows_deleted": deleted,
        "purge_s": round(seconds, 2),
        "attempts": len(frame),
        "cut_off": int((frame.outcome == "cut off").sum()),
        "failed": int((frame.outcome == "error").sum()),
        "held_p50_ms": round(float(ms.median()), 1),
        "held_p99_ms": round(float(ms.quantile(0.99)), 1),
        "held_max_ms": round(float(ms.max()), 1),
        "held_over_100_ms": int((ms > 100).sum()),
        "longest_by_step": {k: round(v, 1) for k, v in frame.groupby("step").ms.max().items()},
        "writer_commits": len(writes),
        "writer_p50_ms": round(statistics.median(writes), 1),
        "writer_p99_ms": round(float(pd.Series(writes).quantile(0.99)), 1),
        "writer_max_ms": round(max(writes), 1),
    }


def _wait_for_inserts(name: str) -> None:
    """Until the bulk load has generated its rows in Python and its inserts reach the server."""
    while True:
        time.sleep(1)
        engine = create_engine(generator.pg_url(name))
        try:
            with engine.connect() as conn:
                if conn.execute(text("SELECT EXISTS (SELECT FROM events)")).scalar():
                    return
        except Exception:  # not created yet, or its tables not yet
            continue
        finally:
            engine.dispose()


def _child(url: str, label: str, out: "multiprocessing.queues.Queue") -> None:
    out.put(run_purge(url, label))


def _in_child(url: str, label: str) -> dict:
    # Its own process, so the batch-step wrappers and the purge's module state start fresh.
    out: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_child, args=(url, label, out))
    process.start()
    result = out.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    base = f"bench_{uuid.uuid4().hex[:8]}"
    copies = [base, f"{base}_loaded", f"{base}_bulk_load"]
    results = []
    try:
        generator.pg_admin(f'CREATE DATABASE "{base}"')
        started = time.perf_counter()
        generator.build_database(generator.pg_url(base), args.n)
        generator.pg_admin(f'CREATE DATABASE "{copies[1]}" TEMPLATE "{base}"')
        print(f"[n={args.n}] databases built in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        results.append(_in_child(generator.pg_url(base), "none"))
        print(f"  quiet: {results[-1]}", file=sys.stderr)
        loader = multiprocessing.Process(target=_bulk_loader, args=(copies[2], args.n))
        loader.start()
        _wait_for_inserts(copies[2])
        try:
            results.append(_in_child(generator.pg_url(copies[1]), "bulk load of another database"))
        finally:
            loader.terminate()
            loader.join()
        print(f"  loaded: {results[-1]}", file=sys.stderr)
    finally:
        for name in copies:
            generator.pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "longest_by_step"} for r in results])
    print(frame.to_markdown(index=False))
    for r in results:
        print(f"longest by step ({r['load']}): {r['longest_by_step']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "under_load.json").write_text(json.dumps({"n": args.n, "results": results}, indent=2))


if __name__ == "__main__":
    main()
