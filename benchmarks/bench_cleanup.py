"""data_cleanup benchmark against the floor and the naive design, on SQLite and PostgreSQL.

For each engine and size N it generates one camera database (N detections; N/5 events with clips, each
with its detections linked and every other one with an alert; N/2 GPU stats and N/2 log lines; half of
everything expired) and copies it once per variant, with real files for the expired rows (one thumbnail
per detection, one original image per event shared by its detections, one clip per event). Each variant
runs in its own child process so its peak RSS is its own:

- floor: one plain DELETE per table in one transaction, then a single-threaded os.unlink loop;
- same_rule: the fair floor, the product's whole job set-based in one transaction (the keep rule, children,
  every path of the deleted rows into a scratch table, those paths checked against the surviving rows in one
  join), then the same single-threaded unlink of what is unreferenced;
- naive: every path collected into a Python list, unbounded DELETEs in one transaction, then unlink;
- dry: data_cleanup with dry_run true (through the job); real: data_cleanup for real (through the job);
- partitioned (PostgreSQL): data_cleanup for real on the same rows and files with the four tables
  range-partitioned weekly (benchmarks/partitioned_copy.py), where whole weeks are dropped;
- noop: data_cleanup again with nothing left to delete; noop_cli: the same as an operator runs it, median of 5
  (`retention-pipeline run`, Python start to exit, on an existing Dagster instance); on PostgreSQL also
  noop_cli_vacuumed: the same after a VACUUM, as the next daily run finds the tables.

    python benchmarks/bench_cleanup.py [--sizes 100000,1000000] [--engines sqlite,postgresql] [--rows-only]
        [--shape camera|ours]

--shape camera (the default) measures the camera system's own schema
(retention_pipeline_tests/camera_schema.py: no index on any path column, uuid alerts, BRIN-only gpu_stats,
its child tables present and empty); --shape ours measures core/schema.py, which indexes every path column.

--rows-only creates no files (the floor's unlink loop is skipped and the job finds every file missing):
the database figures of 1M rows in minutes instead of the better part of an hour on a slow disk.

Prints a Markdown table and writes benchmarks/results/cleanup.json.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from partitioned_copy import partition_weekly
from sqlalchemy import (
    Column,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    insert,
    select,
    text,
    union_all,
)

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.purge import chunked
from retention_pipeline.core.schema import (
    alerts,
    camera_metadata,
    cameras,
    detections,
    ensure_bookkeeping,
    event_detections,
    events,
    gpu_stats,
    logs,
)
from retention_pipeline.settings import Settings
from retention_pipeline_tests.camera_schema import camera_system_metadata

RESULTS = Path(__file__).parent / "results"
PG_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
NOW = datetime.now(UTC).replace(microsecond=0)
CUTOFF = NOW - timedelta(days=30)
PER_EVENT = 5
CHUNK = 50_000
# The product's defaults unless set: batch_size is an upper bound, the time target sizes the batches.
DEFAULTS = Settings()
BATCH_SIZE = int(os.environ.get("BENCH_BATCH_SIZE", str(DEFAULTS.batch_size)))
TARGET_MS = float(os.environ.get("BENCH_TARGET_MS", str(DEFAULTS.transaction_target_ms)))  # 0: off
CLI_RUNS = 5  # the noop_cli row is their median; all of them go to stderr


def _rows(n: int, shape: str = "camera") -> dict[str, list[dict]]:
    """All rows for N detections; the first half (by id and time) is expired."""
    n_events = n // PER_EVENT
    out: dict[str, list[dict]] = {
        "events": [],
        "detections": [],
        "links": [],
        "alerts": [],
        "gpu": [],
        "logs": [],
    }
    for e in range(1, n_events + 1):
        expired = e <= n_events // 2
        at = (CUTOFF - timedelta(days=10, seconds=n_events - e)) if expired else (NOW - timedelta(seconds=e))
        clip = f"clips/{e // 1000}/{e}.mp4"
        out["events"].append(
            {"id": e, "batch_id": "b", "camera_id": "cam", "started_at": at, "clip_path": clip}
        )
        if e % 2:
            alert = {"event_id": e, "created_at": at, "message": "a"}
            if shape == "camera":
                alert["id"] = str(uuid.UUID(int=e))  # the camera system keys alerts by uuid
            out["alerts"].append(alert)
        for k in range(PER_EVENT):
            d = (e - 1) * PER_EVENT + k + 1
            out["detections"].append(
                {
                    "id": d,
                    "camera_id": "cam",
                    "file_path": f"images/{e // 1000}/{e}.jpg",
                    "thumbnail_path": f"thumbnails/{d // 1000}/{d}.jpg",
                    "detected_at": at,
                    "object_type": "person",
                    "confidence": 0.9,
                    "media_type": "image",
                }
            )
            out["links"].append({"event_id": e, "detection_id": d, "created_at": at})
    for i in range(1, n // 2 + 1):
        at = (CUTOFF - timedelta(seconds=n - i)) if i <= n // 4 else (NOW - timedelta(seconds=i))
        out["gpu"].append(
            {"id": i, "recorded_at": at, "gpu_utilization": 1.0, "memory_used": 1, "temperature": 1.0}
        )
        out["logs"].append({"id": i, "timestamp": at, "level": "INFO", "component": "c", "message": "m"})
    return out


def build_database(url: str, n: int, shape: str = "camera") -> None:
    engine = make_engine(url)
    (camera_system_metadata if shape == "camera" else camera_metadata).create_all(engine)
    ensure_bookkeeping(engine)
    rows = _rows(n, shape)
    camera = {"id": "cam", "name": "cam"}
    tables = [
        (cameras, [camera]),
        (events, rows["events"]),
        (detections, rows["detections"]),
        (event_detections, rows["links"]),
        (alerts, rows["alerts"]),
        (gpu_stats, rows["gpu"]),
        (logs, rows["logs"]),
    ]
    if shape == "camera":
        with engine.begin() as conn:  # the camera system's cameras row has a folder_path
            conn.execute(
                text("INSERT INTO cameras (id, name, folder_path) VALUES ('cam', 'cam', '/export/cam')")
            )
        tables = tables[1:]
    for table, data in tables:
        for start in range(0, len(data), CHUNK):
            with engine.begin() as conn:
                conn.execute(insert(table), data[start : start + CHUNK])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()


def expired_files(n: int) -> list[str]:
    n_events = n // PER_EVENT
    paths = []
    for e in range(1, n_events // 2 + 1):
        paths += [f"clips/{e // 1000}/{e}.mp4", f"images/{e // 1000}/{e}.jpg"]
        paths += [
            f"thumbnails/{d // 1000}/{d}.jpg" for d in range((e - 1) * PER_EVENT + 1, e * PER_EVENT + 1)
        ]
    return paths


def mount_roots(media: Path) -> None:
    """Give each storage root a file, as a mounted volume has: the files a run does not find under it then
    count as missing. Under an empty or absent root, as under an unmounted volume, they would stay queued."""
    for root in ("thumbnails", "images", "clips"):
        (media / root).mkdir(parents=True, exist_ok=True)
        (media / root / ".mounted").touch()


def build_files(media: Path, paths: list[str]) -> None:
    """Write a 256-byte file at each path under `media`, on several threads: writing the trees one file at a
    time was most of a file benchmark's time (the unlink floor measured on either tree is the same)."""
    for folder in sorted({os.path.dirname(relative) for relative in paths}):
        (media / folder).mkdir(parents=True, exist_ok=True)

    def write(part: list[str]) -> None:
        for relative in part:
            with open(media / relative, "wb") as handle:
                handle.write(b"x" * 256)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, chunked(paths, 2000)))


