"""Settings from the environment: defaults, and clear messages for every bad value."""

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from retention_pipeline.config import CleanupConfig
from retention_pipeline.core.plan import make_plan
from retention_pipeline.core.policy import DeclaredRule
from retention_pipeline.core.reference_time import parse_reference_time
from retention_pipeline.core.tables import OWN, Rule
from retention_pipeline.settings import Settings, SettingsError


def test_defaults_match_the_documented_ones():
    settings = Settings.from_env({})

    assert settings.database_url == "sqlite:///data/retention.db"
    assert (settings.retention_days, settings.log_retention_days) == (30, 7)
    assert settings.cleanup_time == time(3, 0) and settings.cleanup_timezone == "UTC"
    assert settings.batch_size == 10_000 and settings.delete_images is False
    assert settings.transaction_target_ms == 50
    assert settings.cleanup_cron == "0 3 * * *"


def test_relative_storage_dirs_are_relative_to_media_root(tmp_path: Path):
    settings = Settings.from_env(
        {"MEDIA_ROOT": str(tmp_path), "THUMBNAIL_DIR": "t", "CLIPS_DIR": "/abs/clips", "IMAGES_DIR": "i"}
    )

    assert settings.storage_roots == (tmp_path / "t", Path("/abs/clips"), tmp_path / "i")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RETENTION_DAYS", "0", "RETENTION_DAYS must be an integer between 1 and 36500, got '0'"),
        ("RETENTION_DAYS", "-3", "RETENTION_DAYS must be an integer between 1 and 36500, got '-3'"),
        ("RETENTION_DAYS", "abc", "RETENTION_DAYS must be an integer, got 'abc'"),
        ("LOG_RETENTION_DAYS", "1.5", "LOG_RETENTION_DAYS must be an integer, got '1.5'"),
        ("CLEANUP_TIME", "25:00", "CLEANUP_TIME must be a 24-hour time HH:MM such as 03:00, got '25:00'"),
        ("CLEANUP_TIME", "3am", "CLEANUP_TIME must be a 24-hour time HH:MM"),
        ("CLEANUP_TIMEZONE", "Mars/Olympus", "CLEANUP_TIMEZONE must be an IANA time zone name"),
        ("CLEANUP_BATCH_SIZE", "0", "CLEANUP_BATCH_SIZE must be an integer between 1 and 100000"),
        (
            "TRANSACTION_TARGET_MS",
            "-5",
            "TRANSACTION_TARGET_MS must be a number of milliseconds between 0 and 60000, got '-5'",
        ),
        ("DELETE_IMAGES", "maybe", "DELETE_IMAGES must be true or false, got 'maybe'"),
        ("DATABASE_URL", "mysql://u:secret@h/db", "DATABASE_URL must be a sqlite:///path/to/file.db or"),
        # Parsed as SQLAlchemy will parse it at the first connection: not a number, no file, no driver.
        ("DATABASE_URL", "postgresql://u:secret@db:54x32/camera", "got 'postgresql://…@db:54x32/camera'"),
        ("DATABASE_URL", "sqlite:", "DATABASE_URL must be a sqlite:///path/to/file.db"),
        ("DATABASE_URL", "sqlite://", "(no database file named)"),
        ("DATABASE_URL", "postgresql+asyncpg://u:secret@h/db", "got 'postgresql+asyncpg://…@h/db'"),
        ("DATABASE_URL", "sqlite3:///camera.db", "DATABASE_URL must be a sqlite:///path/to/file.db"),
        ("DATABASE_URL", "postgresq://u:secret@h/db", "got 'postgresq://…@h/db'"),
        # A password holding '/' or '@' stays hidden too.
        ("DATABASE_URL", "postgresql://u:se/cret@db:54x32/camera", "got 'postgresql://…@db:54x32/camera'"),
        ("DATABASE_URL", "postgresql://u:p@secret@db:54x32/camera", "got 'postgresql://…@db:54x32/camera'"),
        ("DATABASE_URL", "postgresql://u:se\ncret@db:54x32/camera", "got 'postgresql://…@db:54x32/camera'"),
        (
            "PROGRESS_INTERVAL_SECONDS",
            "-1",
            "PROGRESS_INTERVAL_SECONDS must be a number of seconds between 0",
        ),
        ("PROGRESS_INTERVAL_SECONDS", "often", "PROGRESS_INTERVAL_SECONDS must be a number of seconds"),
    ],
)
def test_bad_values_are_rejected_with_a_message_naming_the_variable(variable, value, message):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})

    assert message in str(caught.value)
    assert "secret" not in str(caught.value)


def test_every_bad_variable_is_listed_at_once():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"RETENTION_DAYS": "0", "CLEANUP_TIME": "24:00"})

    assert "RETENTION_DAYS" in str(caught.value) and "CLEANUP_TIME" in str(caught.value)


def test_plain_postgresql_urls_use_the_psycopg2_driver():
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u@h/db"})

    assert settings.database_url == "postgresql+psycopg2://u@h/db"


def test_plan_fixes_cutoffs_from_the_reference_time_in_utc():
    berlin_tick = datetime.fromisoformat("2026-03-29T03:00:00+02:00")  # DST day in Europe/Berlin

    plan = make_plan(Settings(), dry_run=False, reference_time=berlin_tick, retention_days=10)

    assert plan.reference_time == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert plan.cutoff == plan.reference_time - timedelta(days=10)
    assert plan.log_cutoff == plan.reference_time - timedelta(days=7)
    assert plan.cutoff.tzinfo is UTC


