"""Retention health: asset checks on the camera system's assets, and the job that runs them."""

import csv
import os
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from sqlalchemy import inspect

from .assets import MEDIA_ASSETS, table_key
from .core.inventory import retention_health
from .core.tables import Registry, RetentionTable
from .history import last_sweep_report
from .resources import CameraSystemResource


def _retention_check(entry: RetentionTable) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table_key(entry.name),
        name="retention_enforced",
        description="Passes while no row is left that a run one day ago would have deleted (rows reach"
        " their retention + 1 day just before each daily run; rows the keep rule keeps are not overdue)."
        " WARN: such rows (one missed run); ERROR: rows a run two days ago would have deleted.",
        metadata={"table": entry.name},  # its asset key may spell it otherwise (assets.table_key)
    )
    def check(camera_system: CameraSystemResource) -> dg.AssetCheckResult:
        settings = camera_system.settings()
        engine = camera_system.engine()
        if not inspect(engine).has_table(entry.name):
            # Dropped or renamed since the code location loaded: nothing enforces its rules any more.
            todo = (
                "check DATABASE_URL"
                if entry.built_in
                else "restore the table, or remove its rules from RETENTION_POLICY_FILE and reload"
            )
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"The database has no table {entry.name!r}: its retention is not enforced;"
                f" {todo}.",
                metadata={"table_missing": True},
            )
        health = retention_health(
            engine,
            settings.registry,
            entry.name,
            settings.retention_days,
            settings.log_retention_days,
            datetime.now(UTC),
        )
        severity = dg.AssetCheckSeverity.ERROR if health.severity == "ERROR" else dg.AssetCheckSeverity.WARN
        return dg.AssetCheckResult(passed=health.passed, severity=severity, metadata=health.metadata())

    return check


def _orphan_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=name,
        name="no_orphans_in_last_sweep",
        description=f"WARN when the last real orphaned_file_cleanup run found orphaned files under the"
        f" {name} root; passes when that sweep did not walk the root.",
    )
    def check(
        context: dg.AssetCheckExecutionContext, camera_system: CameraSystemResource
    ) -> dg.AssetCheckResult:
        report = last_sweep_report(context.instance)
        if report is None:
            return dg.AssetCheckResult(passed=True, metadata={"last_sweep": "none yet"})
        roots = dict(zip(MEDIA_ASSETS, map(str, camera_system.settings().storage_roots), strict=True))
        root = os.path.normpath(roots[name])
        if not any(_within(root, swept) for swept in report.get("per_root") or {}):
            # Images are swept only with include_images: say so rather than answer for another root.
            return dg.AssetCheckResult(passed=True, metadata={"last_sweep": f"did not sweep {root}"})
        found = _orphans_under(report, root, [os.path.normpath(r) for r in roots.values()])
        return dg.AssetCheckResult(
            passed=found == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "orphans_found": found,
                "root": root,
                "orphans_deleted_by_sweep": int(report.get("orphans_deleted", 0)),
            },
        )

    return check


def _within(path: str, folder: str) -> bool:
    folder = os.path.normpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _orphans_under(report: dict[str, Any], root: str, roots: list[str]) -> int:
    """The sweep's orphans under `root` and under no root nested deeper in it (THUMBNAIL_DIR=data with
    CLIPS_DIR=data/clips: a clip is the clips' orphan), read from the sweep's manifest."""
    if not int(report.get("orphans_found", 0)):
        return 0
    deeper = [r for r in roots if r != root and _within(r, root)]
    try:
        # Written with surrogateescape: a file name that is not UTF-8 reads back as it was written.
        with open(report["report_csv"], newline="", errors="surrogateescape") as handle:
            return sum(
                1
                for row in csv.DictReader(handle)
                if _within(row["path"], root) and not any(_within(row["path"], d) for d in deeper)
            )
    except FileNotFoundError:
        # The manifest went with its run's stored outputs (dagster_history_cleanup): the sweep's whole
        # count stands for each root it swept, which may warn too much, never too little.
        return int(report["orphans_found"])


def retention_checks(registry: Registry) -> list[dg.AssetChecksDefinition]:
    """A retention_enforced check per retention table, on every rule of it."""
    return [_retention_check(entry) for entry in registry.tables]


orphan_checks = [_orphan_check(name) for name in MEDIA_ASSETS]

retention_health_job = dg.define_asset_job(
    "retention_health",
    selection=dg.AssetSelection.all_asset_checks(),
    description="Run the retention health checks of the camera system's assets.",
)
