"""A small camera world for tests: rows in a real database, real files under real storage roots."""

import contextlib
import itertools
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, column, func, insert, inspect, select, table, text
from sqlalchemy.engine import Engine

from retention_pipeline.core.cleanup import prepare_database, run_cleanup
from retention_pipeline.core.db import make_engine
from retention_pipeline.core.plan import CleanupPlan, make_plan
from retention_pipeline.core.policy import DeclaredRule
from retention_pipeline.core.schema import (
    alerts,
    detections,
    event_detections,
    events,
    gpu_stats,
    logs,
)
from retention_pipeline.core.stats import CleanupStats
from retention_pipeline.settings import Settings

RETENTION_DAYS = 30
LOG_RETENTION_DAYS = 7
THUMBS, CLIPS, IMAGES = "data/thumbnails", "data/clips", "data/images"


class CameraWorld:
    """Builds rows and files relative to a fixed `now`; cutoff = now - 30 days, logs now - 7 days."""

    def __init__(self, engine: Engine, media_root: Path, now: datetime) -> None:
        self.engine = engine
        self.media = media_root
        self.now = now
        self.cutoff = now - timedelta(days=RETENTION_DAYS)
        self.log_cutoff = now - timedelta(days=LOG_RETENTION_DAYS)
        self._names = itertools.count(1)
        self.policy: tuple[DeclaredRule, ...] = ()  # RETENTION_POLICY_FILE's rules, if a test sets some
        for root in (THUMBS, CLIPS, IMAGES):
            (media_root / root).mkdir(parents=True, exist_ok=True)
        # The camera system's own shape also has cameras.folder_path (NOT NULL UNIQUE) and uuid alert keys.
        self.camera_shape = "folder_path" in {c["name"] for c in inspect(engine).get_columns("cameras")}
        camera: dict[str, Any] = {"id": "cam1", "name": "Front door"}
        if self.camera_shape:
            camera["folder_path"] = str(media_root / IMAGES)
        with engine.begin() as conn:
            conn.execute(insert(table("cameras", *(column(name) for name in camera))).values(camera))

    # --- files ---------------------------------------------------------------------------------
    def file(self, relative: str, size: int = 100) -> str:
        """Write a file of `size` bytes under the media root; returns the relative path."""
        path = self.media / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        return relative

    def exists(self, stored: str) -> bool:
        path = Path(stored) if Path(stored).is_absolute() else self.media / stored
        return path.exists() or path.is_symlink()

    # --- rows ----------------------------------------------------------------------------------
    def _insert(self, table: Table, **values: Any) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one())

    def event(
        self, at: datetime, clip: str | bool | None = True, alerts_count: int = 0, size: int = 300
    ) -> int:
        """An event started at `at`, with its own clip file unless clip is False/None/a path."""
        if clip is True:
            clip = self.file(f"{CLIPS}/clip{next(self._names)}.mp4", size)
        event_id = self._insert(events, batch_id="b", camera_id="cam1", started_at=at, clip_path=clip or None)
        for _ in range(alerts_count):
            self.alert(event_id, at)
        return event_id

    def detection(
        self,
        at: datetime,
        image: str | None = None,
        thumbnail: str | bool | None = True,
        events_: tuple[int, ...] = (),
        thumb_size: int = 50,
        image_size: int = 200,
    ) -> int:
        """A detection at `at` with its own thumbnail and (unless given) its own image file."""
        n = next(self._names)
        if image is None:
            image = self.file(f"{IMAGES}/img{n}.jpg", image_size)
        if thumbnail is True:
            thumbnail = self.file(f"{THUMBS}/thumb{n}.jpg", thumb_size)
        detection_id = self._insert(
            detections,
            camera_id="cam1",
            file_path=image,
            thumbnail_path=thumbnail or None,
            detected_at=at,
            object_type="person",
            confidence=0.9,
            media_type="image",
        )
        for event_id in events_:
            self.link(event_id, detection_id)
        return detection_id

    def alert(self, event_id: int, at: datetime) -> None:
        values: dict[str, Any] = {"event_id": event_id, "created_at": at, "message": "alert"}
        if self.camera_shape:
            values["id"] = str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(insert(alerts).values(**values))

    def link(self, event_id: int, detection_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(event_detections).values(
                    event_id=event_id, detection_id=detection_id, created_at=self.now
                )
            )

    def gpu(self, at: datetime) -> int:
        return self._insert(gpu_stats, recorded_at=at, gpu_utilization=50.0, memory_used=1, temperature=60.0)

    def log(self, at: datetime) -> int:
        return self._insert(logs, timestamp=at, level="INFO", component="t", message="m")

    def old_thumbnails(self, n: int) -> list[str]:
        """`n` expired detections, each with its own 10-byte thumbnail on disk; returns their paths."""
        thumbs = [self.file(f"{THUMBS}/t{i}.jpg", 10) for i in range(n)]
        for thumb in thumbs:
            self.detection(self.old(), thumbnail=thumb)
        return thumbs

    def old(self, days: float = 1) -> datetime:
        """`days` before the data cutoff (expired)."""
        return self.cutoff - timedelta(days=days)

    def recent(self, days: float = 1) -> datetime:
        """`days` after the data cutoff (retained)."""
        return self.cutoff + timedelta(days=days)

    # --- reading -------------------------------------------------------------------------------
    def count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def ids(self, table: Table) -> set[int]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(table.c.id)).scalars())

    # --- running -------------------------------------------------------------------------------
    def settings(self) -> Settings:
        return Settings(
            database_url=self.engine.url.render_as_string(hide_password=False),
            retention_days=RETENTION_DAYS,
            log_retention_days=LOG_RETENTION_DAYS,
            media_root=self.media,
            thumbnail_dir=Path(THUMBS),
            clips_dir=Path(CLIPS),
            images_dir=Path(IMAGES),
            policy=self.policy,
        )

    def plan(self, dry_run: bool = False, **overrides: Any) -> CleanupPlan:
        return make_plan(self.settings(), dry_run=dry_run, reference_time=self.now, **overrides)

    def run(self, dry_run: bool = False, **overrides: Any) -> CleanupStats:
        """One whole cleanup through the core, in the job's order."""
        prepare_database(self.engine, self.policy)
        return run_cleanup(self.engine, self.plan(dry_run=dry_run, **overrides))


def comparable(stats: CleanupStats) -> dict[str, Any]:
    """The numbers a dry run must predict exactly (timings and the mode itself excluded)."""
    values = stats.as_dict()
    for key in ("dry_run", "duration_seconds", "longest_transaction_ms", "db_retries"):
        values.pop(key)
    return values


def detached_partitions(engine: Engine) -> dict[str, int]:
    """The partitions a run detached and left in the database (PostgreSQL), with their rows."""
    with engine.connect() as conn:
        names = conn.execute(
            text("SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'retention\\_detached%'")
        ).scalars()
        return {name: conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one() for name in names}


@contextlib.contextmanager
def login_role(admin: Engine, prefix: str, *grants: str) -> Iterator[Engine]:
    """PostgreSQL: an engine logged in as a new role given `grants` (each a GRANT statement with `{role}` for
    its name), dropped with everything it owns afterwards."""
    role = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        for grant in grants:
            conn.execute(text(grant.format(role=role)))
    engine = make_engine(admin.url.set(username=role).render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
