"""The one resource: where the camera database and the media live."""

import os
import shutil
from collections.abc import Iterable

import dagster as dg
from pydantic import Field, PrivateAttr
from sqlalchemy.engine import Engine

from .core.db import make_engine
from .core.job_status import JobTracker
from .core.lock import ExclusiveRunLock
from .settings import Settings, SettingsError

_DEFAULTS = Settings()
# Resource field -> the environment variable it stands for.
ENVIRONMENT = {
    "database_url": "DATABASE_URL",
    "media_root": "MEDIA_ROOT",
    "thumbnail_dir": "THUMBNAIL_DIR",
    "clips_dir": "CLIPS_DIR",
    "images_dir": "IMAGES_DIR",
}

_TRACKER_VARIABLES = ("JOB_STATUS_REDIS_URL", "JOB_STATUS_TTL_SECONDS")


class CameraSystemResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The camera system's database and media directories.

    A field left at its default leaves the environment (DATABASE_URL, MEDIA_ROOT, THUMBNAIL_DIR,
    CLIPS_DIR, IMAGES_DIR) in charge when the run starts, so the run worker's environment decides, not
    the one that loaded the code. The code location's resource (`from_environment`) names each variable
    the environment sets and shows the default of the others, so the UI shows what a run will use.
    """

    database_url: str = Field(
        default=_DEFAULTS.database_url, description="The camera database (default: DATABASE_URL)."
    )
    media_root: str = Field(
        default=str(_DEFAULTS.media_root), description="Base of relative paths (default: MEDIA_ROOT)."
    )
    thumbnail_dir: str = Field(
        default=str(_DEFAULTS.thumbnail_dir), description="Thumbnails' root (default: THUMBNAIL_DIR)."
    )
    clips_dir: str = Field(default=str(_DEFAULTS.clips_dir), description="Clips' root (default: CLIPS_DIR).")
    images_dir: str = Field(
        default=str(_DEFAULTS.images_dir), description="Original images' root (default: IMAGES_DIR)."
    )

    @classmethod
    def from_environment(cls) -> "CameraSystemResource":
        """The resource as the code location shows it: each setting the environment makes as that variable
        (read again when a run starts), the others at their defaults."""
        return cls(
            **{name: dg.EnvVar(var) for name, var in ENVIRONMENT.items() if os.environ.get(var, "").strip()}
        )

    _engine: Engine | None = PrivateAttr(default=None)
    _lock: ExclusiveRunLock | None = PrivateAttr(default=None)
    _settings: Settings | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        """The environment's settings with this resource's fields applied, read once per run (per step
        process on a multiprocess executor); raises SettingsError."""
        # Read once: an operator saving the policy file (or a typo in it) while a run goes must not fail
        # the run's later steps; the plan already holds the rules the run applies.
        if self._settings is None:
            self._settings = self._read_settings()
        return self._settings

    def job_tracker(self) -> JobTracker:
        """Where the run publishes its status: the settings' tracker, or, when other settings are invalid,
        one read from JOB_STATUS_REDIS_URL and JOB_STATUS_TTL_SECONDS alone, so the camera system's Jobs
        page still shows the run failing on them (off if those are invalid too)."""
        try:
            return self.settings().job_tracker
        except SettingsError:
            tracker_only = {var: os.environ[var] for var in _TRACKER_VARIABLES if var in os.environ}
            try:
                return Settings.from_env(tracker_only).job_tracker
            except SettingsError:
                return JobTracker(None)

    def _read_settings(self) -> Settings:
        # A field at its default is not an override: the environment read just now decides. The others go
        # through the same parsing and checks as the variable they stand for.
        overrides = {
            var: value
            for name, var in ENVIRONMENT.items()
            if (value := getattr(self, name)) != str(getattr(_DEFAULTS, name))
        }
        return Settings.from_env({**os.environ, **overrides})

    def engine(self) -> Engine:
        """One engine per run, disposed when the run's resources are torn down."""
        if self._engine is None:
            self._engine = make_engine(self.settings().database_url, create=False)
        return self._engine

    def claim_exclusive_run(self) -> bool:
        """Take the database's run lock for the rest of the run, if not taken yet; raises RunLockBusy, or
        RunLockLost when the lock this resource took was lost since (it stays lost for the run).

        Returns whether this call took it. Resources live for the whole run under the in-process
        executor, so the lock does too.
        """
        if self._lock is not None:
            # Checked, not assumed: a step after the one that found the lock lost must not start deleting.
            self._lock.ensure_held()
            return False
        lock = ExclusiveRunLock(self.engine())
        lock.acquire()
        self._lock = lock
        return True

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        try:
            if self._lock is not None:
                self._lock.release()
        finally:
            self._lock = None
            self._settings = None
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


class DiskSpaceResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Free space on the volume holding a path (tests replace `free_percent` with scripted readings)."""

    def free_percent(self, path: str) -> float:
        """Free space of the volume holding `path`, in percent of its size."""
        usage = shutil.disk_usage(path)
        return 100.0 * usage.free / usage.total if usage.total else 100.0

    def free_by_volume(self, volumes: Iterable[str], settle: bool = False) -> dict[str, float]:
        """`free_percent` of each volume (one path on each). `settle`: flush the filesystems first, since
        btrfs and ZFS show the room of deleted files only once their transaction commits, and a reading
        taken too early would make a pass that freed space look as if it freed nothing."""
        if settle:
            os.sync()
        return {volume: self.free_percent(volume) for volume in volumes}