def pg_url(name: str) -> str:
    """The URL of database `name` on the PG_ADMIN server."""
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def pg_admin(*statements: str) -> None:
    """Run statements that cannot run in a transaction (CREATE/DROP DATABASE) on the PG_ADMIN server."""
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    admin.dispose()


def copy_database(url: str, engine_name: str, workdir: Path, label: str) -> str:
    if engine_name == "sqlite":
        source = url.removeprefix("sqlite:///")
        target = workdir / f"{label}.db"
        engine = make_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        shutil.copy(source, target)
        return f"sqlite:///{target}"
    name = f"{url.rsplit('/', 1)[1]}_{label}"
    pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{url.rsplit("/", 1)[1]}"')
    return pg_url(name)


# --- variants, each run in a child process --------------------------------------------------------------
def unlink_each(paths: list[str]) -> float:
    """The floor's file half: one thread unlinks every path; the seconds it took."""
    started = time.perf_counter()
    for path in paths:
        os.unlink(path)
    return time.perf_counter() - started


def run_floor(url: str, media: Path, n: int) -> dict:
    engine = make_engine(url)
    expired_events = select(events.c.id).where(events.c.started_at < CUTOFF).scalar_subquery()
    started = time.perf_counter()
    with engine.begin() as conn:
        rows = 0
        for statement in (
            delete(alerts).where(alerts.c.event_id.in_(expired_events)),
            delete(event_detections).where(event_detections.c.event_id.in_(expired_events)),
            delete(detections).where(detections.c.detected_at < CUTOFF),
            delete(events).where(events.c.started_at < CUTOFF),
            delete(gpu_stats).where(gpu_stats.c.recorded_at < CUTOFF),
            delete(logs).where(logs.c.timestamp < CUTOFF),
        ):
            rows += conn.execute(statement).rowcount
    db_seconds = time.perf_counter() - started
    paths = [str(media / p) for p in expired_files(n)] if media.exists() else []  # none: --rows-only
    file_seconds = unlink_each(paths)
    return {
        "rows": rows,
        "files": len(paths),
        "db_seconds": db_seconds,
        "file_seconds": file_seconds,
        "longest_txn_ms": db_seconds * 1000,
    }


