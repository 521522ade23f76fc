"""The camera system's data as external assets, and the observations that plot their size over time."""

import hashlib
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from sqlalchemy.engine import Engine

from .core.inventory import table_inventory
from .core.orphans import OrphanStats
from .core.stats import CleanupStats, FileCounts
from .core.tables import Expiry, Registry, RetentionTable
from .settings import Settings

GROUP = "camera_system"

_TABLE_DESCRIPTIONS = {
    "events": "Camera events. Deleted when started_at is older than RETENTION_DAYS (default 30), with"
    " their alerts, event_detections links and clip.",
    "detections": "Object detections. Deleted when older than RETENTION_DAYS or linked to an expired"
    " event, unless still linked to a retained event.",
    "gpu_stats": "GPU statistics. Deleted after RETENTION_DAYS.",
    "logs": "Log lines. Deleted after LOG_RETENTION_DAYS (7).",
}
_FILE_ASSETS = [
    dg.AssetSpec(
        "thumbnails",
        group_name=GROUP,
        deps=["detections"],
        description="Thumbnail files under THUMBNAIL_DIR: deleted with their detection unless another row"
        " still uses them; orphans removed by orphaned_file_cleanup.",
    ),
    dg.AssetSpec(
        "images",
        group_name=GROUP,
        deps=["detections"],
        description="Original images under IMAGES_DIR: deleted with their last detection only when"
        " DELETE_IMAGES is on.",
    ),
    dg.AssetSpec(
        "clips",
        group_name=GROUP,
        deps=["events"],
        description="Event clips under CLIPS_DIR: deleted with their event.",
    ),
]
# The media assets in the order of Settings.storage_roots.
MEDIA_ASSETS = ("thumbnails", "clips", "images")
MEDIA_STORES = frozenset(spec.key.to_user_string() for spec in _FILE_ASSETS)


# The characters Dagster 1.13 accepts in an op name, which an asset check's op is named after: its asset
# key's components joined by `__` (only `-` and `.` turned into `_`). A key component itself may hold
# anything, but a check on it would stop the code location from loading.
_DAGSTER_NAME = re.compile(r"[A-Za-z0-9_]+")


def table_key(name: str) -> dg.AssetKey:
    """A table's asset key: its name, or `table/<name>` for a policy table named like a media store (a
    camera database may well hold a `clips` table), so the two assets never share a key; a name Dagster
    would refuse for the table's check (`Audit Logs`, `événements`, `audit-logs`) is `table/<safe name>`."""
    if name in MEDIA_STORES:
        return dg.AssetKey(["table", name])
    # A check's op is named after its key's path joined by `__`: a plain `table__x` would take the op name
    # of the key table/x.
    if _DAGSTER_NAME.fullmatch(name) and not name.startswith("table__"):
        return dg.AssetKey(name)
    return dg.AssetKey(["table", dagster_safe(name)])


