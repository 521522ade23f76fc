"""Which rows a cleanup deletes, on SQLite and PostgreSQL."""

from datetime import timedelta

from retention_pipeline.core import purge
from retention_pipeline.core.schema import alerts, detections, event_detections, events, gpu_stats, logs
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import CameraWorld

pytestmark = both_shapes


def test_rows_exactly_at_the_cutoff_are_kept_and_one_millisecond_older_expire(world: CameraWorld):
    at_cutoff = world.event(world.cutoff)
    just_older = world.event(world.cutoff - timedelta(milliseconds=1))
    det_at = world.detection(world.cutoff)
    det_older = world.detection(world.cutoff - timedelta(milliseconds=1))
    gpu_at, gpu_older = world.gpu(world.cutoff), world.gpu(world.cutoff - timedelta(milliseconds=1))
    log_at, log_older = world.log(world.log_cutoff), world.log(world.log_cutoff - timedelta(milliseconds=1))

    stats = world.run()

    assert world.ids(events) == {at_cutoff}
    assert world.ids(detections) == {det_at}
    assert world.ids(gpu_stats) == {gpu_at}
    assert world.ids(logs) == {log_at}
    assert (stats.events_deleted, stats.detections_deleted) == (1, 1)
    assert (stats.gpu_stats_deleted, stats.logs_deleted) == (1, 1)
    assert {just_older, det_older, gpu_older, log_older}.isdisjoint(world.ids(events) | world.ids(logs))


def test_logs_use_their_own_shorter_cutoff(world: CameraWorld):
    world.log(world.now - timedelta(days=8))
    kept = world.log(world.now - timedelta(days=6))
    world.gpu(world.now - timedelta(days=8))  # GPU stats keep the 30-day retention

    stats = world.run()

    assert world.ids(logs) == {kept}
    assert world.count(gpu_stats) == 1
    assert (stats.logs_deleted, stats.gpu_stats_deleted) == (1, 0)


def test_tiny_batches_delete_everything_expired_and_count_it_exactly(world: CameraWorld):
    for day in range(7):
        event = world.event(world.old(day + 1), alerts_count=1)
        world.detection(world.old(day + 1), events_=(event,))
        world.gpu(world.old(day + 1))
        world.log(world.log_cutoff - timedelta(days=day + 1))
    kept_event = world.event(world.recent())

    stats = world.run(batch_size=1)

    assert world.ids(events) == {kept_event}
    assert world.count(detections) == 0
    assert world.count(alerts) == 0
    assert world.count(gpu_stats) == 0
    assert world.count(logs) == 0
    assert (stats.events_deleted, stats.alerts_deleted, stats.detections_deleted) == (7, 7, 7)
    assert (stats.gpu_stats_deleted, stats.logs_deleted) == (7, 7)


def test_expired_event_takes_its_alerts_and_links(world: CameraWorld):
    old_event = world.event(world.old(), alerts_count=2)
    new_event = world.event(world.recent(), alerts_count=1)
    world.detection(world.old(), events_=(old_event,))

    stats = world.run()

    assert world.ids(events) == {new_event}
    assert world.count(alerts) == 1
    assert world.count(event_detections) == 0
    assert stats.alerts_deleted == 2


def test_young_detection_of_an_expired_event_goes_with_it(world: CameraWorld):
    old_event = world.event(world.old())
    young = world.detection(world.recent(), events_=(old_event,))
    unrelated = world.detection(world.recent())

    stats = world.run()

    assert world.ids(detections) == {unrelated}
    assert young not in world.ids(detections)
    assert stats.detections_deleted == 1


def test_expired_rows_anywhere_among_retained_ones_are_found_by_the_batches(world: CameraWorld):
    # The batches walk only the ids between the first and last candidate: a detection that expires
    # through its event alone, with the highest id, must still be inside that walk.
    old_event = world.event(world.old())
    world.event(world.recent())
    first = world.detection(world.old())
    kept = {world.detection(world.recent())}
    middle = world.detection(world.old(2))
    kept.add(world.detection(world.recent()))
    last = world.detection(world.recent(), events_=(old_event,))
    kept.add(world.detection(world.recent()))

    stats = world.run(batch_size=1)

    assert world.ids(detections) == kept
    assert {first, middle, last}.isdisjoint(world.ids(detections))
    assert (stats.detections_deleted, stats.events_deleted) == (3, 1)


