"""`retention-pipeline doctor`: what a run will meet, read before anything is deleted; it changes nothing."""

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.doctor import diagnose
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import CLIPS, THUMBS, CameraWorld
from retention_pipeline_tests.test_cli import cli

camera_shape = pytest.mark.parametrize("schema_shape", ["camera"], indirect=True)


def _schema(world: CameraWorld) -> dict[str, object]:
    inspector = inspect(world.engine)
    return {
        t: (
            sorted(i["name"] for i in inspector.get_indexes(t)),
            [c["name"] for c in inspector.get_columns(t)],
        )
        for t in inspector.get_table_names()
    }


@camera_shape
def test_on_the_camera_schema_doctor_names_each_unindexed_foreign_key_and_the_index_that_fixes_it(
    world: CameraWorld, tmp_path: Path
):
    world.detection(world.old())
    before = _schema(world)

    done = cli(world, tmp_path, "doctor", "--json")

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    references = {(r["table"], r["column"]): r for r in report["references"]}
    assert references[("threat_detections", "detection_id")]["slows_deletes"] is True
    assert references[("zone_anomalies", "detection_id")]["on_delete"] == "SET NULL"
    assert references[("pose_results", "detection_id")]["indexed"] is True
    concurrently = " CONCURRENTLY" if world.engine.dialect.name == "postgresql" else ""
    assert (
        f"CREATE INDEX{concurrently} ix_threat_detections_detection_id ON threat_detections (detection_id);"
        in report["advice"]
    )
    times = {c["table"]: c for c in report["time_columns"]}
    assert all(c["indexed"] for c in times.values())
    if world.engine.dialect.name == "postgresql":
        assert times["gpu_stats"]["kinds"] == ["brin"]
    assert not any(c["indexed"] for c in report["path_columns"])
    # The anomalies' thumbnails are checked too: their rows outlive the detections retention deletes.
    assert ("zone_anomalies", "thumbnail_url") in {(c["table"], c["column"]) for c in report["path_columns"]}
    assert _schema(world) == before  # doctor never changes the schema


@both_shapes
def test_doctor_counts_what_a_run_would_delete_now(world: CameraWorld):
    old_event = world.event(world.old(), alerts_count=1)
    world.detection(world.old(), events_=(old_event,))
    world.detection(world.recent(), events_=(world.event(world.recent()),))
    world.detection(world.recent(), events_=(old_event,))  # young, but goes with its expired event
    world.gpu(world.old())
    world.log(world.log_cutoff - world.log_cutoff.resolution * 1000)
    shared = world.file(f"{THUMBS}/shared.jpg")
    world.detection(world.old(), thumbnail=shared)
    world.detection(world.recent(), thumbnail=shared)  # keeps the file the expired one shares
    world.detection(world.old(), thumbnail=f"{THUMBS}/gone.jpg")  # its file is already gone

    report = diagnose(world.engine, world.plan(dry_run=True, delete_images=True))
    stats = world.run(delete_images=True)

    assert report.ok
    assert report.expired_rows == {
        "events": stats.events_deleted,
        "detections": stats.detections_deleted,
        "gpu_stats": stats.gpu_stats_deleted,
        "logs": stats.logs_deleted,
        "alerts": stats.alerts_deleted,
    }
    assert report.expired_rows["detections"] == 4
    assert report.expired_files == stats.thumbnails_deleted + stats.images_deleted + stats.clips_deleted
    assert stats.files_kept_shared == 1 and stats.files_missing == 1
    assert world.exists(shared)


@both_shapes
def test_a_no_action_reference_makes_doctor_exit_1_naming_it(world: CameraWorld, tmp_path: Path):
    with world.engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE notes (id INTEGER PRIMARY KEY, event_id INTEGER REFERENCES events (id))")
        )

    done = cli(world, tmp_path, "doctor")

    assert done.returncode == 1
    assert "notes.event_id -> events ON DELETE NO ACTION: BLOCKS DELETES" in done.stdout
    assert "BLOCKING: " in done.stdout and "a run would fail" in done.stdout


def test_doctor_warns_of_a_missing_storage_root_without_failing(world: CameraWorld, tmp_path: Path):
    (world.media / CLIPS).rmdir()

    done = cli(world, tmp_path, "doctor")

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"warning: storage root {world.media / CLIPS} does not exist" in done.stdout


