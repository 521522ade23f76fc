"""RETENTION_POLICY_FILE: rules operators add to the built-in ones, on both engines and both schema shapes.

Expected outcomes come from the rules: a row goes when any rule for its table says so (a NULL time column:
that rule does not apply), the keep rule still holds, and a file named by a declared column goes only
when no surviving row of any table references it.
"""

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, insert, update
from sqlalchemy.engine import Engine

from retention_pipeline.core.cleanup import SchemaError, prepare_database
from retention_pipeline.core.policy import read_policy
from retention_pipeline.core.schema import detections, events
from retention_pipeline.settings import SettingsError
from retention_pipeline_tests import camera_schema
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.factories import CLIPS, THUMBS, CameraWorld, comparable

pytestmark = both_shapes

extra = MetaData()
audit_logs = Table(
    "audit_logs",
    extra,
    Column("id", Integer, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("action", String(64)),
)
snapshots = Table(
    "snapshots",
    extra,
    Column("id", Integer, primary_key=True),
    Column("taken_at", DateTime(timezone=True)),  # NULL: the rule does not apply
    Column("thumbnail_url", String(1024)),
    Column("label", String(64)),
)
# An integer `id` that is not the key: batches walk the key, so the rule is refused.
readings = Table(
    "readings",
    extra,
    Column("reading_key", String(32), primary_key=True),
    Column("id", Integer),
    Column("read_at", DateTime(timezone=True)),
)

POLICY = """
tables:
  - table: audit_logs
    time_column: created_at
    retention_days: 90
  - table: snapshots
    time_column: taken_at
    retention_days: 14
    files: {thumbnail_url: thumbnails}
"""
SOFT_DELETE = """
tables:
  - table: events
    time_column: deleted_at
    retention_days: 7
"""


def _policy(world: CameraWorld, tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    world.policy = read_policy(path)
    return path


def _row(engine: Engine, table: Table, **values: object) -> int:
    with engine.begin() as conn:
        return int(conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one())


def _ids(engine: Engine, table: Table) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(table.select().with_only_columns(table.c.id)).scalars())


@pytest.fixture
def declared(world: CameraWorld, tmp_path: Path) -> CameraWorld:
    """The world with audit_logs and snapshots tables and a policy file covering them."""
    extra.create_all(world.engine)
    _policy(world, tmp_path, POLICY)
    return world


def test_a_declared_table_loses_exactly_the_rows_its_rule_expires(declared: CameraWorld):
    world, now = declared, declared.now
    old = [_row(world.engine, audit_logs, created_at=now - timedelta(days=d)) for d in (91, 200)]
    at_cutoff = _row(world.engine, audit_logs, created_at=now - timedelta(days=90))
    young = _row(world.engine, audit_logs, created_at=now - timedelta(days=89))

    preview = world.run(dry_run=True)
    stats = world.run()

    assert _ids(world.engine, audit_logs) == {at_cutoff, young}
    assert len(old) == stats.rows_deleted_by_table["audit_logs"] == 2
    assert comparable(preview) == comparable(stats)
    again = world.run()
    assert again.rows_deleted_by_table["audit_logs"] == 0
    assert _ids(world.engine, audit_logs) == {at_cutoff, young}


def test_a_declared_file_goes_with_its_row_unless_a_surviving_row_still_names_it(declared: CameraWorld):
    world, now = declared, declared.now
    own = world.file(f"{THUMBS}/snap_own.jpg")
    shared_with_detection = world.file(f"{THUMBS}/snap_shared.jpg")
    shared_with_snapshot = world.file(f"{THUMBS}/snap_twice.jpg")
    world.detection(world.recent(), thumbnail=shared_with_detection)
    expired_at = now - timedelta(days=15)
    gone = [
        _row(world.engine, snapshots, taken_at=expired_at, thumbnail_url=own),
        _row(world.engine, snapshots, taken_at=expired_at, thumbnail_url=shared_with_detection),
        _row(world.engine, snapshots, taken_at=expired_at, thumbnail_url=shared_with_snapshot),
    ]
    kept = {
        _row(world.engine, snapshots, taken_at=now - timedelta(days=2), thumbnail_url=shared_with_snapshot),
        _row(world.engine, snapshots, taken_at=None, thumbnail_url=None),  # NULL: the rule does not apply
    }

    preview = world.run(dry_run=True)
    stats = world.run()

    assert _ids(world.engine, snapshots) == kept
    assert stats.rows_deleted_by_table["snapshots"] == len(gone)
    assert not world.exists(own)
    assert world.exists(shared_with_detection) and world.exists(shared_with_snapshot)
    assert stats.thumbnails_deleted == 1 and stats.files_kept_shared == 2
    assert comparable(preview) == comparable(stats)


def test_a_declared_file_keeps_a_built_in_rows_file_alive_and_vice_versa(declared: CameraWorld):
    world = declared
    thumb = world.file(f"{THUMBS}/both.jpg")
    world.detection(world.old(), thumbnail=thumb)  # expired detection
    _row(world.engine, snapshots, taken_at=world.now - timedelta(days=1), thumbnail_url=thumb)

    world.run()

    assert world.exists(thumb), "a young snapshot still names the expired detection's thumbnail"


def test_the_launchpad_override_replaces_a_declared_tables_days_for_one_run(declared: CameraWorld):
    world, now = declared, declared.now
    _row(world.engine, audit_logs, created_at=now - timedelta(days=20))
    kept = _row(world.engine, audit_logs, created_at=now - timedelta(days=5))

    stats = world.run(retention_days_by_table={"audit_logs": 10})

    assert stats.rows_deleted_by_table["audit_logs"] == 1
    assert _ids(world.engine, audit_logs) == {kept}


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_run_reports_the_cutoffs_its_rules_apply_per_table(declared: CameraWorld, dry_run: bool):
    world, now = declared, declared.now
    days = {"detections": 5, "events": 5}

    stats = world.run(dry_run=dry_run, retention_days_by_table=days)

    assert stats.cutoff == now - timedelta(days=5)
    assert stats.cutoffs_by_table == {
        "detections": now - timedelta(days=5),
        "events": now - timedelta(days=5),
        "audit_logs": now - timedelta(days=90),
        "snapshots": now - timedelta(days=14),
        "gpu_stats": world.cutoff,
        "logs": world.log_cutoff,
    }
    shown = world.plan(dry_run=dry_run, retention_days_by_table=days).describe()
    assert f"rows before {(now - timedelta(days=5)).isoformat()} (5 days)" in shown
    assert f"gpu_stats before {world.cutoff.isoformat()} (30 days)" in shown


def test_an_override_for_a_table_no_rule_covers_is_refused(declared: CameraWorld):
    with pytest.raises(SettingsError, match="retention_days_by_table names 'nonsense'"):
        declared.plan(retention_days_by_table={"nonsense": 3})


def test_soft_deleted_events_go_after_their_own_days_with_what_the_keep_rule_lets_go(
    world: CameraWorld, tmp_path: Path
):
    if not world.camera_shape:
        pytest.skip("events.deleted_at is the camera system's column; ours lacks it (refusal tested below)")
    _policy(world, tmp_path, SOFT_DELETE)
    now = world.now

    def soft_deleted(event_id: int, days_ago: float) -> None:
        with world.engine.begin() as conn:
            camera_events = camera_schema.events
            conn.execute(
                update(camera_events)
                .where(camera_events.c.id == event_id)
                .values(deleted_at=now - timedelta(days=days_ago))
            )

    gone_event = world.event(world.recent(10))
    soft_deleted(gone_event, 8)
    only_its = world.detection(world.recent(10), events_=(gone_event,))
    retained_event = world.event(world.recent(10))
    also_retained = world.detection(world.recent(10), events_=(gone_event, retained_event))
    lately_deleted = world.event(world.recent(10))
    soft_deleted(lately_deleted, 3)
    shared_clip = world.file(f"{CLIPS}/shared.mp4")
    sharing = world.event(world.recent(10), clip=shared_clip)
    soft_deleted(sharing, 30)
    world.event(world.recent(5), clip=shared_clip)  # live, same clip

    preview = world.run(dry_run=True)
    stats = world.run()

    remaining_events = world.ids(events)
    assert gone_event not in remaining_events and sharing not in remaining_events
    assert {retained_event, lately_deleted} <= remaining_events
    assert only_its not in world.ids(detections) and also_retained in world.ids(detections)
    assert world.exists(shared_clip)
    assert stats.events_deleted == 2 and stats.clips_deleted == 1
    assert comparable(preview) == comparable(stats)
    assert stats.cutoffs_by_table["events.deleted_at"] == now - timedelta(days=7)
    assert stats.cutoff == world.cutoff  # started_at's rule


def test_a_policy_table_named_in_another_case_is_the_same_table_only_where_the_database_says_so(
    world: CameraWorld, tmp_path: Path
):
    crops = Table(
        "Crops",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("taken_at", DateTime(timezone=True)),
        Column("thumbnail_url", String(1024)),
    )
    crops.create(world.engine)
    rule = "tables:\n  - table: {}\n    time_column: taken_at\n    retention_days: 30\n"
    rule += "    files: {{thumbnail_url: thumbnails}}\n"
    _policy(world, tmp_path, rule.format("crops"))
    if world.engine.dialect.name == "postgresql":
        # PostgreSQL keeps a quoted name's case: `crops` is another table, and `Crops` names this one.
        with pytest.raises(SchemaError, match="the database has no table 'crops'"):
            prepare_database(world.engine, world.policy)
        _policy(world, tmp_path, rule.format("Crops"))
    old_file = world.file(f"{THUMBS}/crop_old.jpg")
    _row(world.engine, crops, taken_at=world.old(), thumbnail_url=old_file)
    young = _row(world.engine, crops, taken_at=world.recent(), thumbnail_url=world.file(f"{THUMBS}/crop.jpg"))

    preview = world.run(dry_run=True)
    stats = world.run()

    assert _ids(world.engine, crops) == {young}
    assert sum(preview.rows_deleted_by_table.values()) == sum(stats.rows_deleted_by_table.values()) == 1
    assert not world.exists(old_file) and world.exists(f"{THUMBS}/crop.jpg")
    assert comparable(preview) == comparable(stats)


def test_a_rule_on_a_column_the_database_lacks_is_refused_before_anything_is_deleted(
    world: CameraWorld, tmp_path: Path
):
    path = _policy(world, tmp_path, SOFT_DELETE.replace("deleted_at", "gone_at"))
    expired = world.detection(world.old())

    with pytest.raises(SchemaError) as refused:
        prepare_database(world.engine, world.policy)

    assert f"RETENTION_POLICY_FILE {path}: tables[0] (events)" in str(refused.value)
    assert "no column 'gone_at'" in str(refused.value)
    assert expired in world.ids(detections)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("table: nowhere\n    time_column: at", "the database has no table 'nowhere'"),
        (
            "table: audit_logs\n    time_column: action",
            "time_column 'action' is VARCHAR(64), not a timestamp",
        ),
        ("table: cameras\n    time_column: name", "needs an integer primary key column 'id'"),
        ("table: readings\n    time_column: read_at", "needs an integer primary key column 'id'"),
        (
            "table: snapshots\n    time_column: taken_at\n    files: {label2: thumbnails}",
            "files names column 'label2', which the table lacks",
        ),
    ],
)
def test_a_rule_the_database_cannot_serve_is_refused_naming_file_entry_and_problem(
    declared: CameraWorld, tmp_path: Path, entry: str, problem: str
):
    if declared.engine.dialect.name == "sqlite" and "VARCHAR" in problem:
        pytest.skip("SQLite keeps times as text: a text column is served (test_policy_time_columns.py)")
    path = _policy(declared, tmp_path, f"tables:\n  - {entry}\n    retention_days: 3\n")

    with pytest.raises(SchemaError) as refused:
        prepare_database(declared.engine, declared.policy)

    assert f"RETENTION_POLICY_FILE {path}: tables[0]" in str(refused.value)
    assert problem in str(refused.value)


def test_a_declared_table_whose_ids_pass_two_to_the_31st_is_purged_with_its_files(
    world: CameraWorld, tmp_path: Path
):
    big = Table(
        "snapshots",
        MetaData(),
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("taken_at", DateTime(timezone=True)),
        Column("thumbnail_url", String(1024)),
    )
    big.create(world.engine)
    audit_logs.create(world.engine)
    _policy(world, tmp_path, POLICY)
    thumb = world.file(f"{THUMBS}/big.jpg")
    with world.engine.begin() as conn:  # a bigserial table some years in
        conn.execute(
            insert(big),
            [
                {"id": 3_000_000_000, "taken_at": world.now - timedelta(days=30), "thumbnail_url": thumb},
                {"id": 3_000_000_001, "taken_at": world.now - timedelta(days=1), "thumbnail_url": None},
            ],
        )

    stats = world.run()

    assert stats.rows_deleted_by_table["snapshots"] == 1 and stats.thumbnails_deleted == 1
    assert _ids(world.engine, big) == {3_000_000_001} and not world.exists(thumb)
