"""How the purge sizes its batches against the transaction target (no database needed)."""

from retention_pipeline.core.purge import BatchSizer


def test_the_first_batch_is_small_and_quick_ones_grow_by_half_up_to_the_batch_size():
    sizer = BatchSizer(1000, target_s=0.05)

    sizes = [sizer.size]
    for _ in range(7):
        sizer.record(0.001)
        sizes.append(sizer.size)

    assert sizes == [100, 150, 225, 337, 505, 757, 1000, 1000]


def test_a_batch_over_the_target_shrinks_the_next_in_proportion():
    sizer = BatchSizer(1000, target_s=0.05)
    sizer.size = 800

    sizer.record(0.1)

    assert sizer.size == 400


def test_without_a_target_every_batch_takes_the_batch_size():
    sizer = BatchSizer(1000, target_s=None)

    first = sizer.size
    sizer.record(30.0)

    assert (first, sizer.size) == (1000, 1000)


def test_a_batch_far_over_the_target_leaves_at_least_one_row():
    sizer = BatchSizer(10, target_s=0.001)

    sizer.record(60.0)

    assert sizer.size == 1


def test_a_one_row_batch_that_was_quick_grows_again():
    sizer = BatchSizer(1000, target_s=0.05)
    sizer.size = 1

    sizer.record(0.001)
    sizer.record(0.001)

    assert sizer.size == 3


def test_a_batch_cut_off_at_its_cap_halves_the_next_and_the_cap_follows_the_target():
    sizer = BatchSizer(1000, target_s=0.05)
    sizer.size = 801

    sizer.overran()

    assert (sizer.size, sizer.time_cap_ms) == (400, 80.0)
    assert BatchSizer(1000, target_s=1e-9).time_cap_ms == BatchSizer.MIN_CAP_MS
    assert BatchSizer(1000, target_s=None).time_cap_ms is None
