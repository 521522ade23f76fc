"""Where one reference check's time goes, and what the dry run's statements cost, on a large table.

Schema: the camera system's own (retention_pipeline_tests/camera_schema.py), PostgreSQL or SQLite. Builds
N detections, runs the product's row purge at the 30-day cutoff (which fills the file queue), then times:

1. the real run's check (`referenced_paths`) of the first 25,000 and 100,000 queued paths, split into
   computing their spellings, staging them in the scratch table and the join against the surviving rows
   (the only part that grows with the table);
2. the dry run's statements at a later cutoff (`--preview-days`, default 1 day: most surviving rows would
   expire): the candidate query for 25,000 paths, and the check of those paths ignoring the rows that run
   would delete (the keep rule tested on the rows that name a staged path);
3. with `--whole-preview`, before the purge: the dry run's whole file preview at the 30-day cutoff
   (`preview_file_deletions`: every candidate path checked, 25,000 at a time).

No files are created: the figures are the database's share.

    PYTHONPATH=. python benchmarks/bench_reference_check.py [--n 1000000] [--engine postgresql]
        [--whole-preview]
"""

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench_cleanup import CUTOFF, NOW, build_database, mount_roots, pg_admin, pg_url
from sqlalchemy import select, text

from retention_pipeline.core import purge
from retention_pipeline.core.cleanup import prepare_database
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.files import StorageRoots
from retention_pipeline.core.purge import preview_file_deletions, referenced_paths
from retention_pipeline.core.queries import path_checks
from retention_pipeline.core.schema import retention_file_queue
from retention_pipeline.core.spellings import Spellings
from retention_pipeline.core.tables import Expiry, Registry


def _timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def _split_check(engine, roots: StorageRoots, paths: list[str]) -> dict:
    """The three parts of one check, as referenced_paths runs them."""
    spellings = Spellings(roots)
    names, spell_s = _timed(lambda: sorted({a for p in paths for a in spellings.aliases(p)}))
    dialect = engine.dialect.name
    with engine.connect() as conn:
        for statement in path_checks.create_check_names(dialect):
            conn.execute(statement)
        conn.commit()
        staging = path_checks.stage_check_names(dialect)
        _, stage_s = _timed(lambda: conn.execute(staging, path_checks.check_names_param(names)))
        if dialect == "postgresql":
            conn.execute(path_checks.steer_reference_check_plan())
        hits, join_s = _timed(lambda: conn.execute(path_checks.select_referenced_names(Registry())).all())
        conn.execute(path_checks.clear_check_names())
        conn.commit()
    return {
        "spellings": len(names),
        "spell_s": spell_s,
        "stage_s": stage_s,
        "join_s": join_s,
        "referenced": len(hits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--engine", default="postgresql", choices=["postgresql", "sqlite"])
    parser.add_argument("--preview-days", type=int, default=1)
    parser.add_argument("--whole-preview", action="store_true")
    args = parser.parse_args()
    import pandas as pd

    workdir = Path(tempfile.mkdtemp(prefix="bench_refcheck_"))
    if args.engine == "postgresql":
        name = "bench_refcheck"
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        url = pg_url(name)
    else:
        url = f"sqlite:///{workdir / 'refcheck.db'}"
    _, build_s = _timed(lambda: build_database(url, args.n, "camera"))
    engine = make_engine(url)
    prepare_database(engine)
    mount_roots(workdir / "media")  # the queued files then count as missing, none stays queued
    roots = StorageRoots.from_dirs(workdir / "media", [Path("thumbnails"), Path("images"), Path("clips")])
    whole = None
    if args.whole_preview:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
        counts, preview_whole_s = _timed(lambda: preview_file_deletions(engine, roots, CUTOFF, True))
        checked = counts.files_missing + counts.files_kept_shared
        whole = (
            f"{checked} candidate paths ({counts.files_kept_shared} kept shared) in {preview_whole_s:.1f} s"
        )
    purge.purge_table(engine, "detections", CUTOFF, 10_000, delete_images=True, target_s=None)
    purge.purge_table(engine, "events", CUTOFF, 10_000, target_s=None)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))

    checks = []
    for size in (25_000, 100_000):
        with engine.connect() as conn:
            paths = list(
                conn.execute(
                    select(retention_file_queue.c.path).order_by(retention_file_queue.c.id).limit(size)
                ).scalars()
            )
        _, whole_s = _timed(lambda paths=paths: referenced_paths(engine, roots, paths))
        checks.append({"queued paths": len(paths), **_split_check(engine, roots, paths), "whole_s": whole_s})

    expiry = Expiry.of(NOW - timedelta(days=args.preview_days))
    candidates = path_checks.select_stale_file_candidates(expiry, True, queued=False).limit(25_000)
    with engine.connect() as conn:
        rows, candidates_s = _timed(lambda: conn.execute(candidates).all())
    paths = [row.path for row in rows]
    kept, preview_s = _timed(lambda: referenced_paths(engine, roots, paths, Registry(), expiry))
    engine.dispose()
    if args.engine == "postgresql":
        pg_admin('DROP DATABASE IF EXISTS "bench_refcheck" WITH (FORCE)')

    print(f"camera system's schema, {args.engine}, {args.n} detections built in {build_s:.0f} s, purged at")
    print(f"the 30-day cutoff; reference time {NOW.isoformat()}")
    if whole:
        print(f"\nthe dry run's whole file preview at the 30-day cutoff, before the purge: {whole}")
    print("\nthe real run's check (referenced_paths), one check of the first queued paths")
    print(pd.DataFrame(checks).to_markdown(index=False, floatfmt=".2f"))
    print(f"\nthe dry run's statements at a {args.preview_days}-day cutoff")
    dry = [
        {"statement": "candidate paths", "paths": len(paths), "s": candidates_s},
        {
            "statement": "check ignoring expiring rows",
            "paths": len(paths),
            "s": preview_s,
            "still referenced": len(kept),
        },
    ]
    print(pd.DataFrame(dry).to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
