"""The plan of one cleanup run: cutoffs fixed once, policy validated before anything is deleted."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..setting_values import parse_batch_size, parse_bool, parse_days, parse_transaction_target
from ..settings import Settings, SettingsError
from .files import StorageRoots
from .policy import DeclaredRule, registry_with, rules_that_keep_nothing
from .purge.offline_roots import OfflineRoots, mounted_roots, root_devices
from .reference_time import check_reference_time, cutoff_from, early_cutoffs
from .stats import applied_cutoffs
from .tables import Expiry, Registry


@dataclass(frozen=True)
class CleanupPlan:
    """Everything a run needs, small enough to pass between ops."""

    reference_time: datetime
    cutoff: datetime
    log_cutoff: datetime
    dry_run: bool
    retention_days: int
    log_retention_days: int
    batch_size: int
    delete_images: bool
    media_root: Path
    storage_dirs: tuple[Path, ...]
    planned_at: datetime
    file_chunk_size: int | None = None  # None: the file step's executor decides (cleanup.file_chunks)
    emergency: bool = False
    progress_interval_seconds: float = Settings.progress_interval_seconds
    transaction_target_ms: float = Settings.transaction_target_ms
    policy: tuple[DeclaredRule, ...] = ()  # RETENTION_POLICY_FILE's rules
    days_by_table: tuple[tuple[str, int], ...] = ()  # a run's own retention_days for some tables
    # Storage roots (resolved) missing or empty when the run was planned, before it unlinked anything; each
    # root's device then, and those that were mount points: every later step judges its roots by them
    # (purge/offline_roots.py).
    offline_roots: tuple[str, ...] = ()
    root_devices: tuple[tuple[str, int], ...] = ()
    mounted_roots: tuple[str, ...] = ()

    @property
    def registry(self) -> Registry:
        """The run's retention tables: the built-in four and the policy file's."""
        return registry_with(self.policy)

    @property
    def expiry(self) -> Expiry:
        """Every rule's cutoff for this run."""
        return Expiry.at(
            self.registry,
            self.reference_time,
            self.retention_days,
            self.log_retention_days,
            dict(self.days_by_table),
        )

    @property
    def transaction_target_s(self) -> float | None:
        """The time each delete transaction aims for; None keeps every batch at batch_size."""
        return self.transaction_target_ms / 1000 or None

    def with_retention(self, days: int) -> CleanupPlan:
        """The same run with a shorter data retention (emergency mode); logs keep their own."""
        return replace(self, retention_days=days, cutoff=self.reference_time - timedelta(days=days))

    @property
    def applied_cutoffs(self) -> dict[str, datetime]:
        """What the run reports as its cutoffs: those its rules apply (a table's days for this run or a
        policy rule's included), as `cutoff` (events'), `log_cutoff` (logs') and `cutoffs_by_table`."""
        return applied_cutoffs(self.expiry.cutoffs)

    def describe(self) -> str:
        """One line for the run log."""
        mode = "DRY RUN - nothing will be deleted" if self.dry_run else "deleting"
        by_table = self.applied_cutoffs
        cutoff, log_cutoff = by_table.pop("events"), by_table.pop("logs")
        others = "".join(
            f", {name} before {at.isoformat()} ({self._days(at)} days)"
            for name, at in by_table.items()
            if at != cutoff
        )
        return (
            f"{mode}: rows before {cutoff.isoformat()} ({self._days(cutoff)} days),"
            f" logs before {log_cutoff.isoformat()} ({self._days(log_cutoff)} days){others},"
            f" batches of {self.batch_size}{self._target()}, delete_images={self.delete_images}"
        )

    def _days(self, cutoff: datetime) -> int:
        return (self.reference_time - cutoff).days

    def _target(self) -> str:
        if not self.transaction_target_ms:
            return ""
        return f" (fewer when a transaction runs past {self.transaction_target_ms:g} ms)"


