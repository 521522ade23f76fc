"""What the camera system's missing indexes cost the pipeline, measured side by side on identical copies.

Schema: the camera system's own (retention_pipeline_tests/camera_schema.py). Two comparisons per engine:

1. paths: the file step (the durable queue's drain: reference check, stat, unlink, queue bookkeeping) on
   the same database without and with indexes on detections.file_path, detections.thumbnail_path and
   events.clip_path. The queue is filled by the product's own row purge (half of N detections expired);
   the files are not created (every one counts as missing), so the figure is the database's share, the
   part the indexes can change. Runs alternate without/with, ROUNDS times; the ratio is of the medians.
2. cascade: purge_detections on CASCADE_N detections whose children sit in threat_detections (one per 5
   detections, CASCADE) and zone_anomalies (one per 7, SET NULL), without and with an index on their
   detection_id columns. Each deleted detection makes the engine run its foreign-key action once per child
   table; without an index that is a full scan of the child table per deleted row.

    PYTHONPATH=. python benchmarks/bench_camera_shape.py [--sizes 100000] [--engines sqlite,postgresql]
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_cleanup import CUTOFF, NOW, build_database, copy_database, mount_roots, pg_admin, pg_url
from sqlalchemy import text

from retention_pipeline.core import purge
from retention_pipeline.core.cleanup import prepare_database
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.files import StorageRoots
from retention_pipeline.core.purge import drain_file_queue
from retention_pipeline_tests.camera_schema import path_indexes

ROUNDS = 2
CASCADE_N = 20_000
BATCH = 2000
TARGET_S = 0.05  # the product's default transaction target


def _base(engine_name: str, workdir: Path, label: str) -> str:
    if engine_name == "sqlite":
        return f"sqlite:///{workdir / (label + '.db')}"
    name = f"bench_shape_{uuid.uuid4().hex[:8]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    return pg_url(name)


def _drop(engine_name: str, *urls: str) -> None:
    if engine_name == "postgresql":
        pg_admin(*(f'DROP DATABASE IF EXISTS "{u.rsplit("/", 1)[1]}" WITH (FORCE)' for u in urls))


def _analyze(url: str) -> None:
    engine = make_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


def paths(engine_name: str, n: int, workdir: Path) -> dict:
    base = _base(engine_name, workdir, "paths")
    build_database(base, n, "camera")
    engine = make_engine(base)
    prepare_database(engine)
    purge.purge_table(engine, "detections", CUTOFF, 10_000, delete_images=True, target_s=None)
    purge.purge_table(engine, "events", CUTOFF, 10_000, target_s=None)
    with engine.connect() as conn:
        queued = conn.execute(text("SELECT count(*) FROM retention_file_queue")).scalar_one()
    engine.dispose()
    _analyze(base)
    mount_roots(workdir / "media")  # the queued files then count as missing, none stays queued
    roots = StorageRoots.from_dirs(workdir / "media", [Path("thumbnails"), Path("images"), Path("clips")])
    timings: dict[str, list[float]] = {"without": [], "with": []}
    copies = []
    for round_ in range(ROUNDS):
        for variant in ("without", "with"):
            url = copy_database(base, engine_name, workdir, f"{variant}{round_}")
            copies.append(url)
            engine = make_engine(url)
            if variant == "with":
                with engine.begin() as conn:
                    for index in path_indexes():
                        index.create(conn)
                engine.dispose()
                _analyze(url)
                engine = make_engine(url)
            started = time.perf_counter()
            counts = drain_file_queue(engine, roots)
            timings[variant].append(time.perf_counter() - started)
            assert counts.files_missing == queued, (counts.files_missing, queued)
            engine.dispose()
            print(
                f"[{engine_name} {n}] file step {variant} path indexes: {timings[variant][-1]:.2f}s",
                file=sys.stderr,
            )
    _drop(engine_name, base, *copies)
    without, with_ = statistics.median(timings["without"]), statistics.median(timings["with"])
    return {
        "engine": engine_name,
        "n": n,
        "queued_paths": queued,
        "without_s": without,
        "with_s": with_,
        "without_vs_with": without / with_,
    }


def _cascade_world(url: str, n: int) -> None:
    build_database(url, n, "camera")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO threat_detections (detection_id) SELECT id FROM detections WHERE id % 5 = 0")
        )
        conn.execute(
            text(
                "INSERT INTO zone_anomalies (id, detection_id) SELECT 'z' || id, id FROM detections"
                " WHERE id % 7 = 0"
            )
        )
    engine.dispose()
    _analyze(url)


def cascade(engine_name: str, workdir: Path) -> dict:
    base = _base(engine_name, workdir, "cascade")
    _cascade_world(base, CASCADE_N)
    rates = {}
    copies = []
    for variant in ("without", "with"):
        url = copy_database(base, engine_name, workdir, f"cascade_{variant}")
        copies.append(url)
        engine = make_engine(url)
        prepare_database(engine)
        if variant == "with":
            with engine.begin() as conn:
                conn.execute(text("CREATE INDEX ix_threat_detection ON threat_detections (detection_id)"))
                conn.execute(text("CREATE INDEX ix_zone_detection ON zone_anomalies (detection_id)"))
        started = time.perf_counter()
        counts = purge.purge_table(engine, "detections", CUTOFF, BATCH, delete_images=True, target_s=TARGET_S)
        seconds = time.perf_counter() - started
        engine.dispose()
        rates[variant] = counts.deleted / seconds
        print(
            f"[{engine_name}] cascade {variant} FK indexes: {counts.deleted} detections in {seconds:.2f}s,"
            f" {counts.batches} batches, {counts.retries} cut off",
            file=sys.stderr,
        )
    _drop(engine_name, base, *copies)
    return {
        "engine": engine_name,
        "n": CASCADE_N,
        "without_per_s": rates["without"],
        "with_per_s": rates["with"],
        "with_vs_without": rates["with"] / rates["without"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    import pandas as pd

    path_rows, cascade_rows = [], []
    for engine_name in args.engines.split(","):
        workdir = Path(tempfile.mkdtemp(prefix=f"bench_shape_{engine_name}_"))
        try:
            for n in (int(s) for s in args.sizes.split(",")):
                path_rows.append(paths(engine_name, n, workdir))
            cascade_rows.append(cascade(engine_name, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"camera system's schema, reference time {NOW.isoformat()}")
    print("\nfile step, without vs with path indexes (target: without <= 1.25x with)")
    print(pd.DataFrame(path_rows).to_markdown(index=False, floatfmt=".2f"))
    print("\ndetection purge, without vs with indexes on the children's detection_id")
    print(pd.DataFrame(cascade_rows).to_markdown(index=False, floatfmt=".0f"))


if __name__ == "__main__":
    main()
