"""The file step against a bare unlink loop, alternating on identical file trees (camera schema, 100k).

`make bench` measures each variant once, on its own tree, minutes apart; on this disk the unlink rate of
one tree can differ from the next by a third, which is as large as the difference it looks for. Here the
queue is filled once by the row purges, then, for each round, a fresh tree is written and synced and
either `data_cleanup` runs on a copy of the purged database (its purges find nothing; its file step drains
the queue), as it is or with its queue split into shares of 50,000 files run one after another, or the
core drain the step calls runs alone on such a copy (no Dagster: where the step loses time, if it does),
or a single-threaded `os.unlink` loop removes the same files. Prints each round and
the medians, and writes benchmarks/results/file_step_<engine>.json.

    python benchmarks/bench_file_step.py [--n 100000] [--rounds 3] [--engine sqlite|postgresql]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_cleanup as generator

from retention_pipeline.core import purge
from retention_pipeline.core.cleanup import PARALLEL_FILE_CHUNK, prepare_database
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.files import StorageRoots
from retention_pipeline.core.purge.file_queue import drain_file_queue

RESULTS = Path(__file__).parent / "results"


def purged_database(workdir: Path, n: int, engine_name: str = "sqlite") -> str:
    """The URL of an N-detection database whose expired rows are deleted and whose files are queued."""
    if engine_name == "sqlite":
        url = f"sqlite:///{workdir / 'purged.db'}"
    else:
        generator.pg_admin(*(f'DROP DATABASE IF EXISTS "{name}"' for name in ("bench_fs", "bench_fs_run")))
        generator.pg_admin('CREATE DATABASE "bench_fs"')
        url = generator.pg_url("bench_fs")
    generator.build_database(url, n)
    engine = make_engine(url)
    prepare_database(engine)
    target_s = generator.TARGET_MS / 1000 or None
    purge.purge_table(
        engine, "detections", generator.CUTOFF, generator.BATCH_SIZE, delete_images=True, target_s=target_s
    )
    purge.purge_table(engine, "events", generator.CUTOFF, generator.BATCH_SIZE, target_s=target_s)
    engine.dispose()
    return url


def fresh_copy(purged: str, engine_name: str, workdir: Path) -> str:
    """A copy of the purged database for one round (its queue still full)."""
    if engine_name == "postgresql":
        generator.pg_admin('DROP DATABASE IF EXISTS "bench_fs_run"')
    else:
        for suffix in ("", "-wal", "-shm"):  # a previous round's write-ahead log must not meet the copy
            (workdir / f"run.db{suffix}").unlink(missing_ok=True)
    return generator.copy_database(purged, engine_name, workdir, "run")


def bare_loop(media: Path, paths: list[str]) -> float:
    """Files per second of the floor's unlink loop."""
    return len(paths) / generator.unlink_each([str(media / p) for p in paths])


def file_step(url: str, media: Path) -> float:
    """Files per second of data_cleanup's file step (its steps' own times, as bench_cleanup reads them)."""
    figures = generator.run_job(url, media, dry_run=False)
    return figures["files"] / figures["file_seconds"]


def file_step_in_shares(url: str, media: Path) -> float:
    """Files per second of the file step split into shares of 50,000 files, one after another (the default
    before 2026-12-07's sixth session; a parallel executor's default now)."""
    figures = generator.run_job(url, media, dry_run=False, file_chunk_size=PARALLEL_FILE_CHUNK)
    return figures["files"] / figures["file_seconds"]


def drain_alone(url: str, media: Path) -> float:
    """Files per second of the core drain the file step calls, without Dagster around it."""
    engine = make_engine(url)
    roots = StorageRoots.from_dirs(media, [media / name for name in ("thumbnails", "clips", "images")])
    started = time.perf_counter()
    counts = drain_file_queue(engine, roots)
    seconds = time.perf_counter() - started
    engine.dispose()
    return (counts.thumbnails_deleted + counts.images_deleted + counts.clips_deleted) / seconds


VARIANTS = {"file_step": file_step, "in_shares": file_step_in_shares, "drain_alone": drain_alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    paths = generator.expired_files(args.n)
    order = ["file_step", "bare_loop", "in_shares", "drain_alone"]
    figures: dict[str, list[float]] = {variant: [] for variant in order}
    with tempfile.TemporaryDirectory(prefix="bench_file_step_") as tmp:
        workdir = Path(tmp)
        purged = purged_database(workdir, args.n, args.engine)
        for round_ in range(args.rounds):
            for variant in order[round_ % 3 :] + order[: round_ % 3]:  # each variant first once in 3
                media = workdir / "media"
                shutil.rmtree(media, ignore_errors=True)
                generator.build_files(media, paths)
                url = fresh_copy(purged, args.engine, workdir)
                os.sync()
                rate = bare_loop(media, paths) if variant == "bare_loop" else VARIANTS[variant](url, media)
                figures[variant].append(rate)
                print(f"round {round_ + 1} {variant}: {rate:,.0f} files/s", file=sys.stderr)
    medians = {variant: statistics.median(rates) for variant, rates in figures.items()}
    ratio = medians["file_step"] / medians["bare_loop"]
    print(f"{args.engine}, camera schema, {len(paths)} files; median files/s:", end=" ")
    print(f"file step {medians['file_step']:,.0f},", end=" ")
    print(f"in shares of 50,000 {medians['in_shares']:,.0f},", end=" ")
    print(f"drain alone {medians['drain_alone']:,.0f},", end=" ")
    print(f"bare loop {medians['bare_loop']:,.0f}; file step / bare loop {ratio:.2f}x,", end=" ")
    print(f"in shares / bare loop {medians['in_shares'] / medians['bare_loop']:.2f}x,", end=" ")
    print(f"drain alone / bare loop {medians['drain_alone'] / medians['bare_loop']:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    out = {"engine": args.engine, "shape": "camera", "n": args.n, "files": len(paths)}
    out |= {"rounds": figures, "medians": medians, "ratio": ratio}
    (RESULTS / f"file_step_{args.engine}.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
