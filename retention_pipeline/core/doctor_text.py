"""doctor's report as text for a terminal (`--json` prints `DoctorReport.as_dict` instead)."""

from __future__ import annotations

from .doctor import DoctorReport
from .purge import REFERENCE_CHUNK


def render(report: DoctorReport) -> str:
    """The report as text for a terminal."""
    lines = [f"database: {report.database}"]
    lines.append("rules (a row goes when any rule of its table says so):")
    for rule in report.rules:
        lines.append(
            f"  {rule['table']}.{rule['column']}: {rule['days']} days ({rule['source']}),"
            f" cutoff {rule['cutoff']}"
        )
    lines.append("time columns (each purge finds its rows through them):")
    for c in report.time_columns:
        state = f"indexed ({', '.join(c.kinds)})" if c.indexed else "NOT indexed: every run scans the table"
        lines.append(f"  {c.table}.{c.column}: {state}")
    lines.append(
        f"path columns (read once per {REFERENCE_CHUNK:,} files a run checks; an index is optional):"
    )
    for c in report.path_columns:
        lines.append(f"  {c.table}.{c.column}: {'indexed' if c.indexed else 'not indexed'}")
    lines.append("foreign keys referencing the retention tables:")
    for r in report.references:
        if r.blocks_deletes:
            note = "BLOCKS DELETES"
        elif r.deleted_first:
            note = "deleted by the purge first"
        else:
            note = "indexed" if r.indexed else "NOT indexed: each deleted row scans the whole table"
        lines.append(f"  {r.name}.{r.column} -> {r.parent} ON DELETE {r.on_delete}: {note}")
    lines.append("storage roots:")
    for root in report.roots:
        state = "ok" if root.writable else ("missing" if not root.exists else "not writable")
        lines.append(f"  {root.path}: {state}")
    if report.expired_rows:
        counts = ", ".join(f"{name} {n}" for name, n in report.expired_rows.items())
        files = (
            "" if report.expired_files is None else f"; files {report.expired_files} (as a dry run deletes)"
        )
        if report.expired_files_not_counted:
            files = f"; files not counted: {report.expired_files_not_counted}"
        lines.append(f"would expire now: {counts}{files}")
    for table, count in report.partitions_to_drop.items():
        lines.append(
            f"{table} is range-partitioned: a run would drop {count} wholly expired partitions whole"
        )
    if advice := report.advice:
        lines.append("indexes worth adding (doctor never changes the schema; run these yourself):")
        lines += [f"  {statement}" for statement in advice]
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    for problem in report.blocking:
        lines.append(f"BLOCKING: {problem}")
    lines.append("ok: nothing blocks a run" if report.ok else "a run would fail: fix what is BLOCKING above")
    return "\n".join(lines)
