"""Statistics as a person reads them: binary units, and a dry run's names."""

import pytest

from retention_pipeline.core.labels import human_bytes, labelled, readable, unlabelled
from retention_pipeline.core.stats import CleanupStats


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (321_536, "314 KiB"),
        (1_572_864, "1.5 MiB"),
        (1_048_575, "1.0 MiB"),
        (5 * 1024**3, "5.0 GiB"),
    ],
)
def test_sizes_read_in_binary_units(count: int, shown: str):
    assert human_bytes(count) == shown


def test_a_dry_runs_names_say_what_would_go_and_map_back_to_the_fields():
    names = CleanupStats.field_names()
    values = dict.fromkeys(names, 1)

    dry = labelled(values, dry_run=True)

    assert "thumbnails_to_delete" in dry and "space_to_reclaim" in dry and "rows_to_delete_by_table" in dry
    assert not any(name.endswith("_deleted") or name == "space_reclaimed" for name in dry)
    assert list(unlabelled(dry)) == names
    assert labelled(values, dry_run=False) == values


def test_a_table_shows_bytes_twice_and_one_line_per_table():
    shown = readable({"space_reclaimed": 2048, "rows_deleted_by_table": {"events": 3}}, dry_run=False)

    assert shown == {"space_reclaimed": "2048 (2.0 KiB)", "rows_deleted_by_table.events": 3}
