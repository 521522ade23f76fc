"""Camera worlds built in bulk (weeks of recording in one transaction), and sentinels that must not change."""

import itertools
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from retention_pipeline.core.schema import alerts, detections, event_detections, events, gpu_stats, logs
from retention_pipeline_tests.factories import CLIPS, IMAGES, THUMBS, CameraWorld


@dataclass(frozen=True)
class Recording:
    """How much one call of `Recorder.record` writes; `expired_share` of the rows are past the cutoff."""

    detections: int = 100
    events: int = 20
    gpu_stats: int = 30
    logs: int = 30
    expired_share: float = 0.6
    write_images: bool = True  # False: image paths are stored but not written (runs without DELETE_IMAGES)


class Recorder:
    """Writes many rows and their files at once, with the awkward cases a real camera database has.

    Detections linked to events (so a young one can expire with its old event, and an old one is kept
    by a recent event), images shared between detections, rows whose file is already missing, rows
    without a thumbnail or clip. Every timestamp is at least 2.4 hours from a cutoff, so a CLI run
    whose cutoff is measured from its own launch time, seconds after the world's `now`, agrees with
    the world on what has expired.
    """

    def __init__(self, world: CameraWorld, seed: int) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self._names = itertools.count(1)
        self._rounds = itertools.count(1)
        self._round = 0

    def _when(self, expired: bool) -> datetime:
        days = self.rng.uniform(0.1, 20)
        return self.world.old(days) if expired else self.world.recent(days)

    def _log_time(self, expired: bool) -> datetime:
        days = timedelta(days=self.rng.uniform(0.1, 5))
        return self.world.log_cutoff - days if expired else self.world.log_cutoff + days

    def _media(self, folder: str, suffix: str, size: int, write: bool = True) -> str:
        """A stored path; about 3 % of them are never written (the file is already missing)."""
        relative = f"{folder}/r{self._round}/m{next(self._names)}{suffix}"
        if self.rng.random() < 0.97 and write:
            self.world.file(relative, size)
        return relative

    def record(self, amount: Recording = Recording()) -> None:
        """Insert `amount` rows of every kind, with their files, in one transaction."""
        self._round = next(self._rounds)
        rng, share = self.rng, amount.expired_share
        event_rows = [
            {
                "batch_id": f"r{self._round}",
                "camera_id": "cam1",
                "started_at": self._when(rng.random() < share),
                "clip_path": self._media(CLIPS, ".mp4", rng.randint(100, 400))
                if rng.random() < 0.9
                else None,
            }
            for _ in range(amount.events)
        ]
        detection_rows: list[dict[str, Any]] = []
        for _ in range(amount.detections):
            shared = detection_rows and rng.random() < 0.05
            image = (
                rng.choice(detection_rows)["file_path"]
                if shared
                else self._media(IMAGES, ".jpg", 200, amount.write_images)
            )
            thumbnail = self._media(THUMBS, ".jpg", rng.randint(10, 60)) if rng.random() < 0.95 else None
            detection_rows.append(
                {
                    "camera_id": "cam1",
                    "file_path": image,
                    "thumbnail_path": thumbnail,
                    "detected_at": self._when(rng.random() < share),
                    "object_type": "person",
                    "confidence": 0.9,
                    "media_type": "image",
                }
            )
        with self.world.engine.begin() as conn:
            event_ids = _insert_returning_ids(conn, events, event_rows)
            detection_ids = _insert_returning_ids(conn, detections, detection_rows)
            alert_rows = [
                {"event_id": event_id, "created_at": self.world.now, "message": "alert"}
                for event_id in event_ids
                for _ in range(rng.choice((0, 0, 1, 2)))
            ]
            link_rows = [
                {
                    "event_id": rng.choice(event_ids),
                    "detection_id": detection_id,
                    "created_at": self.world.now,
                }
                for detection_id in detection_ids
                if event_ids and rng.random() < 0.3
            ]
            if self.world.camera_shape:  # uuid alert keys, and children behind the camera's foreign keys
                for alert in alert_rows:
                    alert["id"] = str(uuid.UUID(int=rng.getrandbits(128)))
                self._camera_children(conn, detection_ids)
            for table, rows in ((alerts, alert_rows), (event_detections, link_rows)):
                if rows:
                    conn.execute(insert(table), rows)
            conn.execute(
                insert(gpu_stats),
                [
                    {
                        "recorded_at": self._when(rng.random() < share),
                        "gpu_utilization": 50.0,
                        "memory_used": 1,
                        "temperature": 60.0,
                    }
                    for _ in range(amount.gpu_stats)
                ],
            )
            conn.execute(
                insert(logs),
                [
                    {
                        "timestamp": self._log_time(rng.random() < share),
                        "level": "INFO",
                        "component": "camera",
                        "message": "m",
                    }
                    for _ in range(amount.logs)
                ],
            )

    def _camera_children(self, conn: Any, detection_ids: list[int]) -> None:
        """Rows in the camera system's detection children: CASCADE (one unindexed), SET NULL (unindexed)."""
        rng = self.rng
        for child, share in (("threat_detections", 0.2), ("pose_results", 0.3)):
            rows = [{"d": d} for d in detection_ids if rng.random() < share]
            if rows:
                conn.execute(text(f"INSERT INTO {child} (detection_id) VALUES (:d)"), rows)
        anomalies = [{"k": f"z{self._round}-{d}", "d": d} for d in detection_ids if rng.random() < 0.1]
        if anomalies:
            conn.execute(text("INSERT INTO zone_anomalies (id, detection_id) VALUES (:k, :d)"), anomalies)


def analyze(world: CameraWorld) -> None:
    """Give PostgreSQL's planner statistics, as autovacuum has for a database that has been running.

    Straight after a bulk load it has none, and the detection batches are then ~15x slower (measured:
    6.6 s against 0.4 s for 3 600 expired detections in batches of 100).
    """
    if world.engine.dialect.name == "postgresql":
        with world.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()


def _insert_returning_ids(conn: Any, table: Any, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return [int(i) for i in conn.execute(statement, rows).scalars()]


# Stored paths that lead outside the storage roots, each by a different road.
def hostile_paths(world: CameraWorld, outside: Path) -> list[str]:
    return [
        f"{THUMBS}/../../../outside/secret.txt",  # climbs out of MEDIA_ROOT
        str(outside / "secret.txt"),  # absolute, elsewhere
        f"{THUMBS}/escape.jpg",  # a symlink inside a root that points out
        f"{CLIPS}/outdir/victim.jpg",  # through a symlinked directory inside a root
        "data/unrelated.jpg",  # under MEDIA_ROOT but in no storage root
        "data/thumbnails-evil/x.jpg",  # a sibling whose name merely starts like a root
        f"{THUMBS}/../thumbnails-evil/x.jpg",
        str(world.media / THUMBS),  # a root itself
    ]


def plant_sentinels(world: CameraWorld, base: Path) -> Path:
    """Files outside the storage roots, symlinks pointing at them, and expired rows that reference them.

    Returns the directory outside the media root that holds the sentinels.
    """
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("keep me")
    (outside / "victim.jpg").write_text("keep me")
    world.file("data/unrelated.jpg")
    world.file("data/thumbnails-evil/x.jpg")
    (world.media / THUMBS / "escape.jpg").symlink_to(outside / "secret.txt")
    (world.media / CLIPS / "outdir").symlink_to(outside, target_is_directory=True)
    for stored in hostile_paths(world, outside):
        event_id = world.event(world.old(3), clip=stored)
        world.detection(world.old(3), image=stored, thumbnail=stored, events_=(event_id,))
    return outside
