"""`retention-pipeline` as a user runs it: a subprocess, real instance directory, real databases."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from retention_pipeline.core.db import make_engine
from retention_pipeline.core.lock import ExclusiveRunLock
from retention_pipeline.core.schema import detections, events
from retention_pipeline.core.stats import CleanupStats
from retention_pipeline.jobs import EXCLUSIVE_TAGS, data_cleanup
from retention_pipeline.run_processes import record_process
from retention_pipeline_tests.factories import CLIPS, IMAGES, THUMBS, CameraWorld

# The command pyproject.toml installs, not `python -m`: its entry point is what users run.
CONSOLE_SCRIPT = Path(sys.executable).parent / "retention-pipeline"


@pytest.fixture
def live_world(engine: Engine, tmp_path: Path) -> CameraWorld:
    """A world whose `now` is the real clock, since the CLI measures cutoffs from the launch time."""
    world = CameraWorld(engine, tmp_path / "media", now=datetime.now(UTC))
    old_event = world.event(world.old(), alerts_count=1)
    world.detection(world.old(), events_=(old_event,))
    world.detection(world.recent())
    world.event(world.recent())
    return world


def cli(world: CameraWorld, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DATABASE_URL": world.engine.url.render_as_string(hide_password=False),
        "MEDIA_ROOT": str(world.media),
        "THUMBNAIL_DIR": THUMBS,
        "CLIPS_DIR": CLIPS,
        "IMAGES_DIR": IMAGES,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        **env,
    }
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dry_run_then_real_run_print_one_json_object_each(live_world: CameraWorld, tmp_path: Path):
    preview = cli(live_world, tmp_path, "run", "--dry-run", "--json")
    assert preview.returncode == 0, preview.stderr
    # Only what the user asked for: no beta warning, no advice about the empty DAGSTER_HOME.
    assert "BetaWarning" not in preview.stderr
    assert not (tmp_path / "dagster_home" / "dagster.yaml").exists()
    assert "No dagster instance configuration file" not in preview.stderr
    dry = json.loads(preview.stdout)
    assert live_world.count(events) == 2 and live_world.count(detections) == 2

    real_run = cli(live_world, tmp_path, "run", "--json")
    assert real_run.returncode == 0, real_run.stderr
    real = json.loads(real_run.stdout)

    assert list(dry) == list(real) == CleanupStats.field_names()
    assert dry["dry_run"] is True and real["dry_run"] is False
    assert dry["events_deleted"] == real["events_deleted"] == 1
    assert dry["thumbnails_deleted"] == real["thumbnails_deleted"] == 1
    assert dry["space_reclaimed"] == real["space_reclaimed"] > 0
    assert live_world.count(events) == 1 and live_world.count(detections) == 1


def test_status_lists_runs_newest_first_with_every_stat(live_world: CameraWorld, tmp_path: Path):
    cli(live_world, tmp_path, "run", "--dry-run")
    cli(live_world, tmp_path, "run")

    shown = cli(live_world, tmp_path, "status", "--json", "--limit", "5")
    table = cli(live_world, tmp_path, "status", "--limit", "1")

    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    rows = status["runs"]
    assert [r["dry_run"] for r in rows] == [False, True]
    assert [r["status"] for r in rows] == ["SUCCESS", "SUCCESS"]
    assert all(set(CleanupStats.field_names()) <= set(r) for r in rows)
    assert rows[0]["detections_deleted"] == 1 and rows[0]["run_id"]
    assert rows[0]["rows_deleted_by_table"] == {"detections": 1, "events": 1, "gpu_stats": 0, "logs": 0}
    assert "detections_deleted" in table.stdout and rows[0]["run_id"][:8] in table.stdout
    assert "rows_deleted_by_table.events" in table.stdout


def test_status_carries_what_the_camera_systems_cleanup_status_shows(live_world: CameraWorld, tmp_path: Path):
    cli(live_world, tmp_path, "run")
    # Half a day away: each command reckons the next cleanup from its own clock, seconds apart.
    far = (datetime.now(UTC) + timedelta(hours=12)).astimezone(ZoneInfo("Europe/Berlin"))
    env = {"RETENTION_DAYS": "14", "CLEANUP_TIME": f"{far:%H:%M}", "CLEANUP_TIMEZONE": "Europe/Berlin"}

    shown = cli(live_world, tmp_path, "status", "--json", **env)
    header = cli(live_world, tmp_path, "status", **env)

    status = json.loads(shown.stdout)
    assert {k: status[k] for k in ("running", "retention_days", "log_retention_days")} == {
        "running": False,
        "retention_days": 14,
        "log_retention_days": 7,
    }
    assert (status["cleanup_time"], status["timezone"], status["delete_images"]) == (
        f"{far:%H:%M}",
        "Europe/Berlin",
        False,
    )
    next_cleanup = datetime.fromisoformat(status["next_cleanup"])
    # An hour later when the time falls in a spring-forward gap.
    assert next_cleanup > datetime.now(UTC) and next_cleanup.astimezone(ZoneInfo("Europe/Berlin")).hour in (
        far.hour,
        (far.hour + 1) % 24,
    )
    last = status["last_run"]
    assert (last["status"], last["run_id"]) == ("SUCCESS", status["runs"][0]["run_id"])
    assert last["started"] and last["finished"] and last["stats"]["events_deleted"] == 1
    assert (
        "retention: 14 days (logs 7)" in header.stdout
        and f"daily at {far:%H:%M} Europe/Berlin" in header.stdout
    )
    assert status["next_cleanup"] in header.stdout


def test_a_dry_run_table_says_what_would_be_deleted_and_sizes_read_in_binary_units(
    live_world: CameraWorld, tmp_path: Path
):
    big = live_world.file(f"{THUMBS}/big.jpg", 3 * 1024 * 1024 // 2)
    live_world.detection(live_world.old(), thumbnail=big)

    preview = cli(live_world, tmp_path, "run", "--dry-run")

    lines = dict(line.split(None, 1) for line in preview.stdout.splitlines()[1:])
    assert preview.stdout.startswith("DRY RUN - nothing was deleted")
    assert lines["detections_to_delete"].strip() == "2"
    assert lines["thumbnails_to_delete"].strip() == "2"
    assert "detections_deleted" not in lines and "space_reclaimed" not in lines
    assert lines["space_to_reclaim"].strip().endswith("(1.5 MiB)")
    assert lines["rows_to_delete_by_table.detections"].strip() == "2"
    assert live_world.exists(big)


def test_the_status_table_shows_a_dry_runs_counts_as_what_would_be_deleted(
    live_world: CameraWorld, tmp_path: Path
):
    cli(live_world, tmp_path, "run", "--dry-run")
    dry_only = cli(live_world, tmp_path, "status", "--limit", "1")
    cli(live_world, tmp_path, "run")
    both = cli(live_world, tmp_path, "status", "--limit", "2")

    rows = dict(line.split(None, 1) for line in dry_only.stdout.splitlines()[2:])
    assert rows["dry_run"].strip() == "True" and rows["events_to_delete"].strip() == "1"
    assert rows["space_to_reclaim"].strip().endswith("B)") and "rows_to_delete_by_table.events" in rows
    assert not {"events_deleted", "space_reclaimed", "rows_deleted_by_table.events"} & set(rows)
    assert rows["[events_to_delete]"].strip() == "1" and "[space_to_reclaim]" in rows  # the Runs page's too
    assert not {"[events_deleted]", "[space_reclaimed]"} & set(rows)
    # Newest first, the real run's column then the dry run's: each fills only its own kind of row.
    header, *lines = both.stdout.splitlines()[1:]
    real_run, dry_run = header.split()
    shown = {line.split()[0]: line.rstrip() for line in lines}
    assert shown["events_deleted"].endswith(" 1") and shown["events_to_delete"].endswith(" 1")
    assert len(shown["events_deleted"]) == header.index(real_run) + len(real_run)
    assert len(shown["events_to_delete"]) == header.index(dry_run) + len(dry_run)
    assert list(shown).index("events_to_delete") == list(shown).index("events_deleted") + 1
    assert list(shown).index("[events_to_delete]") == list(shown).index("[events_deleted]") + 1


def test_invalid_configuration_exits_2_and_deletes_nothing(live_world: CameraWorld, tmp_path: Path):
    done = cli(live_world, tmp_path, "run", "--json", RETENTION_DAYS="0")

    assert done.returncode == 2
    assert json.loads(done.stdout) == {
        "ok": False,
        "exit_code": 2,
        "error": "Invalid configuration: RETENTION_DAYS must be an integer between 1 and 36500, got '0'",
        "run_id": None,
    }
    assert "RETENTION_DAYS must be an integer between 1 and 36500, got '0'" in done.stderr
    assert live_world.count(events) == 2


def test_with_json_a_failed_run_and_a_rule_that_cannot_apply_still_print_one_document(
    live_world: CameraWorld, tmp_path: Path
):
    (tmp_path / "empty.db").write_bytes(b"")
    failed = cli(live_world, tmp_path, "run", "--json", DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: events\n    time_column: started_at\n    retention_days: 400\n")
    useless = cli(live_world, tmp_path, "doctor", "--json", RETENTION_POLICY_FILE=str(policy))

    report = json.loads(failed.stdout)
    assert failed.returncode == report["exit_code"] == 1 and report["run_id"]
    assert "plan_cleanup failed: " in report["error"] and "is not a camera system database" in report["error"]
    refusal = json.loads(useless.stdout)
    assert useless.returncode == refusal["exit_code"] == 2
    assert "retention_days 400 on started_at would keep nothing longer" in refusal["error"]


def test_run_exits_2_on_a_policy_rule_that_cannot_apply_as_doctor_does(
    live_world: CameraWorld, tmp_path: Path
):
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: events\n    time_column: started_at\n    retention_days: 400\n")

    done = cli(live_world, tmp_path, "run", "--json", RETENTION_POLICY_FILE=str(policy))

    report = json.loads(done.stdout)
    assert done.returncode == report["exit_code"] == 2
    assert report["error"].startswith(
        "plan_cleanup failed: Invalid run configuration: RETENTION_POLICY_FILE "
    )
    assert "would keep nothing longer" in report["error"] and "dagster._core" not in report["error"]
    assert live_world.count(events) == 2


def _refuse_deletes_from_logs(engine: Engine) -> None:
    """A database trigger that fails every DELETE on logs, as a protected table would."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER no_log_deletes BEFORE DELETE ON logs"
                    " BEGIN SELECT RAISE(ABORT, 'logs are protected'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_log_deletes() RETURNS trigger LANGUAGE plpgsql"
                    " AS $$ BEGIN RAISE EXCEPTION 'logs are protected'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER no_log_deletes BEFORE DELETE ON logs"
                    " FOR EACH ROW EXECUTE FUNCTION refuse_log_deletes()"
                )
            )