def test_doctor_on_a_database_that_is_not_the_camera_system_s_exits_1(tmp_path: Path, world: CameraWorld):
    sqlite3.connect(tmp_path / "empty.db").close()
    done = cli(world, tmp_path, "doctor", DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")

    assert done.returncode == 1
    assert "BLOCKING: table 'events' is missing" in done.stdout


def test_doctor_covers_the_policy_files_tables_and_exits_1_on_a_rule_the_database_cannot_serve(
    world: CameraWorld, tmp_path: Path
):
    with world.engine.begin() as conn:
        conn.execute(text("CREATE TABLE audit_logs (id INTEGER PRIMARY KEY, created_at TIMESTAMP NOT NULL)"))
        conn.execute(text("INSERT INTO audit_logs (id, created_at) VALUES (1, '2000-01-01 00:00:00')"))
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: audit_logs\n    time_column: created_at\n    retention_days: 90\n")

    good = cli(world, tmp_path, "doctor", "--json", RETENTION_POLICY_FILE=str(policy))

    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)
    assert report["expired_rows"]["audit_logs"] == 1
    assert ("audit_logs", "created_at") in {(c["table"], c["column"]) for c in report["time_columns"]}

    policy.write_text("tables:\n  - table: audit_logs\n    time_column: written_at\n    retention_days: 90\n")
    bad = cli(world, tmp_path, "doctor", RETENTION_POLICY_FILE=str(policy))

    assert bad.returncode == 1
    assert (
        f"RETENTION_POLICY_FILE {policy}: tables[0] (audit_logs): the table has no column 'written_at'"
        in (bad.stdout + bad.stderr)
    )


def test_doctor_finds_a_policy_table_spelled_in_another_case_where_the_database_does_and_names_it_as_created(
    world: CameraWorld, tmp_path: Path
):
    with world.engine.begin() as conn:
        conn.execute(text('CREATE TABLE "Crops" (id INTEGER PRIMARY KEY, created_at TIMESTAMP NOT NULL)'))
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: crops\n    time_column: created_at\n    retention_days: 7\n")

    done = cli(world, tmp_path, "doctor", "--json", RETENTION_POLICY_FILE=str(policy))

    report = json.loads(done.stdout)
    if world.engine.dialect.name == "postgresql":  # names are compared as written: crops is not "Crops"
        assert done.returncode == 1
        assert any("the database has no table 'crops'" in b for b in report["blocking"])
        assert not [c for c in report["time_columns"] if c["table"].lower() == "crops"]
        policy.write_text('tables:\n  - table: "Crops"\n    time_column: created_at\n    retention_days: 7\n')
        exact = json.loads(cli(world, tmp_path, "doctor", "--json", RETENTION_POLICY_FILE=str(policy)).stdout)
        assert 'CREATE INDEX CONCURRENTLY "ix_Crops_created_at" ON "Crops" (created_at);' in exact["advice"]
        return
    # SQLite: crops is the table created as Crops; its unindexed time column is reported, and the index
    # advice names the table as the database spells it.
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"table": "Crops", "column": "created_at", "indexed": False, "kinds": []} in report["time_columns"]
    assert 'CREATE INDEX "ix_Crops_created_at" ON "Crops" (created_at);' in report["advice"]


def test_doctor_shows_every_rule_with_its_days_and_the_database_it_read(world: CameraWorld, tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tables:\n  - table: gpu_stats\n    time_column: recorded_at\n    retention_days: 4\n"
        "  - table: events\n    time_column: started_at\n    retention_days: 10\n"
    )

    done = cli(world, tmp_path, "doctor", RETENTION_POLICY_FILE=str(policy), RETENTION_DAYS="30")
    as_json = cli(world, tmp_path, "doctor", "--json", RETENTION_POLICY_FILE=str(policy), RETENTION_DAYS="30")

    assert done.returncode == 0, done.stderr
    shown = world.engine.url.render_as_string(hide_password=True)
    assert f"database: {shown}\n" in done.stdout  # the file (SQLite) or host, never a bare "sqlite://"
    assert "  gpu_stats.recorded_at: 30 days (RETENTION_DAYS), cutoff " in done.stdout
    assert f"  gpu_stats.recorded_at: 4 days ({policy}: tables[0]), cutoff " in done.stdout
    assert f"  events.started_at: 10 days ({policy}: tables[1]), cutoff " in done.stdout
    assert "  logs.timestamp: 7 days (LOG_RETENTION_DAYS), cutoff " in done.stdout
    report = json.loads(as_json.stdout)
    assert report["database"] == shown
    columns = [(c["table"], c["column"]) for c in report["time_columns"]]
    assert columns.count(("gpu_stats", "recorded_at")) == 1  # two rules, one column
    assert {(r["table"], r["days"]) for r in report["rules"]} >= {("gpu_stats", 4), ("events", 10)}


