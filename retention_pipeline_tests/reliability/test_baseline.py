"""The invariants hold for an undisturbed run: the baseline every fault scenario is compared with."""

from pathlib import Path

from sqlalchemy import delete

from retention_pipeline.core.schema import detections
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import THUMBS, CameraWorld, comparable

from .invariants import Policy, check_complete, check_safe, check_stats, take_snapshot, verify_finished_run
from .worlds import Recorder, Recording, plant_sentinels

pytestmark = both_shapes


def test_an_undisturbed_run_keeps_every_promise_and_its_dry_run_predicts_it(
    world: CameraWorld, tmp_path: Path
):
    outside = plant_sentinels(world, tmp_path)
    Recorder(world, seed=1).record(Recording(detections=200, events=40, gpu_stats=30, logs=30))
    policy = Policy.of(world, delete_images=True)
    before = take_snapshot(world.engine, [world.media, outside])

    preview = world.run(dry_run=True, delete_images=True, batch_size=7)
    assert take_snapshot(world.engine, [world.media, outside]) == before
    stats = world.run(delete_images=True, batch_size=7)
    after = take_snapshot(world.engine, [world.media, outside])

    verify_finished_run(policy, before, after, stats.as_dict())
    assert comparable(preview) == comparable(stats)
    assert stats.files_refused > 0 and stats.files_missing > 0 and stats.files_kept_shared > 0
    assert (outside / "secret.txt").read_text() == "keep me"


def test_the_invariant_checks_notice_every_kind_of_broken_promise(world: CameraWorld, tmp_path: Path):
    outside = plant_sentinels(world, tmp_path)
    kept_row = world.detection(world.recent())
    world.detection(world.recent(), thumbnail=world.file(f"{THUMBS}/kept.jpg"))
    forgotten = world.detection(world.old(), thumbnail=world.file(f"{THUMBS}/forgotten.jpg"))
    policy = Policy.of(world)
    before = take_snapshot(world.engine, [world.media, outside])

    # A careless cleanup: drops a retained row, a file a retained row uses, an outside file's content,
    # deletes an expired row but forgets its thumbnail, and misreports what it did.
    with world.engine.begin() as conn:
        conn.execute(delete(detections).where(detections.c.id.in_([kept_row, forgotten])))
    (world.media / THUMBS / "kept.jpg").unlink()
    (outside / "secret.txt").write_text("changed")
    after = take_snapshot(world.engine, [world.media, outside])
    stats = {**world.run(dry_run=True).as_dict(), "detections_deleted": 0}
    problems = check_safe(policy, before, after) + check_complete(policy, before, after)
    problems += check_stats(policy, before, after, stats)

    assert {problem[:3] for problem in problems} == {"(a)", "(b)", "(c)", "(d)", "(e)"}, problems
    assert any("forgotten.jpg" in problem for problem in problems)