def _expired_detections():
    """The product's rule, set-based: old or linked to an expired event, unless a retained event links it.
    EXISTS, not IN: PostgreSQL plans NOT IN over a million links as a subplan per row."""

    def linked(events_where):
        return (
            select(event_detections.c.detection_id)
            .join(events, events.c.id == event_detections.c.event_id)
            .where(event_detections.c.detection_id == detections.c.id, events_where)
            .exists()
        )

    return ((detections.c.detected_at < CUTOFF) | linked(events.c.started_at < CUTOFF)) & ~linked(
        events.c.started_at >= CUTOFF
    )


def run_same_rule(url: str, media: Path, n: int) -> dict:
    """The fair floor: the product's whole job (keep rule, children, every path, the reference check of
    those paths against the surviving rows) in one set-based transaction, then one unlink thread."""
    engine = make_engine(url)
    expired_events = select(events.c.id).where(events.c.started_at < CUTOFF)
    scratch = Table("same_rule_paths", MetaData(), Column("path", String), prefixes=["TEMPORARY"])
    started = time.perf_counter()
    with engine.begin() as conn:
        scratch.create(conn)
        doomed = _expired_detections()
        rows = 0
        # Paths first, then the rows: SQLite has no DELETE ... RETURNING inside INSERT ... SELECT, and on
        # PostgreSQL the same two passes over the doomed ids keep the engines' work alike.
        for column in (detections.c.thumbnail_path, detections.c.file_path):
            conn.execute(
                insert(scratch).from_select(["path"], select(column).where(doomed, column.is_not(None)))
            )
        conn.execute(
            insert(scratch).from_select(
                ["path"],
                select(events.c.clip_path).where(
                    events.c.id.in_(expired_events), events.c.clip_path.is_not(None)
                ),
            )
        )
        rows += conn.execute(delete(detections).where(doomed)).rowcount
        for statement in (
            delete(alerts).where(alerts.c.event_id.in_(expired_events)),
            delete(event_detections).where(event_detections.c.event_id.in_(expired_events)),
            delete(events).where(events.c.started_at < CUTOFF),
            delete(gpu_stats).where(gpu_stats.c.recorded_at < CUTOFF),
            delete(logs).where(logs.c.timestamp < CUTOFF),
        ):
            rows += conn.execute(statement).rowcount
        still_used = union_all(
            select(detections.c.thumbnail_path.label("path")),
            select(detections.c.file_path),
            select(events.c.clip_path),
        ).subquery()
        unreferenced = (
            select(scratch.c.path)
            .distinct()
            .outerjoin(still_used, still_used.c.path == scratch.c.path)
            .where(still_used.c.path.is_(None))
        )
        paths = [row[0] for row in conn.execute(unreferenced)]
    db_seconds = time.perf_counter() - started
    present = [str(media / p) for p in paths if (media / p).exists()] if media.exists() else []
    file_seconds = unlink_each(present)
    return {
        "rows": rows,
        "files": len(present),
        "db_seconds": db_seconds,
        "file_seconds": file_seconds,
        "longest_txn_ms": db_seconds * 1000,
    }