def make_plan(
    settings: Settings,
    *,
    dry_run: bool,
    reference_time: datetime,
    retention_days: object = None,
    log_retention_days: object = None,
    batch_size: object = None,
    delete_images: object = None,
    file_chunk_size: object = None,
    transaction_target_ms: object = None,
    emergency: bool = False,
    retention_days_by_table: dict[str, object] | None = None,
) -> CleanupPlan:
    """Combine the environment's settings with a run's overrides; raise SettingsError on bad values."""
    if reference_time.tzinfo is None:
        raise SettingsError("reference_time must be timezone-aware")
    errors: list[str] = []

    def pick(name: str, override: object, default: object, parse: object) -> object:
        if override is None:
            return default
        try:
            return parse(name, override)  # type: ignore[operator]
        except ValueError as exc:
            errors.append(str(exc))
            return default

    days = pick("retention_days", retention_days, settings.retention_days, parse_days)
    log_days = pick("log_retention_days", log_retention_days, settings.log_retention_days, parse_days)
    size = pick("batch_size", batch_size, settings.batch_size, parse_batch_size)
    images = pick("delete_images", delete_images, settings.delete_images, parse_bool)
    chunk = pick("file_chunk_size", file_chunk_size, None, parse_batch_size)
    target = pick(
        "transaction_target_ms",
        transaction_target_ms,
        settings.transaction_target_ms,
        parse_transaction_target,
    )
    registry = settings.registry
    by_table: list[tuple[str, int]] = []
    for table, raw in sorted((retention_days_by_table or {}).items()):
        if table not in registry:
            errors.append(
                f"retention_days_by_table names {table!r}, which no rule covers; known: {registry.names}"
            )
        elif (table_days := pick(f"retention_days_by_table.{table}", raw, None, parse_days)) is not None:
            by_table.append((table, int(table_days)))  # type: ignore[call-overload]
    if errors:
        raise SettingsError("Invalid run configuration: " + "; ".join(errors))
    assert isinstance(days, int) and isinstance(log_days, int) and isinstance(size, int)
    assert (chunk is None or isinstance(chunk, int)) and isinstance(target, float | int)
    # Against the environment's days, a mistake of the configuration: a run's own shorter days (a one-off
    # Launchpad run, an emergency pass) make longer rules moot on purpose.
    overridden = frozenset(table for table, _days in by_table)
    env_days, env_log_days = settings.retention_days, settings.log_retention_days
    if not emergency and (useless := rules_that_keep_nothing(registry, env_days, env_log_days, overridden)):
        raise SettingsError("Invalid run configuration: " + "; ".join(useless))
    reference = check_reference_time(reference_time)
    # Where each kind of days came from, for a reference_time too early to count them back from.
    sources = {
        "RETENTION_DAYS": "RETENTION_DAYS" if retention_days is None else "retention_days",
        "LOG_RETENTION_DAYS": "LOG_RETENTION_DAYS" if log_retention_days is None else "log_retention_days",
    }
    cutoff = cutoff_from(reference, days, sources["RETENTION_DAYS"])
    log_cutoff = cutoff_from(reference, log_days, sources["LOG_RETENTION_DAYS"])
    if early := early_cutoffs(reference, registry, days, log_days, dict(by_table), sources):
        raise SettingsError("Invalid run configuration: " + "; ".join(early))
    roots = StorageRoots.from_dirs(settings.media_root, settings.storage_roots)
    return CleanupPlan(
        reference_time=reference,
        cutoff=cutoff,
        log_cutoff=log_cutoff,
        dry_run=dry_run,
        retention_days=days,
        log_retention_days=log_days,
        batch_size=size,
        delete_images=bool(images),
        media_root=settings.media_root.absolute(),
        storage_dirs=settings.storage_roots,
        planned_at=datetime.now(UTC),
        file_chunk_size=chunk,
        emergency=emergency,
        progress_interval_seconds=settings.progress_interval_seconds,
        transaction_target_ms=float(target),
        policy=settings.policy,
        days_by_table=tuple(by_table),
        offline_roots=tuple(OfflineRoots.look(roots).offline),
        root_devices=root_devices(roots),
        mounted_roots=mounted_roots(roots),
    )
