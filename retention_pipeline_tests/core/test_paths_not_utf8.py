"""Paths whose bytes are not UTF-8, as a writer that is not Python may store them in SQLite: the file step
reads, checks, deletes and re-queues them like any other path, and never fails on them."""

import os

import pytest
from sqlalchemy import select, update

from retention_pipeline.core import files as files_module
from retention_pipeline.core.db import text_bytes
from retention_pipeline.core.queries.queue import text_from_bytes
from retention_pipeline.core.schema import detections, retention_file_queue
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import THUMBS, CameraWorld, comparable

pytestmark = both_shapes

ODD = f"{THUMBS}/odd".encode() + b"\xff.jpg"


def odd_file(world: CameraWorld, size: int) -> str:
    """Write a file named by ODD's bytes; returns the path as the pipeline reads it back from SQLite."""
    if world.engine.dialect.name != "sqlite":
        pytest.skip(
            "PostgreSQL refuses text that is not UTF-8 when it is written: no row can hold such a path"
        )
    with open(os.path.join(os.fsencode(world.media), ODD), "wb") as handle:
        handle.write(b"x" * size)
    return os.fsdecode(ODD)


def name_the_odd_file(world: CameraWorld, detection_id: int) -> None:
    """Store ODD's bytes, as they are, in the detection's thumbnail_path (as a C writer would)."""
    statement = update(detections).where(detections.c.id == detection_id)
    with world.engine.begin() as conn:
        conn.execute(statement.values(thumbnail_path=text_from_bytes("raw")), {"raw": ODD})


def test_an_expired_path_that_is_not_utf8_is_deleted_and_the_dry_run_predicts_it(world: CameraWorld):
    odd = odd_file(world, 70)
    name_the_odd_file(world, world.detection(world.old(), thumbnail=False))
    world.detection(world.old(), thumbnail=world.file(f"{THUMBS}/plain.jpg", 50))

    preview = world.run(dry_run=True)
    assert world.exists(odd)
    real = world.run()

    assert comparable(preview) == comparable(real)
    assert not world.exists(odd) and not world.exists(f"{THUMBS}/plain.jpg")
    assert real.thumbnails_deleted == 2 and real.space_reclaimed == 120
    assert real.files_failed == 0 and world.count(retention_file_queue) == 0
    assert world.run().thumbnails_deleted == 0  # and the next run has nothing left to fail on


def test_a_path_that_is_not_utf8_survives_while_a_retained_row_names_it(world: CameraWorld):
    odd = odd_file(world, 70)
    name_the_odd_file(world, world.detection(world.old(), thumbnail=False))
    name_the_odd_file(world, world.detection(world.recent(), thumbnail=False))

    preview = world.run(dry_run=True)
    real = world.run()

    assert comparable(preview) == comparable(real)
    assert world.exists(odd)
    assert real.files_kept_shared == 1 and real.thumbnails_deleted == 0 and real.detections_deleted == 1


def test_a_path_that_is_not_utf8_whose_unlink_is_refused_stays_queued_for_the_next_run(
    world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    odd = odd_file(world, 70)
    name_the_odd_file(world, world.detection(world.old(), thumbnail=False))
    real_unlink = os.unlink

    def refusing_unlink(path, *args, **kwargs):
        if os.fsencode(path).endswith(b"\xff.jpg"):
            raise PermissionError(13, "Permission denied", path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(files_module.os, "unlink", refusing_unlink)
    refused = world.run()

    assert refused.files_failed == 1 and world.exists(odd)
    with world.engine.connect() as conn:
        queued = conn.execute(select(retention_file_queue.c.path)).scalars().all()
    assert [text_bytes(path) for path in queued] == [ODD]

    monkeypatch.setattr(files_module.os, "unlink", real_unlink)
    again = world.run()

    assert again.thumbnails_deleted == 1 and again.space_reclaimed == 70 and not world.exists(odd)
    assert world.count(retention_file_queue) == 0