def dagster_safe(name: str) -> str:
    """`name` in Dagster's characters, accents dropped and the rest turned into `_`, with 8 hex digits of
    its hash: `audit-logs` is another table than `audit_logs` (and `Audit Logs` than `Audit_Logs`), so
    their keys and check ops must differ, and from the name alone, so a key never changes as tables come."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = "_".join(re.findall(r"[A-Za-z0-9]+", ascii_name))[:48].rstrip("_")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{stem}_{digest}" if stem else f"t_{digest}"


def _describe(entry: RetentionTable) -> str:
    said = _TABLE_DESCRIPTIONS.get(entry.name, f"{entry.name} rows.")
    declared = [r for r in entry.rules if r.origin != "built-in"]
    also = " ".join(
        f"Also deleted {r.days} days after {r.column} (policy file {r.origin})." for r in declared
    )
    return f"{said} {also}".strip()


def camera_assets(registry: Registry) -> list[dg.AssetSpec]:
    """One asset per retention table (the built-in four and the policy file's) and one per file kind."""
    tables = [
        dg.AssetSpec(
            table_key(entry.name),
            group_name=GROUP,
            deps=["events"] if entry.name == "detections" else [],
            description=_describe(entry),
            # The key may be a spelling Dagster accepts (`table/Audit_Logs_…`): the table's name as is.
            metadata={"table": entry.name},
        )
        for entry in registry.tables
    ]
    return [*tables, *_FILE_ASSETS]


def _table_observations(
    engine: Engine,
    registry: Registry,
    now: datetime,
    stats: CleanupStats | None,
    warn: Callable[[str], None],
    whole_run: CleanupStats | None = None,
    horizons: Mapping[str, datetime] | None = None,
) -> list[dg.AssetObservation]:
    observations = []
    # What the run deleted since it started, against a PostgreSQL estimate read before (its duration
    # runs from the plan); `stats` may be only its later passes.
    whole_run = whole_run or stats
    since = None if whole_run is None else now - timedelta(seconds=whole_run.duration_seconds)
    # Each table's oldest row is looked for from its first rule's cutoff, the run's when there was one.
    horizons = horizons if stats is None else stats.cutoffs_by_table
    for entry in registry.tables:
        deleted = 0 if whole_run is None else whole_run.rows_deleted_by_table.get(entry.name, 0)
        try:
            inventory = table_inventory(engine, entry, deleted, since, (horizons or {}).get(entry.name))
        except Exception as exc:  # one table gone (a dropped policy table) must not hide the others
            warn(f"could not read table {entry.name} for its asset observation, left out: {exc}")
            continue
        metadata: dict[str, Any] = {
            "rows": inventory.rows,
            "rows_estimated": inventory.rows_estimated,  # True: PostgreSQL's planner estimate
            "oldest_age_days": round(inventory.age_days(now) or 0.0, 3),
        }
        if stats is not None:
            metadata["rows_deleted"] = stats.rows_deleted_by_table.get(entry.name, 0)
        observations.append(dg.AssetObservation(asset_key=table_key(entry.name), metadata=metadata))
    return observations


def observe_after_cleanup(
    context: dg.OpExecutionContext,
    engine: Engine,
    registry: Registry,
    stats: CleanupStats,
    files: FileCounts,
    whole_run: CleanupStats | None = None,
) -> None:
    """One observation per asset after a real data_cleanup run, or after its emergency passes (`stats`
    and `files` theirs alone, `whole_run` the run's total): each says what was deleted since the last."""
    try:
        tables = _table_observations(
            engine, registry, datetime.now(UTC), stats, context.log.warning, whole_run
        )
    except Exception as exc:  # a read after the deletes: the run's own numbers stand without it
        context.log.warning(f"could not read the tables' sizes for their asset observations: {exc}")
        tables = []
    for observation in tables:
        context.log_event(observation)
    for asset, deleted, freed in (
        ("thumbnails", files.thumbnails_deleted, files.thumbnail_bytes),
        ("images", files.images_deleted, files.image_bytes),
        ("clips", files.clips_deleted, files.clip_bytes),
    ):
        context.log_event(
            dg.AssetObservation(asset_key=asset, metadata={"files_deleted": deleted, "bytes_deleted": freed})
        )


def observe_after_sweep(
    context: dg.OpExecutionContext, engine: Engine, settings: Settings, stats: OrphanStats
) -> None:
    """One observation per asset after a real orphan sweep, which has just counted the files."""
    now = datetime.now(UTC)
    try:
        expiry = Expiry.at(settings.registry, now, settings.retention_days, settings.log_retention_days)
        horizons = {entry.name: expiry.cutoff(entry.name) for entry in settings.registry.tables}
        tables = _table_observations(
            engine, settings.registry, now, None, context.log.warning, horizons=horizons
        )
    except Exception as exc:  # a read after the deletes: the sweep's own numbers stand without it
        context.log.warning(f"could not read the tables' sizes for their asset observations: {exc}")
        tables = []
    for observation in tables:
        context.log_event(observation)
    # The sweep keys its totals by each store's root as configured; one directory named twice (or through
    # a symlink) is counted under one of its names: matched by the real path, never by a suffix.
    swept = {os.path.realpath(root): totals for root, totals in stats.per_root.items()}
    for asset, root in zip(MEDIA_ASSETS, settings.storage_roots, strict=True):
        totals = swept.get(os.path.realpath(root))
        if totals is None:
            continue  # not swept this time (images are swept only with include_images)
        oldest = totals["oldest_mtime"]
        context.log_event(
            dg.AssetObservation(
                asset_key=asset,
                metadata={
                    "files": int(totals["files"]),
                    "bytes": int(totals["bytes"]),
                    "oldest_age_days": round((now.timestamp() - oldest) / 86400, 3) if oldest else 0.0,
                    "orphans_deleted_by_sweep": stats.orphans_deleted,
                },
            )
        )