def test_a_retained_event_never_loses_its_detections(world: CameraWorld):
    retained = world.event(world.recent())
    expired = world.event(world.old())
    old_linked_to_retained = world.detection(world.old(5), events_=(retained,))
    linked_to_both = world.detection(world.old(), events_=(retained, expired))

    stats = world.run()

    assert world.ids(detections) == {old_linked_to_retained, linked_to_both}
    assert world.ids(events) == {retained}
    assert world.count(event_detections) == 2
    assert stats.detections_deleted == 0


def test_empty_database_is_a_no_op(world: CameraWorld):
    stats = world.run()

    assert stats.events_deleted == stats.detections_deleted == stats.logs_deleted == 0
    assert stats.space_reclaimed == 0


def test_second_run_changes_nothing(world: CameraWorld):
    event = world.event(world.old(), alerts_count=1)
    world.detection(world.old(), events_=(event,))
    world.event(world.recent())
    world.detection(world.recent())
    world.gpu(world.old())
    world.run(delete_images=True)
    before = (world.ids(events), world.ids(detections), sorted(p.name for p in world.media.rglob("*")))

    again = world.run(delete_images=True)

    after = (world.ids(events), world.ids(detections), sorted(p.name for p in world.media.rglob("*")))
    assert after == before
    assert again.events_deleted == again.detections_deleted == again.gpu_stats_deleted == 0
    assert again.thumbnails_deleted == again.images_deleted == again.clips_deleted == 0
    assert again.space_reclaimed == 0


def test_progress_names_every_batch_or_one_per_interval_and_always_the_total(world: CameraWorld):
    for _ in range(3):
        world.gpu(world.old())
    sparse: list[str] = []
    purge.purge_table(world.engine, "gpu_stats", world.cutoff, 1, sparse.append, 3600)
    for _ in range(3):
        world.gpu(world.old())
    every: list[str] = []
    purge.purge_table(world.engine, "gpu_stats", world.cutoff, 1, every.append, 0)

    assert sparse == ["gpu_stats: batch 1 deleted 1 (total 1)", "gpu_stats: done, 3 deleted in 3 batches"]
    assert every == [f"gpu_stats: batch {n} deleted 1 (total {n})" for n in (1, 2, 3)] + [
        "gpu_stats: done, 3 deleted in 3 batches"
    ]


def test_batches_shrink_to_the_transaction_target_and_still_delete_exactly_the_expired_rows(
    world: CameraWorld,
):
    expired = [world.gpu(world.old()) for _ in range(12)]
    kept = world.gpu(world.recent())

    # No batch can finish within a nanosecond: after the first (of batch_size rows, as that is below
    # BatchSizer.FIRST) every one is cut to a single row.
    counts = purge.purge_table(world.engine, "gpu_stats", world.cutoff, 5, target_s=1e-9)

    assert world.ids(gpu_stats) == {kept}
    assert (counts.deleted, counts.batches) == (len(expired), 1 + 7)


def test_a_run_under_a_tight_transaction_target_deletes_and_counts_what_a_fixed_batch_run_does(
    world: CameraWorld,
):
    for day in range(6):
        event = world.event(world.old(day + 1), alerts_count=1)
        world.detection(world.old(day + 1), events_=(event,))
        world.gpu(world.old(day + 1))
    kept_event = world.event(world.recent())
    kept_detection = world.detection(world.recent(), events_=(kept_event,))

    stats = world.run(batch_size=4, transaction_target_ms=0.000001)

    assert world.ids(events) == {kept_event}
    assert world.ids(detections) == {kept_detection}
    assert (world.count(alerts), world.count(gpu_stats)) == (0, 0)
    assert (stats.events_deleted, stats.alerts_deleted, stats.detections_deleted) == (6, 6, 6)
    assert stats.gpu_stats_deleted == 6
