"""The `status` table as a terminal shows it (no database: the status dictionary is given)."""

from retention_pipeline.core.status_text import render

HEADER = {
    "retention_days": 30,
    "log_retention_days": 7,
    "delete_images": False,
    "cleanup_time": "03:00",
    "timezone": "UTC",
    "next_cleanup": None,
    "running": False,
}


def _run(run_id: str, events: int) -> dict[str, object]:
    headline = {"dry_run": "false", "events_deleted": str(events)}
    return {"run_id": run_id, "headline": headline, "dry_run": False, "events_deleted": events}


def test_two_runs_whose_ids_share_their_first_8_characters_keep_a_column_each_named_apart():
    runs = [_run("abcdef12-0000-newest", 111), _run("abcdef12-1111-older", 222)]

    lines = render({**HEADER, "runs": runs}).splitlines()

    header = lines[1].split()
    events = next(line.split() for line in lines if line.startswith("events_deleted"))
    assert header == ["abcdef12-0", "abcdef12-1"]  # as long as tells them apart
    assert events[1:] == ["111", "222"]  # newest first, each its own figures


def test_run_ids_are_shown_by_their_first_8_characters_where_those_tell_them_apart():
    runs = [_run("12345678-aaaa", 1), _run("abcdef12-aaaa", 2)]

    header = render({**HEADER, "runs": runs}).splitlines()[1].split()

    assert header == ["12345678", "abcdef12"]