def run_naive(url: str, media: Path, n: int) -> dict:
    engine = make_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        paths = list(
            conn.execute(
                union_all(
                    select(detections.c.thumbnail_path).where(detections.c.detected_at < CUTOFF),
                    select(detections.c.file_path).where(detections.c.detected_at < CUTOFF),
                    select(events.c.clip_path).where(events.c.started_at < CUTOFF),
                )
            ).scalars()
        )
        rows = 0
        for table, column in (
            (detections, "detected_at"),
            (events, "started_at"),
            (gpu_stats, "recorded_at"),
            (logs, "timestamp"),
        ):
            rows += conn.execute(delete(table).where(table.c[column] < CUTOFF)).rowcount  # cascades
    db_seconds = time.perf_counter() - started
    started = time.perf_counter()
    files = 0
    for path in paths:
        full = media / path
        if os.path.exists(full):
            os.unlink(full)
            files += 1
    return {
        "rows": rows,
        "files": files,
        "db_seconds": db_seconds,
        "file_seconds": time.perf_counter() - started,
        "longest_txn_ms": db_seconds * 1000,
    }


def run_job(url: str, media: Path, dry_run: bool, **overrides: object) -> dict:
    import dagster as dg

    from retention_pipeline.jobs import data_cleanup
    from retention_pipeline.resources import CameraSystemResource, DiskSpaceResource

    resource_ = CameraSystemResource(
        database_url=url,
        media_root=str(media),
        thumbnail_dir="thumbnails",
        clips_dir="clips",
        images_dir="images",
    )
    config = {
        "dry_run": dry_run,
        "delete_images": True,
        "batch_size": BATCH_SIZE,
        "transaction_target_ms": TARGET_MS,
        "reference_time": NOW.isoformat(),
        **overrides,
    }
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = data_cleanup.execute_in_process(
            run_config={
                "ops": {"plan_cleanup": {"config": config}},
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            },
            resources={"camera_system": resource_, "disk": DiskSpaceResource()},
            instance=instance,
        )
        wall = time.perf_counter() - started
        steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(result.run_id)}
    stats = result.output_for_node("report_cleanup")
    rows = (
        stats.events_deleted
        + stats.alerts_deleted
        + stats.detections_deleted
        + stats.gpu_stats_deleted
        + stats.logs_deleted
    )
    files = stats.thumbnails_deleted + stats.images_deleted + stats.clips_deleted
    db = sum(v for k, v in steps.items() if k.startswith("purge_"))
    return {
        "rows": rows,
        "files": files,
        "db_seconds": db,
        "file_seconds": sum(v for k, v in steps.items() if k.startswith("delete_expired_files")),
        "longest_txn_ms": stats.longest_transaction_ms,
        "retries": stats.db_retries,  # batches cut off at the time cap and repeated, transient errors
        "wall_job": wall,
    }


