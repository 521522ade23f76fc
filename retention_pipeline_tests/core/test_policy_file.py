"""Reading RETENTION_POLICY_FILE: every problem is refused with the file, the entry and what is wrong."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from retention_pipeline.core.plan import make_plan
from retention_pipeline.core.policy import PolicyError, read_policy, registry_with
from retention_pipeline.core.tables import OWN
from retention_pipeline.settings import Settings, SettingsError

GOOD = """
tables:
  - table: audit_logs          # any table with an integer primary key `id`
    time_column: created_at
    retention_days: 90
  - table: events              # a second rule on a built-in table
    time_column: deleted_at
    retention_days: 7
  - table: zone_anomalies
    time_column: timestamp
    retention_days: 14
    files: {thumbnail_url: thumbnails}
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_the_issues_example_adds_two_tables_and_a_second_rule_on_events(tmp_path: Path):
    registry = registry_with(read_policy(_file(tmp_path, GOOD)))

    assert registry.names == ["detections", "events", "gpu_stats", "logs", "audit_logs", "zone_anomalies"]
    assert [(r.column, r.days) for r in registry["events"].rules] == [("started_at", None), ("deleted_at", 7)]
    assert registry["zone_anomalies"].rules[0].retention == OWN
    assert [(f.column, f.kind) for f in registry["zone_anomalies"].files] == [("thumbnail_url", "thumbnail")]
    assert [e.name for e in registry.declared] == ["audit_logs", "zone_anomalies"]


def test_an_empty_file_adds_nothing(tmp_path: Path):
    assert read_policy(_file(tmp_path, "")) == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tables: [\n", "is not valid YAML"),
        ("- table: x\n", "must hold a mapping with a list under 'tables:'"),
        ("tables:\n  - just a string\n", "tables[0] must be a mapping"),
        (
            "tables:\n  - table: a\n    time_column: t\n    retention_days: 0\n",
            "tables[0] (a): retention_days",
        ),
        ("tables:\n  - table: a\n    time_column: t\n    retention_days: '7'\n", "got '7'"),
        ("tables:\n  - table: a\n    retention_days: 7\n", "tables[0] (a): 'time_column' must be"),
        ("tables:\n  - time_column: t\n    retention_days: 7\n", "tables[0] (no table): 'table' must be"),
        (
            "tables:\n  - table: a\n    time_column: t\n    retention_days: 7\n    files: {p: videos}\n",
            "files.p names storage root 'videos'; use one of thumbnails, images, clips",
        ),
        (
            "tables:\n  - table: a\n    time_column: t\n    retention_days: 7\n    keep: 1\n",
            "unknown key(s) keep",
        ),
        (
            "tables:\n  - table: alerts\n    time_column: created_at\n    retention_days: 7\n",
            "alerts rows go with their parent rows",
        ),
        (  # a space must not slip a rule past the refusal (alerts of retained events would go)
            "tables:\n  - table: 'alerts '\n    time_column: created_at\n    retention_days: 7\n",
            "tables[0] (alerts): alerts rows go with their parent rows",
        ),
        (
            "tables:\n  - table: ' retention_file_queue'\n    time_column: queued_at\n"
            "    retention_days: 7\n",
            "retention_file_queue rows go with their parent rows",
        ),
        (
            "tables:\n  - table: a\n    time_column: t\n    retention_days: 7\n"
            "    files: {p: [thumbnails]}\n",
            "files.p names storage root ['thumbnails']; use one of",
        ),
        (
            "tables:\n  - table: a\n    time_column: t\n    retention_days: 400\n    retention_days: 4\n",
            "key 'retention_days' is given twice in one entry",
        ),
        (  # the built-in kind would win silently: these images would still go only with DELETE_IMAGES
            "tables:\n  - table: detections\n    time_column: detected_at\n    retention_days: 7\n"
            "    files: {file_path: thumbnails}\n",
            "tables[0] (detections): files.file_path already holds image files, deleted only with"
            " DELETE_IMAGES; it cannot be given another storage root",
        ),
        (
            "tables:\n  - table: a\n    time_column: t\n    retention_days: 7\n    files: {p: clips}\n"
            "  - table: a\n    time_column: u\n    retention_days: 9\n    files: {p: images}\n",
            "tables[1] (a): files.p already holds clip files; it cannot be given another storage root",
        ),
    ],
)
def test_a_bad_policy_file_is_refused_naming_the_file_the_entry_and_the_problem(
    tmp_path: Path, text: str, problem: str
):
    path = _file(tmp_path, text)

    with pytest.raises(PolicyError) as refused:
        read_policy(path)

    assert f"RETENTION_POLICY_FILE {path}" in str(refused.value)
    assert problem in str(refused.value)


