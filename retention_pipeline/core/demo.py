"""A small, realistic camera database and media tree for trying the pipeline out."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from .db import make_engine
from .schema import (
    alerts,
    camera_metadata,
    cameras,
    detections,
    ensure_bookkeeping,
    event_detections,
    events,
    gpu_stats,
    logs,
)

DEMO_DAYS = 45
CAMERAS = (("front_door", "Front door"), ("driveway", "Driveway"), ("backyard", "Backyard"))


@dataclass(frozen=True)
class DemoSummary:
    """What the demo created."""

    database_url: str
    events: int
    detections: int
    files: int


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8demo" + bytes(size))


def build_demo(base: Path, now: datetime | None = None) -> DemoSummary:
    """Replace data/retention.db and data/{thumbnails,images,clips} under `base` with fresh demo data.

    Every day of the last DEMO_DAYS days gets one event per camera with a clip, an image shared by
    two detections (one image, two objects) each with its own thumbnail, plus GPU stats and logs.
    Running it again gives the same tree, relative to the current time.
    """
    now = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    data = base / "data"
    db_file = data / "retention.db"
    for leftover in (db_file, data / "retention.db-wal", data / "retention.db-shm"):
        leftover.unlink(missing_ok=True)
    for media in ("thumbnails", "images", "clips"):
        shutil.rmtree(data / media, ignore_errors=True)
    url = f"sqlite:///{db_file}"
    engine = make_engine(url)
    camera_metadata.create_all(engine)
    ensure_bookkeeping(engine)

    event_rows: list[dict[str, object]] = []
    detection_rows: list[dict[str, object]] = []
    link_rows: list[dict[str, object]] = []
    alert_rows: list[dict[str, object]] = []
    files = 0
    for day in range(DEMO_DAYS):
        for number, (camera, _name) in enumerate(CAMERAS):
            started = now - timedelta(days=day, hours=number + 1)
            event_id = len(event_rows) + 1
            clip = f"data/clips/{camera}/{started:%Y%m%d_%H%M}.mp4"
            image = f"data/images/{camera}/{started:%Y%m%d_%H%M%S}.jpg"
            _write(base / clip, 4096)
            _write(base / image, 2048)
            files += 2
            event_rows.append(
                {
                    "id": event_id,
                    "batch_id": f"batch-{event_id}",
                    "camera_id": camera,
                    "started_at": started,
                    "ended_at": started + timedelta(minutes=2),
                    "risk_score": (day * 7 + number * 13) % 100,
                    "reviewed": day % 2 == 0,
                    "summary": f"Motion at {camera}",
                    "clip_path": clip,
                }
            )
            for obj_number, obj in enumerate(("person", "car")):
                detection_id = len(detection_rows) + 1
                thumb = f"data/thumbnails/{camera}/{detection_id}.jpg"
                _write(base / thumb, 512)
                files += 1
                detection_rows.append(
                    {
                        "id": detection_id,
                        "camera_id": camera,
                        "file_path": image,
                        "thumbnail_path": thumb,
                        "detected_at": started + timedelta(seconds=obj_number),
                        "object_type": obj,
                        "confidence": 0.9,
                        "media_type": "image",
                    }
                )
                link_rows.append({"event_id": event_id, "detection_id": detection_id, "created_at": started})
            if event_rows[-1]["risk_score"] >= 70:  # type: ignore[operator]
                alert_rows.append({"event_id": event_id, "created_at": started, "message": "High risk"})

    _add_edge_cases(base, now, event_rows, detection_rows, link_rows)

    with engine.begin() as conn:
        conn.execute(insert(cameras), [{"id": c, "name": n} for c, n in CAMERAS])
        conn.execute(insert(events), event_rows)
        conn.execute(insert(detections), detection_rows)
        conn.execute(insert(event_detections), link_rows)
        if alert_rows:
            conn.execute(insert(alerts), alert_rows)
        conn.execute(
            insert(gpu_stats),
            [
                {
                    "recorded_at": now - timedelta(hours=h),
                    "gpu_utilization": 40.0 + h % 50,
                    "memory_used": 2048 + h % 512,
                    "temperature": 55.0 + h % 20,
                }
                for h in range(0, DEMO_DAYS * 24, 2)
            ],
        )
        conn.execute(
            insert(logs),
            [
                {
                    "timestamp": now - timedelta(hours=h),
                    "level": "INFO" if h % 5 else "WARNING",
                    "component": "detector",
                    "message": f"processed frame batch {h}",
                }
                for h in range(0, 14 * 24, 3)
            ],
        )
    engine.dispose()
    files += _plant_orphans(base, now)
    return DemoSummary(
        database_url=url,
        events=len(event_rows),
        detections=len(detection_rows),
        files=files,
    )


def _add_edge_cases(
    base: Path,
    now: datetime,
    event_rows: list[dict[str, object]],
    detection_rows: list[dict[str, object]],
    link_rows: list[dict[str, object]],
) -> None:
    """Rows that show the safety rules: a shared image, a retained event's old detection, a bad path."""
    old_image = detection_rows[-1]["file_path"]  # the oldest event's image, otherwise expired
    recent_event = event_rows[0]["id"]
    extras = [
        # A recent detection reuses an expired detection's image: the image must stay.
        {"file_path": old_image, "detected_at": now - timedelta(hours=5), "thumbnail_path": None},
        # An old detection linked to a recent event: a retained event never loses its detections.
        {"file_path": old_image, "detected_at": now - timedelta(days=DEMO_DAYS), "thumbnail_path": None},
        # A stored path that escapes the storage roots: refused and counted, never deleted.
        {"file_path": "../../etc/hostname", "detected_at": now - timedelta(days=40), "thumbnail_path": None},
    ]
    for extra in extras:
        detection_id = len(detection_rows) + 1
        detection_rows.append(
            {
                "id": detection_id,
                "camera_id": CAMERAS[0][0],
                "object_type": "person",
                "confidence": 0.8,
                "media_type": "image",
                **extra,
            }
        )
    link_rows.append({"event_id": recent_event, "detection_id": len(detection_rows) - 1, "created_at": now})


def _plant_orphans(base: Path, now: datetime) -> int:
    """Files no row references, for the orphan sweep: three old enough to go, one too young."""
    ages = {"lost1.jpg": 72, "lost2.jpg": 96, "renamed_cam/lost3.jpg": 200, "just_written.jpg": 0}
    for name, hours in ages.items():
        path = base / "data" / "thumbnails" / "orphans" / name
        _write(path, 700)
        stamp = (now - timedelta(hours=hours)).timestamp()
        os.utime(path, (stamp, stamp))
    return len(ages)


def demo_environment(base: Path) -> dict[str, str]:
    """The environment that points the pipeline at the demo under `base`."""
    return {
        "DATABASE_URL": f"sqlite:///{base / 'data' / 'retention.db'}",
        "MEDIA_ROOT": os.fspath(base),
        "THUMBNAIL_DIR": "data/thumbnails",
        "CLIPS_DIR": "data/clips",
        "IMAGES_DIR": "data/images",
        "DELETE_IMAGES": "true",
    }