def run_cli(url: str, media: Path, dagster_home: Path) -> list[float]:
    """Seconds `retention-pipeline run` takes end to end (Python start to exit), as an operator runs it,
    CLI_RUNS times on an instance that already exists: a first call creates it and is not counted."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "MEDIA_ROOT": str(media),
        "THUMBNAIL_DIR": "thumbnails",
        "CLIPS_DIR": "clips",
        "IMAGES_DIR": "images",
        "DELETE_IMAGES": "true",
        "DAGSTER_HOME": str(dagster_home),
    }
    command = [str(Path(sys.executable).parent / "retention-pipeline"), "run", "--json"]
    timings = []
    for _ in range(1 + CLI_RUNS):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        timings.append(time.perf_counter() - started)
        if done.returncode:
            raise SystemExit(f"retention-pipeline run failed:\n{done.stderr[-3000:]}")
        deleted = json.loads(done.stdout.strip().splitlines()[-1])
        if any(deleted[k] for k in deleted if k.endswith("_deleted")):
            raise SystemExit(f"the end-to-end run was meant to find nothing expired: {deleted}")
    return timings[1:]


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over exec from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    media, n = Path(args.media), args.n
    started = time.perf_counter()
    if args.variant == "floor":
        figures = run_floor(args.url, media, n)
    elif args.variant == "same_rule":
        figures = run_same_rule(args.url, media, n)
    elif args.variant == "naive":
        figures = run_naive(args.url, media, n)
    else:
        figures = run_job(args.url, media, dry_run=args.variant == "dry")
    figures["wall_seconds"] = time.perf_counter() - started
    figures["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(figures))


def measure(variant: str, url: str, media: Path, n: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--url", url, "--media", str(media), "--n", str(n)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def noop_cli(engine_name: str, n: int, variant: str, url: str, media: Path, workdir: Path) -> dict:
    """The median of run_cli's timings as a result row; all of them go to stderr."""
    timings = sorted(run_cli(url, media, workdir / "dagster_home"))
    seconds = timings[len(timings) // 2]
    shown = ", ".join(f"{t:.2f}" for t in timings)
    print(f"[{engine_name} {n}] {variant}: median {seconds:.2f}s end to end ({shown})", file=sys.stderr)
    return {"engine": engine_name, "n": n, "variant": variant, "rows": 0, "files": 0, "wall_seconds": seconds}


def bench(engine_name: str, n: int, workdir: Path, rows_only: bool, shape: str) -> list[dict]:
    if engine_name == "sqlite":
        base = f"sqlite:///{workdir / 'base.db'}"
    else:
        base_name = f"bench_{uuid.uuid4().hex[:8]}"
        pg_admin(f'CREATE DATABASE "{base_name}"')
        base = pg_url(base_name)
    started = time.perf_counter()
    build_database(base, n, shape)
    print(
        f"[{engine_name} {n}] {shape} schema built in {time.perf_counter() - started:.0f}s", file=sys.stderr
    )
    paths = expired_files(n)
    results = []
    for variant in ("floor", "same_rule", "naive", "dry", "real", "noop"):
        if variant in ("floor", "same_rule", "naive", "dry"):
            url = copy_database(base, engine_name, workdir, variant)
            media = workdir / f"media_{variant}"
            mount_roots(media)
            if not rows_only:
                build_files(media, paths)
                os.sync()  # otherwise the variant pays for writing back the files just created
        figures = measure(variant, url, media, n)
        figures.update(engine=engine_name, n=n, variant=variant, rows_only=rows_only, shape=shape)
        results.append(figures)
        print(f"[{engine_name} {n}] {variant}: {figures}", file=sys.stderr)
        if variant in ("floor", "same_rule", "naive"):
            shutil.rmtree(media, ignore_errors=True)
    # What an operator sees: the command line, nothing expired, Python start to exit. Straight after the
    # real run; on PostgreSQL also after the VACUUM that autovacuum runs long before the next daily run
    # (until then the time indexes still hold the deleted rows' entries, which "nothing expired" reads).
    results.append(noop_cli(engine_name, n, "noop_cli", url, media, workdir))
    if engine_name == "postgresql":
        vacuuming = create_engine(url, isolation_level="AUTOCOMMIT")
        with vacuuming.connect() as conn:
            conn.execute(text("VACUUM (ANALYZE)"))
        vacuuming.dispose()
        results.append(noop_cli(engine_name, n, "noop_cli_vacuumed", url, media, workdir))
        # The same rows and files in weekly range partitions: the product drops whole weeks.
        url = copy_database(base, engine_name, workdir, "partitioned")
        made = partition_weekly(url, CUTOFF)
        media = workdir / "media_partitioned"
        mount_roots(media)
        if not rows_only:
            build_files(media, paths)
            os.sync()
        figures = measure("partitioned", url, media, n)
        figures.update(engine=engine_name, n=n, variant="partitioned", rows_only=rows_only, shape=shape)
        results.append(figures)
        print(f"[{engine_name} {n}] partitioned ({made} partitions): {figures}", file=sys.stderr)
        shutil.rmtree(media, ignore_errors=True)
        base_name = base.rsplit("/", 1)[1]
        pg_admin(
            *(
                f'DROP DATABASE IF EXISTS "{base_name}{suffix}" WITH (FORCE)'
                for suffix in ("", "_floor", "_same_rule", "_naive", "_dry", "_partitioned")
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--rows-only", action="store_true", help="no files: database figures only")
    parser.add_argument("--shape", choices=("camera", "ours"), default="camera")
    parser.add_argument("--child", default=None)
    parser.add_argument("--url"), parser.add_argument("--media"), parser.add_argument("--n", type=int)
    args = parser.parse_args()
    if args.child:
        args.variant = args.child
        return child(args)
    import pandas as pd  # the parent's table only: each measuring child would pay ~0.5 s to import it

    results = []
    for engine_name in args.engines.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            workdir = Path(tempfile.mkdtemp(prefix=f"bench_cleanup_{engine_name}_{n}_"))
            try:
                results += bench(engine_name, n, workdir, args.rows_only, args.shape)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    frame = pd.DataFrame(results)
    floor = frame[frame.variant == "floor"].set_index(["engine", "n"])
    frame["rows_per_s"] = frame.rows / frame.db_seconds.where(frame.db_seconds > 0)
    frame["files_per_s"] = frame.files / frame.file_seconds.where(frame.file_seconds > 0)
    frame["db_vs_floor"] = [
        r.db_seconds / floor.loc[(r.engine, r.n), "db_seconds"] for r in frame.itertuples()
    ]
    same_rule = frame[frame.variant == "same_rule"].set_index(["engine", "n"])
    frame["db_vs_same_rule"] = [
        r.db_seconds / same_rule.loc[(r.engine, r.n), "db_seconds"] for r in frame.itertuples()
    ]
    frame["files_per_s_vs_floor"] = [
        (r.files / r.file_seconds if r.file_seconds else float("nan"))
        / (floor.loc[(r.engine, r.n), "files"] / floor.loc[(r.engine, r.n), "file_seconds"])
        if floor.loc[(r.engine, r.n), "file_seconds"]
        else float("nan")
        for r in frame.itertuples()
    ]
    frame["wall_vs_floor"] = [
        r.wall_seconds / floor.loc[(r.engine, r.n), "wall_seconds"] for r in frame.itertuples()
    ]
    print(f"schema: {args.shape} ({'no path indexes' if args.shape == 'camera' else 'path columns indexed'})")
    columns = [
        "engine",
        "n",
        "variant",
        "rows",
        "files",
        "wall_seconds",
        "db_seconds",
        "rows_per_s",
        "file_seconds",
        "files_per_s",
        "peak_rss_mb",
        "longest_txn_ms",
        "retries",
        "db_vs_floor",
        "db_vs_same_rule",
        "files_per_s_vs_floor",
        "wall_vs_floor",
    ]
    print(frame[columns].to_markdown(index=False, floatfmt=".2f"))
    RESULTS.mkdir(exist_ok=True)
    name = "cleanup_rows_only.json" if args.rows_only else "cleanup.json"
    (RESULTS / name).write_text(frame[columns].to_json(orient="records", indent=2))


if __name__ == "__main__":
    main()