def test_every_bad_entry_is_listed_at_once(tmp_path: Path):
    text = "tables:\n  - table: a\n    time_column: t\n    retention_days: 0\n  - 5\n"
    with pytest.raises(PolicyError, match=r"tables\[0\] \(a\).*; tables\[1\] must be a mapping"):
        read_policy(_file(tmp_path, text))


def test_settings_read_the_policy_file_and_refuse_a_missing_one(tmp_path: Path):
    settings = Settings.from_env({"RETENTION_POLICY_FILE": str(_file(tmp_path, GOOD))})
    assert "audit_logs" in settings.registry

    with pytest.raises(SettingsError, match=r"RETENTION_POLICY_FILE .*missing\.yaml cannot be read"):
        Settings.from_env({"RETENTION_POLICY_FILE": str(tmp_path / "missing.yaml")})


def test_a_file_that_is_not_utf8_is_refused_naming_it(tmp_path: Path):
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"tables:\n  - table: caf\xe9\n")

    with pytest.raises(PolicyError, match=rf"RETENTION_POLICY_FILE {path} is not UTF-8 text"):
        read_policy(path)


LONGER_EVENTS = "tables:\n  - table: events\n    time_column: started_at\n    retention_days: {days}\n"


@pytest.mark.parametrize(("days", "refused"), [(365, True), (30, False), (7, False)])
def test_a_rule_longer_than_another_on_its_column_is_refused_as_it_would_keep_nothing(
    tmp_path: Path, days: int, refused: bool
):
    # A row goes when any rule says so: with RETENTION_DAYS=30, "events for 365 days" would still delete
    # them at 30. A shorter rule is what a second rule on a column is for.
    path = _file(tmp_path, LONGER_EVENTS.format(days=days))
    settings = Settings.from_env({"RETENTION_POLICY_FILE": str(path), "RETENTION_DAYS": "30"})
    now = datetime(2026, 12, 1, tzinfo=UTC)

    if not refused:
        assert make_plan(settings, dry_run=True, reference_time=now).registry["events"].rules[1].days == days
        return
    with pytest.raises(SettingsError) as refusal:
        make_plan(settings, dry_run=True, reference_time=now)
    assert f"RETENTION_POLICY_FILE {path}: tables[0] (events): retention_days 365 on started_at" in str(
        refusal.value
    )
    assert "deletes rows after 30 days (RETENTION_DAYS)" in str(refusal.value)
    # One run's days for the table replace every rule of it.
    make_plan(settings, dry_run=True, reference_time=now, retention_days_by_table={"events": 400})


def test_a_one_off_run_with_fewer_days_than_a_stricter_policy_rule_is_not_refused(tmp_path: Path):
    # RETENTION_DAYS=30 and events for 14 days: consistent; one Launchpad run at 7 days moots the 14.
    path = _file(tmp_path, LONGER_EVENTS.format(days=14))
    settings = Settings.from_env({"RETENTION_POLICY_FILE": str(path), "RETENTION_DAYS": "30"})

    plan = make_plan(
        settings, dry_run=True, reference_time=datetime(2026, 12, 1, tzinfo=UTC), retention_days=7
    )

    assert plan.retention_days == 7


def test_yaml_anchors_and_merge_keys_work_and_an_entry_may_override_a_merged_key(tmp_path: Path):
    text = (
        "defaults: &defaults {time_column: created_at, retention_days: 90}\n"
        "tables:\n"
        "  - <<: *defaults\n"
        "    table: audit_logs\n"
        "  - <<: *defaults\n"
        "    table: access_logs\n"
        "    retention_days: 30\n"
    )

    rules = read_policy(_file(tmp_path, text))

    assert [(r.table, r.rule.column, r.rule.days) for r in rules] == [
        ("audit_logs", "created_at", 90),
        ("access_logs", "created_at", 30),
    ]


def test_a_key_given_twice_inside_a_merged_map_is_refused(tmp_path: Path):
    text = (
        "tables:\n"
        "  - <<: {time_column: created_at, retention_days: 400, retention_days: 4}\n"
        "    table: access_logs\n"
    )

    with pytest.raises(PolicyError, match="key 'retention_days' is given twice in one entry"):
        read_policy(_file(tmp_path, text))


def test_templates_merged_into_one_another_at_any_depth_load(tmp_path: Path):
    text = (
        "x-templates:\n"
        "  rules:\n"
        "    long: &long {time_column: created_at, retention_days: 90}\n"
        "    short: &short {<<: *long, retention_days: 30}\n"
        "tables:\n"
        "  - <<: *short\n"
        "    table: access_logs\n"
    )

    [rule] = read_policy(_file(tmp_path, text))

    assert (rule.table, rule.rule.column, rule.rule.days) == ("access_logs", "created_at", 30)
