"""The camera system's writers, as separate processes: one records detections (file first, then the row and
its link to an event), one updates recent rows. Each measures how long its transactions take.

They use plain SQLAlchemy engines with the drivers' defaults, as another program would, not the pipeline's.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, update
from sqlalchemy.engine import Engine

from retention_pipeline.core.schema import detections, event_detections, events

PACE_S = 0.02  # between two transactions of one writer: ~40 writes a second, a busy camera system
# Each writer goes on past `stop` until it has this many transactions: a cleanup that ends fast beside slow
# writers (a loaded machine) would otherwise leave too few to judge them by.
MIN_TRANSACTIONS = 20


@dataclass
class WriterReport:
    """What one writer did: its transactions' durations, the rows it wrote, and any error it met."""

    transactions: int = 0
    longest_wait_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    recent: list[tuple[int, str, int]] = field(default_factory=list)  # (detection, thumbnail, event)
    late: list[tuple[int, str]] = field(default_factory=list)  # expired on arrival: (detection, thumbnail)

    def timed(self, engine: Engine, work: Any) -> Any:
        started = time.perf_counter()
        try:
            with engine.begin() as conn:
                result = work(conn)
        except Exception as exc:  # a writer that fails is what the test is looking for
            self.errors.append(repr(exc))
            return None
        self.transactions += 1
        self.longest_wait_s = max(self.longest_wait_s, time.perf_counter() - started)
        return result

    def save(self, path: str) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> WriterReport:
        report = cls(**json.loads(path.read_text()))
        report.recent = [tuple(r) for r in report.recent]  # type: ignore[misc]
        report.late = [tuple(r) for r in report.late]  # type: ignore[misc]
        return report


def record_detections(
    url: str, media_root: str, now_iso: str, event_ids: list[int], stop: Any, out: str, late_every: int = 7
) -> None:
    """Insert detections with thumbnails linked to recent events until `stop` is set (and at least
    MIN_TRANSACTIONS are done); every
    `late_every`-th one arrives late, with a timestamp already past the cutoff and no link."""
    engine = create_engine(url)
    now = datetime.fromisoformat(now_iso)
    rng = random.Random(7)
    report = WriterReport()
    n = 0
    while not stop.is_set() or report.transactions < MIN_TRANSACTIONS:
        n += 1
        late = n % late_every == 0
        thumbnail = f"data/thumbnails/live/w{n}.jpg"
        file = Path(media_root) / thumbnail
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"live")
        event_id = rng.choice(event_ids)

        def write(
            conn: Any, n: int = n, late: bool = late, thumbnail: str = thumbnail, event_id: int = event_id
        ) -> int:
            detection_id = conn.execute(
                insert(detections)
                .values(
                    camera_id="cam1",
                    file_path=f"data/images/live/w{n}.jpg",
                    thumbnail_path=thumbnail,
                    detected_at=now - timedelta(days=40) if late else now - timedelta(seconds=n),
                    object_type="person",
                    confidence=0.8,
                    media_type="image",
                )
                .returning(detections.c.id)
            ).scalar_one()
            if not late:
                conn.execute(
                    insert(event_detections).values(
                        event_id=event_id, detection_id=detection_id, created_at=now
                    )
                )
            return int(detection_id)

        detection_id = report.timed(engine, write)
        if detection_id is not None:
            if late:
                report.late.append((detection_id, thumbnail))
            else:
                report.recent.append((detection_id, thumbnail, event_id))
        time.sleep(PACE_S)
    report.save(out)
    engine.dispose()


def update_recent_rows(url: str, event_ids: list[int], detection_ids: list[int], stop: Any, out: str) -> None:
    """Mark recent events reviewed and re-score recent detections until `stop` is set (and at least
    MIN_TRANSACTIONS are done)."""
    engine = create_engine(url)
    rng = random.Random(11)
    report = WriterReport()
    while not stop.is_set() or report.transactions < MIN_TRANSACTIONS:
        event_id, detection_id = rng.choice(event_ids), rng.choice(detection_ids)

        def write(conn: Any, event_id: int = event_id, detection_id: int = detection_id) -> None:
            conn.execute(update(events).where(events.c.id == event_id).values(reviewed=True, risk_score=5))
            conn.execute(update(detections).where(detections.c.id == detection_id).values(confidence=0.5))

        report.timed(engine, write)
        time.sleep(PACE_S)
    report.save(out)
    engine.dispose()