def test_a_failed_run_says_why_in_its_errors_own_words_and_status_keeps_what_it_committed(
    live_world: CameraWorld, tmp_path: Path
):
    live_world.log(live_world.log_cutoff - timedelta(days=1))
    _refuse_deletes_from_logs(live_world.engine)

    done = cli(live_world, tmp_path, "run", "--json")
    status = cli(live_world, tmp_path, "status", "--json")

    report = json.loads(done.stdout)
    assert done.returncode == report["exit_code"] == 1
    assert report["error"].startswith("purge_logs failed: ") and "logs are protected" in report["error"]
    assert "Error occurred while executing op" not in report["error"] and "[SQL: " not in report["error"]
    # purge_events, which does not depend on purge_logs, still ran after it failed.
    assert live_world.count(events) == 1
    [row] = json.loads(status.stdout)["runs"]
    assert (row["status"], row["events_deleted"], row["detections_deleted"]) == ("FAILURE", 1, 1)
    assert row["headline"]["events_deleted"] == "1" and row["headline"]["failed_step"] == "purge_logs"


@pytest.mark.parametrize("limit", ["0", "99999999999999999999", "ten"])
def test_a_status_limit_out_of_range_is_refused_with_the_range(
    live_world: CameraWorld, tmp_path: Path, limit: str
):
    done = cli(live_world, tmp_path, "status", "--limit", limit)

    assert done.returncode == 2
    assert f"must be a whole number from 1 to 1000000, got '{limit}'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--json", "--limit", "0"),
        ("run", "--json", "--dry-rn"),
        ("--json",),
        ("status", "--j", "--limit", "0"),  # argparse takes any prefix of --json
        ("run", "--json=yes"),
    ],
)
def test_with_json_a_command_line_argparse_refuses_still_prints_one_document(
    live_world: CameraWorld, tmp_path: Path, args: tuple[str, ...]
):
    done = cli(live_world, tmp_path, *args)

    report = json.loads(done.stdout)
    assert done.returncode == report["exit_code"] == 2 and report["ok"] is False
    assert report["error"].startswith("retention-pipeline") and "usage:" in done.stderr
    assert live_world.count(events) == 2


