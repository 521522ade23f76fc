"""The camera system's data as external assets, and the observations that plot their size over time."""

from datetime import UTC, datetime

import dagster as dg
from sqlalchemy.engine import Engine

from .core.inventory import TABLES, table_inventory
from .core.orphans import OrphanStats
from .core.stats import CleanupStats, FileCounts
from .settings import Settings

GROUP = "camera_system"

camera_assets = [
    dg.AssetSpec(
        "events",
        group_name=GROUP,
        description="Camera events. Deleted when started_at is older than RETENTION_DAYS (default 30),"
        " with their alerts, event_detections links and clip.",
    ),
    dg.AssetSpec(
        "detections",
        group_name=GROUP,
        deps=["events"],
        description="Object detections. Deleted when older than RETENTION_DAYS or linked to an expired"
        " event, unless still linked to a retained event.",
    ),
    dg.AssetSpec("gpu_stats", group_name=GROUP, description="GPU statistics. Deleted after RETENTION_DAYS."),
    dg.AssetSpec("logs", group_name=GROUP, description="Log lines. Deleted after LOG_RETENTION_DAYS (7)."),
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
TABLE_ROWS_DELETED = {
    "events": "events_deleted",
    "detections": "detections_deleted",
    "gpu_stats": "gpu_stats_deleted",
    "logs": "logs_deleted",
}


def _table_observations(
    engine: Engine, now: datetime, stats: CleanupStats | None
) -> list[dg.AssetObservation]:
    observations = []
    for name in TABLES:
        inventory = table_inventory(engine, name)
        metadata: dict[str, object] = {
            "rows": inventory.rows,
            "rows_estimated": inventory.rows_estimated,  # True: PostgreSQL's planner estimate
            "oldest_age_days": round(inventory.age_days(now) or 0.0, 3),
        }
        if stats is not None:
            metadata["rows_deleted"] = getattr(stats, TABLE_ROWS_DELETED[name])
        observations.append(dg.AssetObservation(asset_key=name, metadata=metadata))
    return observations


def observe_after_cleanup(
    context: dg.OpExecutionContext, engine: Engine, stats: CleanupStats, files: FileCounts
) -> None:
    """One observation per asset after a real data_cleanup run."""
    now = datetime.now(UTC)
    for observation in _table_observations(engine, now, stats):
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
    for observation in _table_observations(engine, now, None):
        context.log_event(observation)
    media_root = settings.media_root.absolute()
    for asset, folder in (
        ("thumbnails", settings.thumbnail_dir),
        ("clips", settings.clips_dir),
        ("images", settings.images_dir),
    ):
        totals = next(
            (
                t
                for root, t in stats.per_root.items()
                if root == str((media_root / folder).resolve(strict=False)) or root.endswith(str(folder))
            ),
            None,
        )
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
