"""data_cleanup through Dagster, on SQLite and PostgreSQL: config, dry runs, metadata on the run page."""

import os
import socket
import sqlite3
from datetime import timedelta

import dagster as dg
import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert, text

from retention_pipeline.core.schema import detections, events, logs
from retention_pipeline.core.stats import CleanupStats
from retention_pipeline.history import recent_cleanup_runs, step_metadata
from retention_pipeline.jobs import data_cleanup
from retention_pipeline.run_processes import recorded_process
from retention_pipeline.tags import CLEANUP_HEADLINE, EXCLUSIVE_TAG
from retention_pipeline_tests.dagster_helpers import (
    execute,
    failure_messages,
    plan_config,
    point_environment_at,
    refuse_table,
)
from retention_pipeline_tests.factories import THUMBS, CameraWorld


@pytest.fixture
def seeded(world: CameraWorld) -> CameraWorld:
    old_event = world.event(world.old(), alerts_count=1, clip=world.file("data/clips/old.mp4", 300))
    world.detection(world.old(), events_=(old_event,), thumbnail=world.file(f"{THUMBS}/old.jpg", 50))
    world.event(world.recent())
    world.detection(world.recent())
    world.log(world.log_cutoff - world.log_cutoff.resolution * 1000)
    return world


def test_default_launchpad_config_is_valid_and_is_a_dry_run(seeded: CameraWorld, instance):
    before = (seeded.ids(events), seeded.ids(detections), seeded.ids(logs))

    result = execute(seeded, instance, run_config=None)

    assert result.success
    stats = result.output_for_node("report_cleanup")
    assert stats.dry_run is True
    # Without reference_time the cutoff is measured from the launch: the whole test world has expired.
    assert stats.events_deleted == 2 and stats.thumbnails_deleted == 2
    assert (seeded.ids(events), seeded.ids(detections), seeded.ids(logs)) == before
    assert seeded.exists(f"{THUMBS}/old.jpg")


def test_a_run_notes_the_process_that_runs_it_in_its_log_not_in_its_tags(seeded: CameraWorld, instance):
    result = execute(seeded, instance, plan_config(dry_run=False, reference_time=seeded.now.isoformat()))

    run = instance.get_run_by_id(result.run_id)
    assert result.success and run is not None
    assert recorded_process(instance, result.run_id) == (os.getpid(), socket.gethostname())
    ours = {key for key in run.tags if not key.startswith(("dagster/", ".dagster"))}
    # The Runs page shows every tag as a chip: only the queue's tag and the headline figures are ours.
    assert ours == {EXCLUSIVE_TAG, *CLEANUP_HEADLINE}


def test_a_runs_headline_figures_become_tags_that_status_reads_too(seeded: CameraWorld, instance):
    reference = seeded.now.isoformat()
    dry = execute(seeded, instance, plan_config(dry_run=True, reference_time=reference))
    real = execute(seeded, instance, plan_config(dry_run=False, reference_time=reference))

    dry_tags, real_tags = (instance.get_run_by_id(r.run_id).tags for r in (dry, real))
    expected = {
        "events_deleted": "1",
        "detections_deleted": "1",
        "files_deleted": "2",  # the thumbnail and the clip
        "space_reclaimed": "350 B",
    }
    assert {k: dry_tags[k] for k in CLEANUP_HEADLINE} == {"dry_run": "true", **expected}
    assert {k: real_tags[k] for k in CLEANUP_HEADLINE} == {"dry_run": "false", **expected}
    real_runs = instance.get_run_records(dg.RunsFilter(tags={"dry_run": "false"}))
    assert [r.dagster_run.run_id for r in real_runs] == [real.run_id]
    rows = recent_cleanup_runs(instance, 2)
    assert [row["headline"] for row in rows] == [
        {k: real_tags[k] for k in CLEANUP_HEADLINE},
        {k: dry_tags[k] for k in CLEANUP_HEADLINE},
    ]