def test_doctor_leaves_a_sqlite_database_as_it_found_it_and_creates_none(world: CameraWorld, tmp_path: Path):
    if world.engine.dialect.name != "sqlite":
        pytest.skip("journal modes and database files that appear on opening are SQLite's")
    database = world.engine.url.database
    world.engine.dispose()
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")

    done = cli(world, tmp_path, "doctor", "--json")
    missing = tmp_path / "nowhere" / "camera.db"
    absent = cli(world, tmp_path, "doctor", DATABASE_URL=f"sqlite:///{missing}")

    assert done.returncode == 0, done.stderr
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert absent.returncode == 1
    assert f"cannot read the camera database: {missing} does not exist" in absent.stderr
    assert not missing.parent.exists()


@pytest.mark.parametrize(("parent", "warned"), [("logs", True), ("detections", False)])
def test_doctor_warns_of_a_policy_table_with_files_that_a_cascade_from_a_later_table_empties(
    world: CameraWorld, tmp_path: Path, parent: str, warned: bool
):
    # logs are purged beside the policy's tables, so its cascade can take snapshots before their files
    # are queued; detections are purged before them, and their batches queue the snapshots' files.
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE snapshots (id INTEGER PRIMARY KEY, parent_id INTEGER, taken_at TIMESTAMP,"
                f" image VARCHAR(200), FOREIGN KEY (parent_id) REFERENCES {parent} (id) ON DELETE CASCADE)"
            )
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tables:\n  - table: snapshots\n    time_column: taken_at\n    retention_days: 14\n"
        "    files: {image: thumbnails}\n"
    )

    done = cli(world, tmp_path, "doctor", "--json", RETENTION_POLICY_FILE=str(policy))

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"table": "snapshots", "parent": parent, "on_delete": "CASCADE"}.items() <= next(
        r for r in report["references"] if r["table"] == "snapshots"
    ).items()
    cascade_warnings = [
        w for w in report["warnings"] if w.startswith("snapshots (a policy table) is also emptied by")
    ]
    assert bool(cascade_warnings) is warned


def test_a_read_only_engine_opens_a_sqlite_file_whose_path_holds_url_characters(tmp_path: Path):
    folder = tmp_path / "cams#1 ?x%"
    folder.mkdir()
    with sqlite3.connect(folder / "camera.db") as conn:
        conn.execute("CREATE TABLE detections (id INTEGER PRIMARY KEY)")
    url = URL.create("sqlite", database=str(folder / "camera.db")).render_as_string()

    engine = make_engine(url, read_only=True)
    try:
        assert inspect(engine).get_table_names() == ["detections"]
        with pytest.raises(OperationalError, match="readonly"), engine.begin() as conn:
            conn.execute(text("INSERT INTO detections (id) VALUES (1)"))
    finally:
        engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams#1 ?x%"]


@pytest.mark.parametrize(
    ("order", "warned"), [(("snaps", "snap_crops"), False), (("snap_crops", "snaps"), True)]
)
def test_doctor_warns_of_a_cascade_chain_only_where_a_step_runs_after_its_child(
    world: CameraWorld, tmp_path: Path, order: tuple[str, str], warned: bool
):
    # events -> snaps -> snap_crops: runs follow the chain when each parent is purged before its child.
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE snaps (id INTEGER PRIMARY KEY, event_id INTEGER, taken_at TIMESTAMP,"
                " FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE)"
            )
        )
        conn.execute(
            text(
                "CREATE TABLE snap_crops (id INTEGER PRIMARY KEY, snap_id INTEGER, taken_at TIMESTAMP,"
                " image VARCHAR(200), FOREIGN KEY (snap_id) REFERENCES snaps (id) ON DELETE CASCADE)"
            )
        )
    entries = {
        "snaps": "  - table: snaps\n    time_column: taken_at\n    retention_days: 14\n",
        "snap_crops": "  - table: snap_crops\n    time_column: taken_at\n    retention_days: 14\n"
        "    files: {image: thumbnails}\n",
    }
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n" + "".join(entries[name] for name in order))

    done = cli(world, tmp_path, "doctor", "--json", RETENTION_POLICY_FILE=str(policy))

    assert done.returncode == 0, done.stderr
    warnings = [w for w in json.loads(done.stdout)["warnings"] if "ON DELETE CASCADE" in w]
    unfollowed = "snap_crops (a policy table) is also emptied by ON DELETE CASCADE from snaps"
    assert [w.split(",")[0] for w in warnings] == ([unfollowed] if warned else [])
