"""Thin ops of orphaned_file_cleanup: plan, scan, delete, report."""

import os
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from .assets import observe_after_sweep
from .config import OrphanSweepConfig
from .core import orphan_safety, orphans
from .core.files import StorageRoots
from .core.labels import labelled, readable
from .core.lock import RunLockLost
from .core.scan import RootMissing, check_sweep_roots
from .job_tracker import finish, start_stage
from .resources import CameraSystemResource
from .run_lock_ops import claimed_engine, lock_lost
from .settings import SettingsError
from .tags import sweep_headline

REPORT_ROWS = 50


@dg.op(description="Validate the sweep's policy, check the roots are there, take the run lock.")
def plan_orphan_sweep(
    context: dg.OpExecutionContext, config: OrphanSweepConfig, camera_system: CameraSystemResource
) -> orphans.OrphanSweepPlan:
    try:
        # The stage first: a run failing on invalid settings still reaches the camera system's job tracker.
        stage = start_stage(context, camera_system.job_tracker())
        settings = camera_system.settings()
        policy = orphans.OrphanPolicy(**config.model_dump(), registry=settings.registry)
        configured = [settings.thumbnail_dir, settings.clips_dir, settings.images_dir]
        roots = StorageRoots.from_dirs(settings.media_root, configured[: 3 if policy.include_images else 2])
        unswept = orphans.unswept_roots(settings.media_root, configured, roots)
        check_sweep_roots(roots)
    except (ValueError, SettingsError, RootMissing) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    engine = claimed_engine(context, camera_system)
    manifest = Path(context.instance.storage_directory()) / context.run_id / "orphans.csv"
    context.log.info(
        ("DRY RUN - nothing will be deleted: " if policy.dry_run else "sweeping: ")
        + ", ".join(roots.walk_roots)
        + f" (files older than {policy.min_age_hours} h)"
    )
    stage.done()
    policy_file = [settings.policy_file] if settings.policy_file else []
    protected = orphans.never_swept(engine, *_dagster_directories(context.instance), *policy_file)
    return orphans.OrphanSweepPlan(policy, roots, datetime.now(UTC), manifest, protected, unswept)


def _dagster_directories(instance: dg.DagsterInstance) -> list[str]:
    """Where this Dagster keeps its own files: its home, and each local storage's directory (a dagster.yaml
    may put the run history or compute logs anywhere, under a storage root too)."""
    directories = [instance.root_directory, os.environ.get("DAGSTER_HOME", "")]
    for storage in (
        instance.run_storage,
        instance.event_log_storage,
        instance.schedule_storage,
        instance.compute_log_manager,
    ):
        # Not public API: read where present, so a Dagster that renames them only loses this protection.
        base_dir = getattr(storage, "_base_dir", None)
        conn_string = getattr(storage, "_conn_string", None)
        if isinstance(base_dir, str):
            directories.append(base_dir)
        if isinstance(conn_string, str) and conn_string.startswith("sqlite:///"):
            directories.append(os.path.dirname(conn_string.removeprefix("sqlite:///")))
    return [d for d in directories if d]


@dg.op(description="Walk the roots and write every unreferenced file old enough to a CSV manifest.")
def scan_orphaned_files(
    context: dg.OpExecutionContext, plan: orphans.OrphanSweepPlan, camera_system: CameraSystemResource
) -> orphans.OrphanStats:
    start_stage(context, camera_system.job_tracker())
    # Each step asks for the lock: a re-execution from failure starts at the failed one.
    stats = orphans.scan_for_orphans(
        claimed_engine(context, camera_system),
        plan.roots,
        plan.policy,
        plan.manifest,
        plan.started_at,
        context.log.info,
        plan.never_swept,
        plan.unswept,
    )
    if stats.unreadable_dirs:
        context.log.warning(
            f"{stats.unreadable_dirs} directories under the roots could not be read (permissions, or gone"
            " meanwhile): their files were neither scanned nor deleted"
        )
    if stats.mounts_skipped:
        context.log.warning(
            f"{stats.mounts_skipped} directories under the roots are mount points of other file systems (or"
            " bind mounts): the sweep did not enter them"
        )
    context.add_output_metadata(
        {
            "files_scanned": stats.files_scanned,
            "orphans_found": stats.orphans_found,
            "unreadable_dirs": stats.unreadable_dirs,
            "mounts_skipped": stats.mounts_skipped,
        }
    )
    return stats


@dg.op(description="Apply the safety stops, then delete the orphans that are still unreferenced.")
def delete_orphaned_files(
    context: dg.OpExecutionContext,
    plan: orphans.OrphanSweepPlan,
    scanned: orphans.OrphanStats,
    camera_system: CameraSystemResource,
) -> orphans.OrphanStats:
    start_stage(context, camera_system.job_tracker())
    try:
        reason = orphan_safety.check_safety(scanned, plan.policy)
    except orphan_safety.SafetyStop as exc:
        raise dg.Failure(description=str(exc), metadata=scanned.as_dict(), allow_retries=False) from None
    if reason:
        context.log.warning(("a real run would stop: " if plan.policy.dry_run else "forced past: ") + reason)
    engine = claimed_engine(context, camera_system)
    try:
        return orphans.delete_orphans(
            engine,
            plan.roots,
            plan.policy,
            scanned,
            plan.started_at,
            context.log.info,
            camera_system.claim_exclusive_run,  # a re-check of the lock this run holds
        )
    except RunLockLost as exc:
        raise lock_lost(exc) from None


@dg.op(description="Report the sweep's numbers and the first orphans on the run page.")
def report_orphan_sweep(
    context: dg.OpExecutionContext, stats: orphans.OrphanStats, camera_system: CameraSystemResource
) -> orphans.OrphanStats:
    stage = start_stage(context, camera_system.job_tracker())
    rows = orphans.orphan_report_rows(stats.report_csv, REPORT_ROWS)
    table = "| path | size | mtime |\n|---|---|---|\n" + "".join(
        f"| `{r['path']}` | {r['size']} | {datetime.fromtimestamp(float(r['mtime']), UTC):%Y-%m-%d %H:%M} |\n"
        for r in rows
    )
    shown = readable(stats.as_dict(), stats.dry_run)
    context.log.info(
        ("orphan sweep, DRY RUN - nothing was deleted: " if stats.dry_run else "orphan sweep: ") + str(shown)
    )
    context.add_output_metadata(
        {
            **labelled(stats.as_dict(), stats.dry_run),
            "report_csv": dg.MetadataValue.path(stats.report_csv),
            f"first_{REPORT_ROWS}_orphans": dg.MetadataValue.md(table),
        }
    )
    context.instance.add_run_tags(context.run_id, sweep_headline(stats))
    if not stats.dry_run:
        observe_after_sweep(context, camera_system.engine(), camera_system.settings(), stats)
    finish(stage, stats.as_dict(), "Dry run completed: nothing was deleted" if stats.dry_run else "Completed")
    return stats