def test_a_failed_run_names_its_step_and_keeps_the_counts_it_committed(
    seeded: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    refuse_table(monkeypatch, "events", "the events table is on fire")

    result = execute(seeded, instance, plan_config(dry_run=False, reference_time=seeded.now.isoformat()))

    tags = instance.get_run_by_id(result.run_id).tags
    assert not result.success
    assert tags["failed_step"] == "purge_events"
    assert (tags["dry_run"], tags["detections_deleted"]) == ("false", "1")
    assert "events_deleted" not in tags and "files_deleted" not in tags
    assert recent_cleanup_runs(instance, 1)[0]["headline"]["failed_step"] == "purge_events"


def test_real_run_deletes_and_its_stats_reach_the_run_page_and_status(seeded: CameraWorld, instance):
    reference = seeded.now.isoformat()

    result = execute(seeded, instance, plan_config(dry_run=False, reference_time=reference))

    assert result.success
    assert seeded.count(events) == 1 and seeded.count(detections) == 1
    assert not seeded.exists(f"{THUMBS}/old.jpg")
    [row] = recent_cleanup_runs(instance, limit=5)
    assert row["run_id"] == result.run_id and row["status"] == "SUCCESS"
    assert row["dry_run"] is False
    assert row["cutoff"] == seeded.cutoff.isoformat()
    assert row["events_deleted"] == 1 and row["detections_deleted"] == 1
    assert row["alerts_deleted"] == 1 and row["logs_deleted"] == 1
    assert row["thumbnails_deleted"] == 1 and row["clips_deleted"] == 1
    assert row["space_reclaimed"] == 350
    assert set(CleanupStats.field_names()) <= set(row)


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_runs_own_days_per_table_are_the_cutoffs_it_reports(world: CameraWorld, instance, dry_run: bool):
    # 10 days old: kept by RETENTION_DAYS (30), gone under this run's 5 days for events, kept by its 20
    # for detections. The report used to show RETENTION_DAYS's cutoff whatever the run applied.
    world.event(world.now - timedelta(days=10))
    world.detection(world.now - timedelta(days=10))
    own_days = {"events": 5, "detections": 20}
    config = plan_config(
        dry_run=dry_run, reference_time=world.now.isoformat(), retention_days_by_table=own_days
    )

    result = execute(world, instance, config)

    events_cutoff, detections_cutoff = world.now - timedelta(days=5), world.now - timedelta(days=20)
    stats = result.output_for_node("report_cleanup")
    assert (stats.events_deleted, stats.detections_deleted) == (1, 0)
    assert stats.cutoff == events_cutoff and stats.log_cutoff == world.log_cutoff
    assert stats.cutoffs_by_table == {
        "detections": detections_cutoff,
        "events": events_cutoff,
        "gpu_stats": world.cutoff,
        "logs": world.log_cutoff,
    }
    shown = {name: at.isoformat() for name, at in stats.cutoffs_by_table.items()}
    [row] = recent_cleanup_runs(instance, limit=1)
    assert (row["cutoff"], row["cutoffs_by_table"]) == (events_cutoff.isoformat(), shown)
    planned = step_metadata(instance, result.run_id, "plan_cleanup")
    assert (planned["cutoff"], planned["cutoffs_by_table"]) == (events_cutoff.isoformat(), shown)


def test_status_lists_dry_runs_too_newest_first(seeded: CameraWorld, instance):
    reference = seeded.now.isoformat()
    first = execute(seeded, instance, plan_config(dry_run=True, reference_time=reference))
    second = execute(seeded, instance, plan_config(dry_run=False, reference_time=reference))

    rows = recent_cleanup_runs(instance, limit=5)

    assert [r["run_id"] for r in rows] == [second.run_id, first.run_id]
    assert [r["dry_run"] for r in rows] == [False, True]
    assert rows[1]["events_deleted"] == rows[0]["events_deleted"] == 1


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("retention_days", 0, "retention_days must be greater than or equal to 1, got 0"),
        ("retention_days", -3, "retention_days must be greater than or equal to 1, got -3"),
        ("log_retention_days", 36501, "log_retention_days must be less than or equal to 36500, got 36501"),
        ("batch_size", 100_001, "batch_size must be less than or equal to 100000, got 100001"),
        ("transaction_target_ms", -1.0, "transaction_target_ms must be greater than or equal to 0, got -1.0"),
        ("retention_days_by_table", {"logs": 0}, "retention_days_by_table.logs must be greater than or"),
        (
            "reference_time",
            "2999-01-01T00:00:00Z",
            "reference_time 2999-01-01T00:00:00+00:00 is in the future",
        ),
        (
            "reference_time",
            "9999-12-31T23:00:00-05:00",
            "reference_time '9999-12-31T23:00:00-05:00' lies outside the years a cutoff can be counted in",
        ),
    ],
)
def test_a_value_out_of_bounds_is_refused_at_launch_and_no_run_exists(
    seeded: CameraWorld, instance, field, bad, message
):
    before = (seeded.ids(events), seeded.ids(detections))

    with pytest.raises(dg.DagsterInvalidConfigError, match="nothing was launched") as refused:
        execute(seeded, instance, plan_config(dry_run=False, **{field: bad}))

    assert f"plan_cleanup: {message}" in str(refused.value)
    assert instance.get_runs_count() == 0
    assert (seeded.ids(events), seeded.ids(detections)) == before
    assert seeded.exists(f"{THUMBS}/old.jpg")


def test_a_refusal_quotes_the_bad_value_once(seeded: CameraWorld, instance):
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        execute(seeded, instance, plan_config(dry_run=True, reference_time="2026-01-01"))

    assert str(refused.value).endswith(
        "plan_cleanup: reference_time must include a UTC offset such as +00:00, got '2026-01-01'"
    )


