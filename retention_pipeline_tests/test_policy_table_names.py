"""Policy tables named with characters Dagster refuses in a name (a space, an accent, a hyphen): the camera
system's tables, which the code location must load, purge, observe and check under their own names."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import insert, select

from retention_pipeline_tests.dagster_helpers import plan_config
from retention_pipeline_tests.factories import CameraWorld
from retention_pipeline_tests.test_assets_and_checks import live_world
from retention_pipeline_tests.test_policy_table_assets import checks_of, policy_definitions, policy_table

__all__ = ["live_world"]  # the fixture

RULE = "  - table: {}\n    time_column: created_at\n    retention_days: 30\n"
# The names as Dagster sees them: written out, so a key that changed between versions fails here (its
# assets' history would be lost). The hash keeps `audit-logs` apart from the table `audit_logs`.
KEYS = {
    "Audit Logs": "table/Audit_Logs_5428d7fe",
    "événements": "table/evenements_a0374a88",
    "audit-logs": "table/audit_logs_dbb300d1",
    "audit_logs": "audit_logs",
    # Plain, but its check's op would be named as the check of the key table/Audit_Logs_5428d7fe.
    "table__Audit_Logs_5428d7fe": "table/table_Audit_Logs_5428d7fe_ef435f80",
}
POLICY = "tables:\n" + "".join(RULE.format(f'"{name}"') for name in KEYS)


def test_the_code_location_loads_with_its_schedules_when_policy_tables_have_names_dagster_refuses(
    tmp_path: Path,
):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    script = (
        "from retention_pipeline.definitions import defs\n"
        "import dagster as dg\n"
        "dg.Definitions.validate_loadable(defs)\n"
        "print(sorted(s.name for s in defs.schedules))\n"
        "graph = defs.resolve_asset_graph()\n"
        "print(sorted(k.to_user_string() for k in graph.get_all_asset_keys()))\n"
        "print(sorted(f'{k.asset_key.to_user_string()}:{k.name}' for k in graph.asset_check_keys))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "RETENTION_POLICY_FILE": str(path)},
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    schedules, keys, checks = done.stdout.splitlines()
    assert "daily_data_cleanup" in schedules
    for key in KEYS.values():
        assert repr(key) in keys
        assert repr(f"{key}:retention_enforced") in checks


def test_a_run_purges_observes_and_checks_policy_tables_under_their_own_names(
    live_world: CameraWorld, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    now = live_world.now
    tables = {name: policy_table(live_world.engine, name) for name in KEYS}
    with live_world.engine.begin() as conn:  # 30 days allowed: 33 days is two missed runs past due
        for table in tables.values():
            conn.execute(insert(table), [{"id": 1, "created_at": now - timedelta(days=33)}])
            conn.execute(insert(table), [{"id": 2, "created_at": now - timedelta(days=10)}])
    definitions = policy_definitions(tmp_path, monkeypatch, POLICY)
    graph = definitions.resolve_asset_graph()
    for name, key in KEYS.items():  # the table's own name beside a key Dagster accepts
        spec = graph.get(dg.AssetKey.from_user_string(key))
        assert spec.metadata["table"] == name and name in (spec.description or "")

    before = checks_of(definitions, instance)
    cleaned = definitions.resolve_job_def("data_cleanup").execute_in_process(
        run_config=plan_config(dry_run=False), instance=instance
    )
    after = checks_of(definitions, instance)

    assert cleaned.success
    with live_world.engine.connect() as conn:
        left = {name: set(conn.scalars(select(table.c.id))) for name, table in tables.items()}
    assert left == {name: {2} for name in KEYS}
    for name, key in KEYS.items():
        failed = before[f"{key}:retention_enforced"]
        assert not failed.passed and failed.metadata["overdue_rows"].value == 1
        assert failed.severity == dg.AssetCheckSeverity.ERROR
        assert after[f"{key}:retention_enforced"].passed
        records = instance.fetch_observations(dg.AssetKey.from_user_string(key), limit=1).records
        observed = {k: v.value for k, v in records[0].asset_observation.metadata.items()}
        assert (observed["rows"], observed["rows_deleted"]) == (1, 1), name
    stats = cleaned.output_for_node("report_cleanup")
    assert stats.rows_deleted_by_table["Audit Logs"] == 1
    assert stats.rows_deleted_by_table["événements"] == 1
