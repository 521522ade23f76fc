"""Orphaned-file sweep benchmark: files/s and peak memory of a dry-run scan at 100k and 1M files.

Builds, per size, a SQLite camera database whose detections reference 90% of the files in a fresh
thumbnail tree (the other 10% are old orphans), then runs the sweep's scan in a child process so its peak
RSS is its own. Prints a Markdown table and writes benchmarks/results/orphans.json.

    python benchmarks/bench_orphans.py [--sizes 100000,1000000] [--workdir DIR]
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import insert

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.schema import camera_metadata, cameras, detections, ensure_bookkeeping

RESULTS = Path(__file__).parent / "results"
FILES_PER_DIR = 1000


def build(workdir: Path, files: int) -> str:
    """A thumbnail tree of `files` files (10% orphans, all two days old) and a database for it."""
    thumbs = workdir / "media" / "thumbnails"
    (workdir / "media" / "clips").mkdir(parents=True)
    old = time.time() - 48 * 3600
    rows = []
    url = f"sqlite:///{workdir / 'camera.db'}"
    engine = make_engine(url)
    camera_metadata.create_all(engine)
    ensure_bookkeeping(engine)
    with engine.begin() as conn:
        conn.execute(insert(cameras).values(id="cam", name="cam"))
    now = datetime.now(UTC)
    for n in range(files):
        folder = thumbs / f"{n // FILES_PER_DIR:05d}"
        if n % FILES_PER_DIR == 0:
            folder.mkdir(parents=True)
        path = folder / f"{n}.jpg"
        with open(path, "wb") as handle:
            handle.write(b"x" * 64)
        os.utime(path, (old, old))
        if n % 10:
            relative = f"thumbnails/{n // FILES_PER_DIR:05d}/{n}.jpg"
            rows.append(
                {
                    "camera_id": "cam",
                    "file_path": relative,
                    "thumbnail_path": relative,
                    "detected_at": now - timedelta(days=1),
                }
            )
        if len(rows) >= 20_000:
            with engine.begin() as conn:
                conn.execute(insert(detections), rows)
            rows.clear()
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(detections), rows)
    engine.dispose()
    return url


CHILD = """
import json, resource, sys, time
from datetime import UTC, datetime
from pathlib import Path
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.files import StorageRoots
from retention_pipeline.core.orphans import OrphanPolicy, scan_for_orphans
url, media, manifest = sys.argv[1:4]
roots = StorageRoots.from_dirs(Path(media), [Path("thumbnails"), Path("clips")])
started = time.perf_counter()
stats = scan_for_orphans(make_engine(url), roots, OrphanPolicy(dry_run=True), Path(manifest),
                         datetime.now(UTC), lambda _m: None)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "files_scanned": stats.files_scanned,
                  "orphans_found": stats.orphans_found,
                  "peak_rss_mb": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
                                     .split()[1]) / 1024}))
"""


def measure(url: str, workdir: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(workdir / "media"), str(workdir / "orphans.csv")],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        workdir = Path(tempfile.mkdtemp(prefix=f"bench_orphans_{size}_", dir=args.workdir))
        try:
            started = time.perf_counter()
            url = build(workdir, size)
            print(f"built {size} files in {time.perf_counter() - started:.1f}s", file=sys.stderr)
            figures = measure(url, workdir)
            figures["files"] = size
            figures["files_per_s"] = figures["files_scanned"] / figures["seconds"]
            results.append(figures)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    frame = pd.DataFrame(results)[
        ["files", "files_scanned", "orphans_found", "seconds", "files_per_s", "peak_rss_mb"]
    ]
    print(frame.to_markdown(index=False, floatfmt=".1f"))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "orphans.json").write_text(json.dumps(results, indent=2))
    print(
        f"parent peak RSS while building: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