def test_failed_run_exits_non_zero_with_the_error(live_world: CameraWorld, tmp_path: Path):
    (tmp_path / "not-a-camera.db").write_bytes(b"")  # an empty SQLite database
    done = cli(live_world, tmp_path, "run", DATABASE_URL=f"sqlite:///{tmp_path / 'not-a-camera.db'}")

    assert done.returncode == 1
    assert "is not a camera system database" in done.stderr


def test_without_dagster_home_a_local_instance_is_used_and_named(live_world: CameraWorld, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        DATABASE_URL=live_world.engine.url.render_as_string(hide_password=False),
        MEDIA_ROOT=str(live_world.media),
    )
    done = subprocess.run(
        [sys.executable, "-m", "retention_pipeline.cli", "status"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"using the local Dagster instance in {tmp_path / '.dagster_home'}" in done.stderr
    assert (tmp_path / ".dagster_home").is_dir()


def _started_run(home: Path, pid: int) -> str:
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            run = instance.create_run_for_job(
                data_cleanup, status=dg.DagsterRunStatus.STARTED, tags=EXCLUSIVE_TAGS
            )
            record_process(instance, run.run_id, pid)
            return run.run_id
    finally:
        del os.environ["DAGSTER_HOME"]


def _status_of(home: Path, run_id: str) -> dg.DagsterRunStatus:
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            run = instance.get_run_by_id(run_id)
            assert run is not None
            return run.status
    finally:
        del os.environ["DAGSTER_HOME"]


def test_a_second_run_is_refused_while_one_is_in_progress(live_world: CameraWorld, tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    _started_run(home, os.getpid())  # this test process is alive: a genuine run in progress

    done = cli(live_world, tmp_path, "run")

    assert done.returncode == 3
    assert "another retention run is in progress" in done.stderr
    assert live_world.count(events) == 2


@pytest.mark.parametrize("command", ["run", "orphans"])
def test_a_run_lock_held_by_a_run_this_instance_does_not_know_exits_busy(
    live_world: CameraWorld, tmp_path: Path, command: str
):
    # Another deployment (another DAGSTER_HOME) is deleting: only the database's run lock tells.
    lock = ExclusiveRunLock(make_engine(live_world.engine.url.render_as_string(hide_password=False)))
    lock.acquire()
    try:
        done = cli(live_world, tmp_path, command)
    finally:
        lock.release()

    assert done.returncode == 3, done.stderr
    assert "another retention run is working on" in done.stderr
    assert live_world.count(events) == 2


def test_a_killed_run_does_not_block_the_next_one(live_world: CameraWorld, tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = _started_run(home, int(dead.stdout))

    done = cli(live_world, tmp_path, "run")

    assert done.returncode == 0, done.stderr
    assert live_world.count(events) == 1
    assert _status_of(home, stale) == dg.DagsterRunStatus.FAILURE


@pytest.mark.parametrize("command", ["run", "status"])
@pytest.mark.parametrize("kind", ["relative", "a file"])
def test_a_dagster_home_that_cannot_hold_an_instance_exits_2_naming_the_variable(
    live_world: CameraWorld, tmp_path: Path, command: str, kind: str
):
    if kind == "a file":
        home = str(tmp_path / "home_is_a_file")
        Path(home).write_text("")
        message = f"DAGSTER_HOME must be a directory, got '{home}', which is not one"
    else:
        home, message = "dh", "DAGSTER_HOME must be an absolute path, got 'dh'"

    done = cli(live_world, tmp_path, command, "--json", DAGSTER_HOME=home)

    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout) == {"ok": False, "exit_code": 2, "error": message, "run_id": None}
    assert "Traceback" not in done.stderr and not (tmp_path / "dh").exists()
    assert live_world.count(events) == 2


@pytest.mark.parametrize("command", ["run", "status"])
def test_with_json_an_unusable_dagster_instance_still_prints_one_document(
    live_world: CameraWorld, tmp_path: Path, command: str
):
    home = tmp_path / "broken_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("run_storage: [not, a, storage]\n")

    done = cli(live_world, tmp_path, command, "--json", DAGSTER_HOME=str(home))

    report = json.loads(done.stdout)
    assert done.returncode == report["exit_code"] == 1 and report["ok"] is False
    assert live_world.count(events) == 2
