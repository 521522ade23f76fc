"""On the camera system's own schema: children follow their own ON DELETE, SET NULL columns are nulled,
rows referenced without a foreign key are left alone, and a NO ACTION reference refuses the run before
any delete."""

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select, text

from retention_pipeline.core import orphans
from retention_pipeline.core.cleanup import SchemaError, clean_table, prepare_database
from retention_pipeline.core.files import StorageRoots
from retention_pipeline.core.purge import BatchTooSlow
from retention_pipeline.core.queries import path_checks
from retention_pipeline.core.references import keeping_columns, references_to_parents
from retention_pipeline.core.schema import detections, events
from retention_pipeline_tests.camera_schema import CHILD_COLUMN, DETECTION_CHILDREN, EVENT_CHILDREN
from retention_pipeline_tests.conftest import both_shapes
from retention_pipeline_tests.dagster_helpers import execute, failure_messages, plan_config
from retention_pipeline_tests.factories import THUMBS, CameraWorld, comparable

camera_shape = pytest.mark.parametrize("schema_shape", ["camera"], indirect=True)


def _scalar(world: CameraWorld, sql: str, **params: object) -> object:
    with world.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def _child(world: CameraWorld, table: str, column: str, parent_id: int) -> None:
    with world.engine.begin() as conn:
        if table == "zone_anomalies":
            conn.execute(
                text("INSERT INTO zone_anomalies (id, detection_id) VALUES (:k, :p)"),
                {"k": f"z{parent_id}", "p": parent_id},
            )
        else:
            conn.execute(text(f"INSERT INTO {table} ({column}) VALUES (:p)"), {"p": parent_id})


@camera_shape
def test_children_follow_their_own_on_delete_and_references_without_a_foreign_key_dangle(world: CameraWorld):
    old_event, new_event = (
        world.event(world.old(), alerts_count=2),
        world.event(world.recent(), alerts_count=1),
    )
    old_det, new_det = world.detection(world.old()), world.detection(world.recent())
    for table, _action in EVENT_CHILDREN.items():
        column = CHILD_COLUMN.get(table, "event_id")
        _child(world, table, column, old_event)
        _child(world, table, column, new_event)
    for table in DETECTION_CHILDREN:
        _child(world, table, "detection_id", old_det)
        _child(world, table, "detection_id", new_det)
    with world.engine.begin() as conn:  # references with no foreign key at all
        conn.execute(
            text(
                "INSERT INTO logs (timestamp, level, component, message, event_id, detection_id)"
                " VALUES (:at, 'INFO', 'c', 'm', :e, :d)"
            ),
            {"at": world.now, "e": old_event, "d": old_det},
        )
        conn.execute(
            text("INSERT INTO entities (id, primary_detection_id) VALUES (:u, :d)"),
            {"u": str(uuid.uuid4()), "d": old_det},
        )

    stats = world.run()

    assert (stats.events_deleted, stats.detections_deleted, stats.alerts_deleted) == (1, 1, 2)
    assert world.ids(events) == {new_event} and world.ids(detections) == {new_det}
    for table, action in {**EVENT_CHILDREN, **DETECTION_CHILDREN}.items():
        column = CHILD_COLUMN.get(table, "event_id" if table in EVENT_CHILDREN else "detection_id")
        survivors = _scalar(world, f"SELECT count(*) FROM {table}")
        nulled = _scalar(world, f"SELECT count(*) FROM {table} WHERE {column} IS NULL")
        if action == "CASCADE":
            assert (survivors, nulled) == (1, 0), table
        else:
            assert (survivors, nulled) == (2, 1), table
    assert _scalar(world, "SELECT count(*) FROM alerts") == 1
    assert _scalar(world, "SELECT event_id FROM logs") == old_event  # left dangling, as the camera expects
    assert _scalar(world, "SELECT primary_detection_id FROM entities") == old_det


def _blocker(world: CameraWorld, detection_id: int) -> None:
    """A table of the operator's own that references detections with NO ACTION (the default)."""
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE review_notes (id INTEGER PRIMARY KEY,"
                " detection_id INTEGER REFERENCES detections (id))"
            )
        )
        conn.execute(text("INSERT INTO review_notes (id, detection_id) VALUES (1, :d)"), {"d": detection_id})


@both_shapes
def test_a_no_action_reference_refuses_the_run_before_any_delete_naming_table_and_column(world: CameraWorld):
    world.event(world.old())
    expired = [world.detection(world.old()) for _ in range(30)]
    _blocker(world, expired[-1])
    before = (world.ids(events), world.ids(detections))

    with pytest.raises(
        SchemaError, match=r"review_notes\.detection_id -> detections \(ON DELETE NO ACTION\)"
    ):
        world.run(batch_size=5)

    assert (world.ids(events), world.ids(detections)) == before  # not one batch committed


