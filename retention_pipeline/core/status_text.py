"""`retention-pipeline status` as text for a terminal (`--json` prints the status itself instead)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .labels import labelled, readable, real_name


def render(status: dict[str, Any]) -> str:
    """The policy and schedule on one line, then the runs as a table: one column per run, newest first."""
    header = (
        f"retention: {status['retention_days']} days (logs {status['log_retention_days']}),"
        f" images {'deleted' if status['delete_images'] else 'kept'};"
        f" daily at {status['cleanup_time']} {status['timezone']};"
        f" next run: {status['next_cleanup'] or 'schedule stopped'};"
        f" {'a cleanup is running now' if status['running'] else 'nothing running'}"
    )
    if not status["runs"]:
        return f"{header}\nno data_cleanup runs yet"
    # Imported here: pandas costs every other command about 0.45 s of start-up.
    import pandas as pd

    # Keyed by the whole run id: two runs whose ids share their first 8 characters are two columns.
    columns = {row["run_id"]: _column(row) for row in status["runs"]}
    names = _beside_each_other(name for column in columns.values() for name in column)
    # A row another kind of run fills stays empty here, not NaN (which would also show 45 as 45.0).
    filled = {run: {name: column.get(name, "") for name in names} for run, column in columns.items()}
    frame = pd.DataFrame(filled, dtype=object).reindex(names)
    frame.columns = _short_ids(list(frame.columns))
    return f"{header}\n{frame.to_string()}"


def _short_ids(run_ids: list[str]) -> list[str]:
    """The runs' ids as short as tells them apart: their first 8 characters, more where two share those."""
    for width in range(8, max(map(len, run_ids), default=8)):
        if len({run_id[:width] for run_id in run_ids}) == len(run_ids):
            return [run_id[:width] for run_id in run_ids]
    return run_ids


def _column(row: dict[str, Any]) -> dict[str, Any]:
    """One run: the Runs page's figures first (its tags), then the statistics as `readable` shows them,
    both a dry run's counts named for what a real run would delete."""
    rest = {name: value for name, value in row.items() if name not in ("run_id", "headline")}
    dry_run = bool(rest.get("dry_run"))
    headline = labelled(row.get("headline") or {}, dry_run)
    return {**{f"[{name}]": value for name, value in headline.items()}, **readable(rest, dry_run)}


def _beside_each_other(names: Iterable[str]) -> list[str]:
    """The rows in first-seen order, each dry run's `events_to_delete` beside the real runs'
    `events_deleted` (a per-table row `rows_to_delete_by_table.logs` too)."""

    def field(name: str) -> str:
        tag = name.startswith("[")  # a Runs-page figure, `[events_to_delete]` beside `[events_deleted]`
        head, dot, rest = name.strip("[]").partition(".")
        return ("[" if tag else "") + real_name(head) + dot + rest

    seen = list(dict.fromkeys(names))
    first: dict[str, int] = {}
    for name in seen:
        first.setdefault(field(name), len(first))
    return sorted(seen, key=lambda name: first[field(name)])