def test_non_numeric_retention_is_rejected_by_the_config_system(seeded: CameraWorld, instance):
    with pytest.raises(dg.DagsterInvalidConfigError, match="retention_days"):
        execute(seeded, instance, plan_config(dry_run=False, retention_days="abc"))
    assert seeded.count(events) == 2


def test_bad_environment_fails_the_run_with_the_variable_named(
    seeded: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("RETENTION_DAYS", "0")

    result = execute(seeded, instance, plan_config(dry_run=False))

    assert not result.success
    assert "RETENTION_DAYS must be an integer between 1 and 36500, got '0'" in failure_messages(result)
    assert seeded.count(events) == 2


def _run_on(url: str, instance, dry_run: bool) -> dg.ExecuteInProcessResult:
    from retention_pipeline.resources import CameraSystemResource, DiskSpaceResource

    return data_cleanup.execute_in_process(
        run_config=plan_config(dry_run=dry_run),
        resources={"camera_system": CameraSystemResource(database_url=url), "disk": DiskSpaceResource()},
        instance=instance,
        raise_on_error=False,
    )


def test_a_database_without_the_camera_tables_fails_clearly(world: CameraWorld, instance, tmp_path):
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()

    result = _run_on(f"sqlite:///{empty}", instance, dry_run=False)

    assert not result.success
    message = failure_messages(result)
    assert "is not a camera system database: table 'detections' is missing" in message
    assert "table 'events' is missing" in message


def test_a_mistyped_sqlite_path_fails_clearly_and_creates_nothing(instance, tmp_path):
    typo = tmp_path / "dat" / "retention.db"

    result = _run_on(f"sqlite:///{typo}", instance, dry_run=True)

    assert not result.success
    assert f"the camera database {typo} does not exist: check DATABASE_URL" in failure_messages(result)
    assert not typo.parent.exists()


def test_scheduled_run_uses_the_tick_time_even_when_it_runs_late(seeded: CameraWorld, instance):
    tick = seeded.now
    config = plan_config(dry_run=False, reference_time=None)
    tags = {".dagster/scheduled_execution_time": tick.isoformat()}

    result = execute(seeded, instance, config, tags=tags)

    assert result.success
    assert result.output_for_node("report_cleanup").cutoff == seeded.cutoff


def test_a_run_that_finds_another_holding_the_database_stops_before_deleting(seeded: CameraWorld, instance):
    from retention_pipeline.core.lock import ExclusiveRunLock

    with ExclusiveRunLock(seeded.engine):
        blocked = execute(seeded, instance, plan_config(dry_run=False))
    after = execute(seeded, instance, plan_config(dry_run=False, reference_time=seeded.now.isoformat()))

    assert not blocked.success
    assert "another retention run is working on" in failure_messages(blocked)
    assert after.success and after.output_for_node("report_cleanup").events_deleted == 1


def _audit_logs_under_a_policy(
    world: CameraWorld, tmp_path, monkeypatch: pytest.MonkeyPatch, *days_old: int
) -> Table:
    """An audit_logs table with rows `days_old` days old, and a policy file keeping them 90 days."""
    audit = Table(
        "audit_logs",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    audit.create(world.engine)
    with world.engine.begin() as conn:
        for days in days_old:
            conn.execute(insert(audit).values(created_at=world.now - timedelta(days=days)))
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: audit_logs\n    time_column: created_at\n    retention_days: 90\n")
    monkeypatch.setenv("RETENTION_POLICY_FILE", str(policy))
    return audit


def test_a_policy_files_tables_are_purged_and_reported_per_table(
    seeded: CameraWorld, instance, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    audit = _audit_logs_under_a_policy(seeded, tmp_path, monkeypatch, 100, 95, 5)
    reference = seeded.now.isoformat()

    preview = execute(seeded, instance, plan_config(dry_run=True, reference_time=reference))
    result = execute(seeded, instance, plan_config(dry_run=False, reference_time=reference))

    assert preview.success and result.success, failure_messages(result)
    expected = {"detections": 1, "events": 1, "audit_logs": 2, "gpu_stats": 0, "logs": 1}
    assert preview.output_for_node("report_cleanup").rows_deleted_by_table == expected
    assert result.output_for_node("report_cleanup").rows_deleted_by_table == expected
    assert seeded.count(audit) == 1
    rows = recent_cleanup_runs(instance, limit=5)
    assert [row["rows_deleted_by_table"] for row in rows] == [expected, expected]


def test_a_bad_policy_fails_plan_cleanup_naming_the_file_and_deletes_nothing(
    seeded: CameraWorld, instance, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  - table: audit_logs\n    time_column: created_at\n    retention_days: 90\n")
    monkeypatch.setenv("RETENTION_POLICY_FILE", str(policy))
    before = (seeded.ids(events), seeded.ids(detections), seeded.ids(logs))

    result = execute(seeded, instance, plan_config(dry_run=False, reference_time=seeded.now.isoformat()))

    assert not result.success
    assert f"RETENTION_POLICY_FILE {policy}: tables[0] (audit_logs)" in failure_messages(result)
    assert "the database has no table 'audit_logs'" in failure_messages(result)
    assert (seeded.ids(events), seeded.ids(detections), seeded.ids(logs)) == before


def test_the_code_locations_resource_shows_effective_settings_and_reads_the_run_environment(
    seeded: CameraWorld, instance, monkeypatch: pytest.MonkeyPatch, tmp_path
):
    from retention_pipeline.jobs import data_cleanup
    from retention_pipeline.resources import CameraSystemResource, DiskSpaceResource

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'not_the_camera.db'}")
    for name in ("MEDIA_ROOT", "THUMBNAIL_DIR", "CLIPS_DIR", "IMAGES_DIR"):
        monkeypatch.delenv(name, raising=False)

    shown = CameraSystemResource.from_environment()

    # The UI shows the variable a setting comes from, and the effective default of the others (not None).
    assert isinstance(shown.database_url, dg.EnvVar) and shown.database_url.env_var_name == "DATABASE_URL"
    assert (shown.media_root, shown.thumbnail_dir, shown.clips_dir) == (".", "data/thumbnails", "data/clips")
    # A run reads the environment when it starts, whatever it was when the resource was built.
    point_environment_at(seeded, monkeypatch)
    result = data_cleanup.execute_in_process(
        run_config=plan_config(dry_run=False, reference_time=seeded.now.isoformat()),
        resources={"camera_system": shown, "disk": DiskSpaceResource()},
        instance=instance,
    )
    assert result.success and result.output_for_node("report_cleanup").events_deleted == 1
    assert seeded.count(events) == 1 and not seeded.exists(f"{THUMBS}/old.jpg")


def test_files_a_policy_gives_logs_go_in_the_same_run_whatever_the_executor_runs_first(
    seeded: CameraWorld, instance, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    with seeded.engine.begin() as conn:
        conn.execute(text("ALTER TABLE logs ADD COLUMN attachment VARCHAR(1024)"))
    attached = seeded.file(f"{THUMBS}/log_attachment.png")
    log_id = seeded.log(seeded.now - timedelta(days=30))
    with seeded.engine.begin() as conn:
        conn.execute(
            text("UPDATE logs SET attachment = :path WHERE id = :id"), {"path": attached, "id": log_id}
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tables:\n  - table: logs\n    time_column: timestamp\n    retention_days: 5\n"
        "    files: {attachment: thumbnails}\n"
    )
    monkeypatch.setenv("RETENTION_POLICY_FILE", str(policy))

    result = execute(seeded, instance, plan_config(dry_run=False, reference_time=seeded.now.isoformat()))

    assert result.success, failure_messages(result)
    assert not seeded.exists(attached)
    assert result.output_for_node("report_cleanup").thumbnails_deleted >= 1
    # On a parallel executor only the graph orders the steps: every purge that can queue files comes first.
    upstream = _upstream(data_cleanup.graph, "plan_file_chunks")
    assert {
        "purge_detections",
        "purge_events",
        "purge_declared_tables",
        "purge_gpu_stats",
        "purge_logs",
    } <= upstream


def _upstream(graph: dg.GraphDefinition, node: str) -> set[str]:
    structure = graph.dependency_structure
    seen: set[str] = set()
    todo = [node]
    while todo:
        for outputs in structure.input_to_upstream_outputs_for_node(todo.pop()).values():
            for output in outputs:
                if output.node_name not in seen:
                    seen.add(output.node_name)
                    todo.append(output.node_name)
    return seen


def test_a_policy_file_saved_with_a_typo_during_a_run_does_not_fail_its_later_steps(
    seeded: CameraWorld, instance, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    import retention_pipeline.ops as ops

    audit = _audit_logs_under_a_policy(seeded, tmp_path, monkeypatch, 100)
    policy = tmp_path / "policy.yaml"
    planned = ops.make_plan

    def plan_then_edit(*args, **kwargs):
        plan = planned(*args, **kwargs)
        policy.write_text("tables: [\n")  # the operator saves a half-edited file
        return plan

    monkeypatch.setattr(ops, "make_plan", plan_then_edit)

    result = execute(seeded, instance, plan_config(dry_run=False, reference_time=seeded.now.isoformat()))

    assert result.success, failure_messages(result)
    assert result.output_for_node("report_cleanup").rows_deleted_by_table["audit_logs"] == 1
    assert seeded.count(audit) == 0
