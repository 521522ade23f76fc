"""What an operator chooses for one run, declared once with its bounds.

Plain pydantic models: the core validates with them, and the Launchpad configs inherit their fields
(`OrphanSweepConfig(dg.Config, OrphanSweepOptions)`), so a field, its default, its range and its
description exist in one place.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .policy import MAX_DAYS

GIB = 1024**3


def readable(exc: ValidationError) -> str:
    """One clause per bad field, e.g. 'min_age_hours must be greater than or equal to 1, got 0'."""
    clauses = []
    for error in exc.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "config"
        rule = error["msg"].removeprefix("Input ").removeprefix("Value error, ")
        rule = rule.replace("should be", "must be", 1) if rule.startswith("should be") else rule
        # A validator's own message may already quote the input (", got '2026-01-01'").
        shown = "" if ", got " in rule else f", got {error['input']!r}"
        clauses.append(f"{name} {rule}{shown}")
    return "; ".join(clauses)


class OrphanSweepOptions(BaseModel):
    """How careful one orphaned-file sweep is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dry_run: bool = Field(
        default=True, description="Report what would be deleted, change nothing. Set false to delete."
    )
    include_images: bool = Field(
        default=False, description="Also sweep IMAGES_DIR (original images), not only thumbnails and clips."
    )
    min_age_hours: float = Field(
        default=24.0,
        ge=1,
        le=MAX_DAYS * 24,
        description="Only files older than this (by modification time) can be orphans (1 to 876000, a"
        " century): a file written just before its row commits must not be taken for one.",
    )
    max_orphan_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Stop, deleting nothing, if more than this share of files look orphaned (above 0, at"
        " most 1).",
    )
    max_delete_bytes: int = Field(
        default=10 * GIB,
        ge=0,
        description="Stop, deleting nothing, if the orphans hold more bytes than this.",
    )
    force: bool = Field(default=False, description="Delete even when a safety stop applies.")
