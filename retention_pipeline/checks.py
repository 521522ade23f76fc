"""Retention health: asset checks on the camera system's assets, and the job that runs them."""

from datetime import UTC, datetime

import dagster as dg

from .core.inventory import retention_health
from .core.tables import DATA, LOG, Registry, RetentionTable
from .history import last_sweep_report
from .resources import CameraSystemResource


def _retention_check(entry: RetentionTable) -> dg.AssetChecksDefinition:
    rule = entry.rules[0]

    @dg.asset_check(
        asset=entry.name,
        name="retention_enforced",
        description="Passes while no row is older than its retention + 1 day (the age rows reach just"
        " before each daily run). WARN: rows past that (one missed run); ERROR: past + 2 days.",
    )
    def check(camera_system: CameraSystemResource) -> dg.AssetCheckResult:
        settings = camera_system.settings()
        days = {DATA: settings.retention_days, LOG: settings.log_retention_days}.get(
            rule.retention, rule.days
        )
        health = retention_health(
            camera_system.engine(), entry, days or settings.retention_days, datetime.now(UTC)
        )
        severity = dg.AssetCheckSeverity.ERROR if health.severity == "ERROR" else dg.AssetCheckSeverity.WARN
        return dg.AssetCheckResult(passed=health.passed, severity=severity, metadata=health.metadata())

    return check


def _orphan_check(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=name,
        name="no_orphans_in_last_sweep",
        description="WARN when the last real orphaned_file_cleanup run found orphaned files.",
    )
    def check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        report = last_sweep_report(context.instance)
        if report is None:
            return dg.AssetCheckResult(passed=True, metadata={"last_sweep": "none yet"})
        found = int(report.get("orphans_found", 0))
        return dg.AssetCheckResult(
            passed=found == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"orphans_found": found, "orphans_deleted": int(report.get("orphans_deleted", 0))},
        )

    return check


def retention_checks(registry: Registry) -> list[dg.AssetChecksDefinition]:
    """A retention_enforced check per retention table, on its first rule's column."""
    return [_retention_check(entry) for entry in registry.tables]


orphan_checks = [_orphan_check(name) for name in ("thumbnails", "clips", "images")]

retention_health_job = dg.define_asset_job(
    "retention_health",
    selection=dg.AssetSelection.all_asset_checks(),
    description="Run the retention health checks of the camera system's assets.",
)
