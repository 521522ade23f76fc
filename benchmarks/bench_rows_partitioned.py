"""Row time at N detections (half expired), PostgreSQL, camera schema, side by side in one run: the
same-rule floor against the product's four purge steps on plain tables and on the same rows in weekly
range partitions (core purge_table, without Dagster and without the file step, whose reference check
dominates a rows-only run at this size).

    python benchmarks/bench_rows_partitioned.py 2000000 [BASE]

With BASE, the generated database is kept under that name and reused by the next run given the same
name (building 2M detections takes several minutes; the variants always run on fresh copies of it).

While each variant runs (the same-rule floor too), a camera writer (bench_partitions.CameraWriter, its own
process) inserts a detection and a log line stamped now every 5 ms; its slowest insert is printed, and
its slowest INSERT statement alone (a lock wait shows there; a COMMIT waits for the disk). The same
writer first runs 15 s with nothing else running, for the machine's own waits.

Prints each variant and the ratios, and writes /tmp/rows_<N>.json. Above 1.2M detections the generator's
young log lines reach past LOG_RETENTION_DAYS: the product then also deletes those (the same-rule floor
deletes logs by the data cutoff only), so its row count is higher.
"""

import json
import sys
import time
import uuid
from pathlib import Path

import bench_cleanup as b
from bench_partitions import CameraWriter
from partitioned_copy import partition_weekly
from sqlalchemy import create_engine, text

from retention_pipeline.core.cleanup import prepare_database
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.plan import make_plan
from retention_pipeline.core.purge import purge_table
from retention_pipeline.settings import Settings

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
kept_base = sys.argv[2] if len(sys.argv) > 2 else None
name = kept_base or f"rows_{uuid.uuid4().hex[:6]}"
# A kept database is reused only once its build finished (the comment says so); else it is built again.
admin = create_engine(b.PG_ADMIN)
with admin.connect() as conn:
    note = conn.execute(
        text("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"), {"n": name}
    ).first()
admin.dispose()
built = note is not None and note[0] == f"built {n}"
try:
    if not built:
        b.pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
        t = time.perf_counter()
        b.build_database(b.pg_url(name), n)
        b.pg_admin(f"COMMENT ON DATABASE \"{name}\" IS 'built {n}'")
        print(f"built {n} in {time.perf_counter() - t:.0f}s", flush=True)
    for label in ("same_rule", "plain", "partitioned"):
        b.pg_admin(f'CREATE DATABASE "{name}_{label}" TEMPLATE "{name}"')
    partition_weekly(b.pg_url(f"{name}_partitioned"), b.CUTOFF)
    out = {}
    # The same writer with nothing else running: the waits this machine's disk and CPU cause on their own.
    idle = CameraWriter(b.pg_url(f"{name}_plain"), ("detections", "logs"), first_id=2_000_000_000)
    time.sleep(15)
    out["idle_writer"] = idle.figures()
    print("idle_writer", out["idle_writer"], flush=True)
    plain = create_engine(b.pg_url(f"{name}_plain"))
    with plain.begin() as conn:  # the plain variant starts from the same rows as the others
        for table in ("detections", "logs"):
            conn.execute(text(f"DELETE FROM {table} WHERE id >= 2000000000"))  # noqa: S608
    plain.dispose()
    # Every variant runs under the same camera writer: the floor too, or the product alone would pay for
    # the writer's commits competing for the disk.
    writer = CameraWriter(b.pg_url(f"{name}_same_rule"), ("detections", "logs"))
    time.sleep(0.5)
    fig = b.run_same_rule(b.pg_url(f"{name}_same_rule"), Path("/nonexistent"), n)
    out["same_rule"] = {"db_s": fig["db_seconds"], "rows": fig["rows"], "longest_ms": fig["longest_txn_ms"]}
    out["same_rule"].update(writer.figures())
    print("same_rule", out["same_rule"], flush=True)
    for label in ("plain", "partitioned"):
        url = b.pg_url(f"{name}_{label}")
        engine = make_engine(url)
        prepare_database(engine)
        settings = Settings(database_url=url)
        plan = make_plan(settings, dry_run=False, reference_time=b.NOW, delete_images=True)
        total, rows, longest, per = 0.0, 0, 0.0, {}
        writer = CameraWriter(url, ("detections", "logs"))
        time.sleep(0.5)  # inserting before the purge starts
        for table in ("detections", "events", "gpu_stats", "logs"):
            s = time.perf_counter()
            c = purge_table(
                engine,
                table,
                plan.expiry,
                plan.batch_size,
                target_s=plan.transaction_target_s,
                delete_images=True,
            )
            sec = time.perf_counter() - s
            total += sec
            rows += c.deleted + c.children_deleted
            longest = max(longest, c.longest_transaction_ms)
            per[table] = (round(sec, 2), c.deleted)
        engine.dispose()
        out[label] = {"db_s": total, "rows": rows, "longest_ms": longest, "per_table": per}
        out[label].update(writer.figures())
        print(label, out[label], flush=True)
    for label in ("plain", "partitioned"):
        print(f"{label} / same_rule = {out[label]['db_s'] / out['same_rule']['db_s']:.2f}")
    Path(f"/tmp/rows_{n}.json").write_text(json.dumps(out, indent=1))
finally:
    b.pg_admin(
        *(
            f'DROP DATABASE IF EXISTS "{name}{s}" WITH (FORCE)'
            for s in ("_same_rule", "_plain", "_partitioned") + (() if kept_base else ("",))
        )
    )