@both_shapes
def test_data_cleanup_fails_at_plan_cleanup_on_a_no_action_reference_and_deletes_nothing(world: CameraWorld):
    expired = world.detection(world.old())
    _blocker(world, expired)
    with dg.instance_for_test() as instance:
        result = execute(world, instance, plan_config(dry_run=False, reference_time=world.now.isoformat()))

    assert not result.success
    assert "review_notes.detection_id" in failure_messages(result)
    assert "ON DELETE CASCADE or SET NULL" in failure_messages(result)
    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    assert failed == ["plan_cleanup"]
    assert world.ids(detections) == {expired}


@camera_shape
def test_every_reference_to_events_and_detections_is_found_with_its_action_and_index(world: CameraWorld):
    found = {(r.table, r.column): r for r in references_to_parents(world.engine)}

    assert found[("threat_detections", "detection_id")].on_delete == "CASCADE"
    assert not found[("threat_detections", "detection_id")].indexed
    assert found[("threat_detections", "detection_id")].slows_deletes
    assert found[("zone_anomalies", "detection_id")].on_delete == "SET NULL"
    assert found[("pose_results", "detection_id")].indexed  # its UNIQUE constraint
    assert found[("event_detections", "detection_id")].indexed
    assert found[("alerts", "event_id")].deleted_first
    assert ("logs", "event_id") not in found  # no foreign key
    assert not any(r.blocks_deletes for r in found.values())
    concurrently = " CONCURRENTLY" if world.engine.dialect.name == "postgresql" else ""
    assert found[("threat_detections", "detection_id")].index_advice(world.engine) == [
        f"CREATE INDEX{concurrently} ix_threat_detections_detection_id ON threat_detections (detection_id);"
    ]


@camera_shape
@pytest.mark.parametrize(
    ("where", "indexed"),
    [
        # Every look-up of a value implies the key is not null, so such an index serves the cascade.
        ("detection_id IS NOT NULL", True),
        # It serves only the rows its WHERE selects; a cascade's look-ups of the others scan the table.
        ("detection_id > 1000", False),
    ],
)
def test_a_partial_index_on_a_foreign_key_counts_as_indexing_it_only_if_it_holds_every_key(
    world: CameraWorld, where: str, indexed: bool
):
    with world.engine.begin() as conn:
        conn.execute(text(f"CREATE INDEX ix_partial ON threat_detections (detection_id) WHERE {where}"))

    found = {(r.table, r.column): r for r in references_to_parents(world.engine)}

    assert found[("threat_detections", "detection_id")].indexed is indexed
    assert found[("threat_detections", "detection_id")].slows_deletes is not indexed


@pytest.mark.parametrize("schema_shape", ["ours"], indirect=True)
@pytest.mark.parametrize("declared", ["INTEGER", "any"])
def test_a_zone_anomalies_column_of_any_declared_type_is_read_as_text(world: CameraWorld, declared: str):
    # The camera system's table is not ours: a typeless SQLite column or a PostgreSQL domain over text
    # still names files; an integer one names none, and must not stop the run either.
    typed = declared
    if declared == "any":
        typed = "url_text" if world.engine.dialect.name == "postgresql" else ""
        if typed:
            with world.engine.begin() as conn:
                conn.execute(text("CREATE DOMAIN url_text AS text"))
    shared = world.file(f"{THUMBS}/anomaly.jpg")
    with world.engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE zone_anomalies (id VARCHAR(64) PRIMARY KEY, thumbnail_url {typed})"))
        if declared == "any":
            conn.execute(
                text("INSERT INTO zone_anomalies (id, thumbnail_url) VALUES ('z', :p)"), {"p": shared}
            )
        else:
            conn.execute(text("INSERT INTO zone_anomalies (id, thumbnail_url) VALUES ('z', 7)"))
    world.detection(world.old(), thumbnail=shared)

    stats = world.run()

    assert keeping_columns(world.engine) == [("zone_anomalies", "thumbnail_url")]
    kept = declared == "any"
    assert world.exists(shared) is kept
    assert (stats.thumbnails_deleted, stats.files_kept_shared) == ((0, 1) if kept else (1, 0))


@camera_shape
def test_a_partition_left_detached_without_a_media_column_keeps_the_others_files_and_stops_nothing(
    postgresql_only: None, world: CameraWorld
):
    # Named as a killed run names a detached week; it predates the file_path column (or lost it).
    kept = world.file(f"{THUMBS}/detached.jpg")
    with world.engine.begin() as conn:
        conn.execute(text("CREATE TABLE retention_detached_detections__w9 (id INTEGER, thumbnail_path TEXT)"))
        conn.execute(text("INSERT INTO retention_detached_detections__w9 VALUES (1, :p)"), {"p": kept})
    world.detection(world.old(), thumbnail=kept)

    stats = world.run()

    assert world.exists(kept) and stats.files_kept_shared == 1


