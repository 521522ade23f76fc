"""How run statistics read to a person: sizes in KiB/MiB/GiB, and a dry run's counts as what would go."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BYTE_FIELDS = ("space_reclaimed", "bytes_reclaimed", "orphan_bytes")
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
# A dry run deletes nothing: its counts are named for what a real run would do.
_DRY_RUN_NAMES = {
    "space_reclaimed": "space_to_reclaim",
    "bytes_reclaimed": "bytes_to_reclaim",
    "rows_deleted_by_table": "rows_to_delete_by_table",
}
_REAL_NAMES = {dry: real for real, dry in _DRY_RUN_NAMES.items()}


def human_bytes(count: int | float) -> str:
    """`314 KiB`, `1.5 MiB`: binary units, three significant digits at most."""
    value = float(count)
    if abs(value) < 1024:
        return f"{int(value)} B"
    for unit in _UNITS:
        value /= 1024
        shown = f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"
        if abs(float(shown)) < 1024 or unit == _UNITS[-1]:  # 1048575 B is "1.0 MiB", not "1024 KiB"
            return f"{shown} {unit}"
    raise AssertionError("unreachable")


def dry_run_name(name: str) -> str:
    """`thumbnails_deleted` -> `thumbnails_to_delete`; names that count nothing stay."""
    if name in _DRY_RUN_NAMES:
        return _DRY_RUN_NAMES[name]
    if name.endswith("_deleted"):
        return name.removesuffix("_deleted") + "_to_delete"
    return name


def real_name(name: str) -> str:
    """The statistics field a (possibly dry-run) label stands for."""
    if name in _REAL_NAMES:
        return _REAL_NAMES[name]
    if name.endswith("_to_delete"):
        return name.removesuffix("_to_delete") + "_deleted"
    return name


def labelled(values: Mapping[str, Any], dry_run: bool) -> dict[str, Any]:
    """The statistics under the names a person should read: a dry run's as what would be deleted."""
    return {dry_run_name(k) if dry_run else k: v for k, v in values.items()}


def unlabelled(values: Mapping[str, Any]) -> dict[str, Any]:
    """Back to the statistics' field names, whichever kind of run wrote them."""
    return {real_name(k): v for k, v in values.items()}


def readable(values: Mapping[str, Any], dry_run: bool) -> dict[str, Any]:
    """`labelled` and flat, for a table: byte counts also in binary units (`321536 (314 KiB)`), and a
    per-table mapping spread over one line per table (`rows_deleted_by_table.detections`)."""
    shown: dict[str, Any] = {}
    for name, value in labelled(values, dry_run).items():
        if isinstance(value, Mapping):
            shown.update({f"{name}.{key}": inner for key, inner in value.items()})
        elif real_name(name) in BYTE_FIELDS and isinstance(value, int):
            shown[name] = f"{value} ({human_bytes(value)})"
        else:
            shown[name] = value
    return shown