@pytest.mark.parametrize("bad", [0, -3, "abc", 100_001])
def test_plan_rejects_bad_run_overrides(bad):
    with pytest.raises(SettingsError, match="Invalid run configuration"):
        make_plan(
            Settings(), dry_run=False, reference_time=datetime.now(UTC), retention_days=bad, batch_size=bad
        )


def test_a_reference_time_in_the_future_is_refused_before_any_cutoff_exists():
    now = datetime.now(UTC)
    with pytest.raises(SettingsError, match=r"is in the future .* younger than their retention period"):
        make_plan(Settings(), dry_run=False, reference_time=datetime(2999, 1, 1, tzinfo=UTC))
    # A few minutes ahead is a clock that disagrees, not a mistake.
    plan = make_plan(Settings(), dry_run=False, reference_time=now + timedelta(minutes=5))
    assert plan.cutoff == plan.reference_time - timedelta(days=plan.retention_days)


def test_a_reference_time_too_early_to_count_back_from_is_refused_with_a_reason():
    early = r"too early for retention_days \(30 days\): its cutoff would fall before year 1"
    with pytest.raises(SettingsError, match=early):
        make_plan(Settings(), dry_run=False, reference_time=datetime(1, 1, 2, tzinfo=UTC), retention_days=30)


@pytest.mark.parametrize(
    ("by_table", "policy_days", "named"),
    [
        ({"events": 36_500}, None, r"retention_days_by_table\.events \(36500 days\)"),
        ({}, 36_500, r"the retention_days of RETENTION_POLICY_FILE p\.yaml: tables\[0\] \(audit_logs\)"),
    ],
)
def test_a_reference_time_too_early_for_a_tables_own_days_is_refused_when_planned(
    by_table: dict[str, object], policy_days: int | None, named: str
):
    # RETENTION_DAYS (30) and LOG_RETENTION_DAYS fit after 0050-01-01; a rule with more days does not, and
    # used to pass planning and crash the first purge step with OverflowError.
    policy = (
        ()
        if policy_days is None
        else (DeclaredRule("audit_logs", Rule("at", OWN, policy_days, "p.yaml: tables[0]")),)
    )
    reference = parse_reference_time("0050-01-01T00:00:00+00:00")
    with pytest.raises(
        SettingsError, match=rf"reference_time 0050-01-01.* is too early for {named}.* before year 1"
    ):
        make_plan(
            Settings(policy=policy), dry_run=True, reference_time=reference, retention_days_by_table=by_table
        )


def test_the_launchpad_refuses_a_reference_time_too_early_for_the_days_it_gives():
    with pytest.raises(
        ValidationError, match=r"too early for retention_days_by_table\.events \(36500 days\)"
    ):
        CleanupConfig(reference_time="0050-01-01T00:00:00+00:00", retention_days_by_table={"events": 36_500})
    CleanupConfig(reference_time="0150-01-01T00:00:00+00:00", retention_days_by_table={"events": 36_500})


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_a_reference_time_whose_utc_falls_outside_the_calendar_is_refused_with_a_reason(raw: str):
    with pytest.raises(SettingsError, match="lies outside the years a cutoff can be counted in"):
        parse_reference_time(raw)


def test_reference_time_must_carry_an_offset():
    with pytest.raises(SettingsError, match="must include a UTC offset"):
        parse_reference_time("2026-01-01T03:00:00")
    assert parse_reference_time("2026-01-01T03:00:00Z") == datetime(2026, 1, 1, 3, tzinfo=UTC)


def test_a_refused_job_tracker_url_never_shows_its_password():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"JOB_STATUS_REDIS_URL": "redis://127.0.0.1:notaport/0?password=hunter2"})

    assert "JOB_STATUS_REDIS_URL must be a redis://" in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379", "redis://127.0.0.1:notaport/0", "redis://127.0.0.1:99999/0"]
)
def test_a_job_tracker_url_redis_cannot_use_is_refused(url: str):
    with pytest.raises(SettingsError, match="JOB_STATUS_REDIS_URL must be a redis://"):
        Settings.from_env({"JOB_STATUS_REDIS_URL": url})


@pytest.mark.parametrize(
    ("environment", "variable"),
    [({"THUMBNAIL_DIR": "/"}, "THUMBNAIL_DIR"), ({"MEDIA_ROOT": "/", "IMAGES_DIR": "."}, "IMAGES_DIR")],
)
def test_a_storage_root_at_the_filesystem_root_is_refused(environment: dict[str, str], variable: str):
    with pytest.raises(SettingsError, match=f"{variable} resolves to /: a storage root must be a media"):
        Settings.from_env(environment)


@pytest.mark.parametrize("root", [".", "..", "../media/", "/srv"])
def test_a_storage_root_that_is_media_root_or_above_it_is_refused(root: str):
    # MEDIA_ROOT holds the camera system's configuration and models: the orphan sweep would delete them.
    with pytest.raises(
        SettingsError, match=r"CLIPS_DIR resolves to .*, which is MEDIA_ROOT .* or contains it"
    ):
        Settings.from_env({"MEDIA_ROOT": "/srv/media", "CLIPS_DIR": root})


def test_a_storage_root_inside_another_is_accepted():
    settings = Settings.from_env({"MEDIA_ROOT": "/srv", "THUMBNAIL_DIR": "data", "IMAGES_DIR": "data/images"})

    assert settings.storage_roots[0] == Path("/srv/data")