@camera_shape
def test_a_detection_purge_too_slow_for_its_cap_names_the_unindexed_foreign_keys_to_fix(
    postgresql_only: None, world: CameraWorld
):
    world.detection(world.old())
    prepare_database(world.engine)
    with world.engine.begin() as conn:  # one detection's delete outlasts the 80 ms cap, as a huge child would
        conn.execute(
            text(
                "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " PERFORM pg_sleep(0.2); RETURN OLD; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER slow BEFORE DELETE ON detections FOR EACH ROW EXECUTE FUNCTION slow_delete()"
            )
        )

    with pytest.raises(BatchTooSlow, match="5 batches of a single row") as raised:
        clean_table(world.engine, world.plan(), "detections", lambda _message: None)

    message = str(raised.value)
    assert "threat_detections, zone_anomalies, whose foreign key has no index" in message
    assert "CREATE INDEX CONCURRENTLY ix_threat_detections_detection_id ON threat_detections" in message
    assert world.count(detections) == 1


def test_a_sqlite_library_without_json_functions_refuses_the_run_before_any_delete(
    world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    # SQLite stages a reference check's names as a JSON array; PostgreSQL as a text array, never asked.
    monkeypatch.setattr(path_checks, "probe_json_functions", lambda: select(func.no_such_json_function()))
    expired = world.detection(world.old(), thumbnail=world.file(f"{THUMBS}/old.jpg"))

    if world.engine.dialect.name == "sqlite":
        with pytest.raises(SchemaError, match=r"SQLite library \(3\.[0-9.]+\) has no JSON functions"):
            world.run()
        assert world.ids(detections) == {expired} and world.exists(f"{THUMBS}/old.jpg")
    else:
        assert world.run().detections_deleted == 1
        assert world.ids(detections) == set() and not world.exists(f"{THUMBS}/old.jpg")


def _anomaly(world: CameraWorld, key: str, detection_id: int | None, thumbnail_url: str) -> None:
    with world.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO zone_anomalies (id, detection_id, thumbnail_url) VALUES (:k, :d, :u)"),
            {"k": key, "d": detection_id, "u": thumbnail_url},
        )


@camera_shape
@pytest.mark.parametrize("absolute", [False, True])
def test_a_thumbnail_a_zone_anomaly_still_names_outlives_the_detection_it_came_from(
    world: CameraWorld, absolute: bool
):
    # zone_anomalies keeps its rows when their detection goes (SET NULL), and with them its thumbnails.
    shared = world.file(f"{THUMBS}/anomaly.jpg")
    own = world.file(f"{THUMBS}/own.jpg")
    expired = world.detection(world.old(), thumbnail=shared)
    world.detection(world.old(), thumbnail=own)
    _anomaly(world, "z1", expired, str(world.media / shared) if absolute else shared)

    preview = world.run(dry_run=True)
    real = world.run()

    assert comparable(preview) == comparable(real)
    assert (real.detections_deleted, real.thumbnails_deleted, real.files_kept_shared) == (2, 1, 1)
    assert world.exists(shared) and not world.exists(own)
    assert _scalar(world, "SELECT count(*) FROM zone_anomalies WHERE detection_id IS NULL") == 1


@camera_shape
def test_the_orphan_sweep_leaves_a_thumbnail_only_a_zone_anomaly_names(world: CameraWorld, tmp_path: Path):
    named = world.file(f"{THUMBS}/anomaly.jpg")
    orphan = world.file(f"{THUMBS}/orphan.jpg")
    for n in range(3):  # live files enough that one orphan stays under the sweep's safety stop
        world.detection(world.recent(), thumbnail=world.file(f"{THUMBS}/live{n}.jpg"))
    _anomaly(world, "z1", None, named)
    stamp = time.time() - 48 * 3600
    for path in (named, orphan, *(f"{THUMBS}/live{n}.jpg" for n in range(3))):
        os.utime(world.media / path, (stamp, stamp))
    roots = StorageRoots.from_dirs(world.media, [Path(THUMBS)])
    rules = orphans.OrphanPolicy(dry_run=False)
    now = datetime.now(UTC)

    scanned = orphans.scan_for_orphans(world.engine, roots, rules, tmp_path / "o.csv", now, lambda _m: None)
    swept = orphans.delete_orphans(world.engine, roots, rules, scanned, now, lambda _m: None)

    assert (swept.orphans_found, swept.orphans_deleted) == (1, 1)
    assert world.exists(named) and not world.exists(orphan)


@both_shapes
def test_a_child_whose_cascade_is_declared_inline_on_its_column_is_followed_not_refused(world: CameraWorld):
    # SQLAlchemy's SQLite reflection misses ON DELETE on a column's own REFERENCES clause.
    expired, kept = world.detection(world.old()), world.detection(world.recent())
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE face_crops (id INTEGER PRIMARY KEY,"
                " detection_id INTEGER REFERENCES detections (id) ON DELETE CASCADE)"
            )
        )
        for n, detection in enumerate((expired, kept)):
            conn.execute(
                text("INSERT INTO face_crops (id, detection_id) VALUES (:n, :d)"), {"n": n, "d": detection}
            )

    found = {(r.table, r.column): r for r in references_to_parents(world.engine)}
    stats = world.run()

    assert found[("face_crops", "detection_id")].on_delete == "CASCADE"
    assert stats.detections_deleted == 1 and world.ids(detections) == {kept}
    assert _scalar(world, "SELECT detection_id FROM face_crops") == kept
