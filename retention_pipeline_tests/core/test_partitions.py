"""A range-partitioned `logs` (PostgreSQL) loses its wholly expired partitions whole; the outcome is the
same rows and the same numbers as the batched delete of a plain `logs`, which SQLite runs instead."""

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from retention_pipeline.core.cleanup import clean_table, prepare_database
from retention_pipeline.core.policy import read_policy
from retention_pipeline.core.purge import partition_catalog, partition_ddl, partitions
from retention_pipeline.core.schema import logs
from retention_pipeline.core.stats import RowCounts
from retention_pipeline_tests.factories import THUMBS, CameraWorld, comparable, detached_partitions

# Daily partitions whose bounds fall half a day off the cutoff: P4 ends half a day before it, P5 straddles it.
BOUNDS_DAYS = (-4.5, -3.5, -2.5, -1.5, -0.5, 0.5, 1.5)


def _partition(engine: Engine, name: str, low: datetime, high: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(f"CREATE TABLE {name} PARTITION OF logs FOR VALUES FROM (:low) TO (:high)"),
            {"low": low, "high": high},
        )


def _partition_logs(world: CameraWorld) -> None:
    """Replace `logs` with one range-partitioned on its time column, with a default partition."""
    with world.engine.begin() as conn:
        conn.execute(text("DROP TABLE logs"))
        conn.execute(
            text(
                "CREATE TABLE logs (id SERIAL, timestamp TIMESTAMPTZ NOT NULL, level VARCHAR(10),"
                " component VARCHAR(50), message TEXT, PRIMARY KEY (id, timestamp))"
                " PARTITION BY RANGE (timestamp)"
            )
        )
        conn.execute(text("CREATE TABLE logs_default PARTITION OF logs DEFAULT"))
    bounds = [world.log_cutoff + timedelta(days=d) for d in BOUNDS_DAYS]
    for number, (low, high) in enumerate(itertools.pairwise(bounds), start=1):
        _partition(world.engine, f"logs_p{number}", low, high)


def _partitions_left(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'logs'::regclass"
                )
            ).scalars()
        )


def _timestamps(engine: Engine) -> list[datetime]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(logs.c.timestamp)).scalars())


@pytest.fixture
def log_world(world: CameraWorld) -> Iterator[CameraWorld]:
    """Log lines in every partition (and, on PostgreSQL, a partitioned `logs`): two in each day, one
    exactly at the cutoff, two older than the first partition (the default partition), two young."""
    on_postgresql = world.engine.dialect.name == "postgresql"
    if on_postgresql:
        _partition_logs(world)
    cutoff = world.log_cutoff
    for days in (-6.0, -5.0, -4.0, -3.9, -3.0, -2.9, -2.0, -1.9, -1.0, -0.9, -0.25, 0.25, 1.0):
        world.log(cutoff + timedelta(days=days))
    world.log(cutoff)
    yield world


def _expired(world: CameraWorld) -> int:
    return sum(1 for at in _timestamps(world.engine) if at < world.log_cutoff)


def test_expired_partitions_go_whole_and_every_number_is_the_batched_deletes(log_world: CameraWorld):
    world = log_world
    expired = _expired(world)
    kept = [at for at in _timestamps(world.engine) if at >= world.log_cutoff]

    preview = world.run(dry_run=True)
    stats = world.run()

    assert stats.logs_deleted == preview.logs_deleted == expired == 11
    assert stats.rows_deleted_by_table["logs"] == expired
    assert comparable(preview) == comparable(stats)
    assert _timestamps(world.engine) == kept  # the row at the cutoff and the young ones stay
    assert world.run().logs_deleted == 0
    if world.engine.dialect.name == "postgresql":
        # P1-P4 ended before the cutoff; P5 straddles it, P6 and the default partition stay.
        assert _partitions_left(world.engine) == {"logs_p5", "logs_p6", "logs_default"}


def test_a_run_killed_between_detach_and_drop_is_finished_by_the_next(
    postgresql_only: None, log_world: CameraWorld
):
    world = log_world
    expired = _expired(world)
    detached = f"{partition_catalog.DETACHED_PREFIX}logs__logs_p1"
    with world.engine.begin() as conn:  # the kill point: detached and renamed ours, not dropped
        conn.execute(text("ALTER TABLE logs DETACH PARTITION logs_p1"))
        conn.execute(text(f"ALTER TABLE logs_p1 RENAME TO {detached}"))

    stats = world.run()

    assert stats.logs_deleted == expired  # the detached partition's rows are counted once, by the next run
    with world.engine.connect() as conn:
        count = conn.execute(
            select(func.count())
            .select_from(text("pg_class"))
            .where(text("relname LIKE 'retention_detached%'"))
        ).scalar_one()
    assert count == 0
    assert _partitions_left(world.engine) == {"logs_p5", "logs_p6", "logs_default"}


def test_a_busy_parent_leaves_partitions_to_the_batched_delete(
    postgresql_only: None, log_world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    world = log_world
    expired = _expired(world)
    monkeypatch.setattr(partition_ddl, "DETACH_RETRY_DELAYS_S", (0.05,))
    reader = world.engine.connect()
    reader.execute(text("SELECT count(*) FROM logs"))  # an open transaction holding ACCESS SHARE on logs
    try:
        stats = world.run()
    finally:
        reader.rollback()
        reader.close()

    assert stats.logs_deleted == expired
    assert all(at >= world.log_cutoff for at in _timestamps(world.engine))
    # No partition was detached; the batched delete emptied the expired ones.
    assert {"logs_p1", "logs_p2", "logs_p3", "logs_p4"} <= _partitions_left(world.engine)


def test_doctor_says_which_tables_are_partitioned_and_how_many_partitions_would_go(log_world: CameraWorld):
    from retention_pipeline.core.doctor import diagnose
    from retention_pipeline.core.doctor_text import render

    report = diagnose(log_world.engine, log_world.plan(dry_run=True))

    if log_world.engine.dialect.name == "postgresql":
        assert report.partitions_to_drop == {"logs": 4}
        assert "logs is range-partitioned: a run would drop 4 wholly expired partitions whole" in render(
            report
        )
    else:
        assert report.partitions_to_drop == {}


def _killed_after_the_detach(world: CameraWorld, monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    """Run once, killed at partition_ddl's `at` (the count or the drop) of the first detached partition."""

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt("killed after a partition was detached")

    monkeypatch.setattr(partition_ddl, at, killed)
    with pytest.raises(KeyboardInterrupt):
        world.run()
    monkeypatch.undo()


def test_a_partition_a_killed_run_detached_is_counted_and_dropped_by_the_next(
    postgresql_only: None, log_world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    world = log_world
    expired = _expired(world)
    _killed_after_the_detach(world, monkeypatch, "drop")
    assert detached_partitions(world.engine) == {"retention_detached_logs__logs_p1": 2}
    assert "logs_p1" not in _partitions_left(world.engine)

    stats = world.run()

    assert stats.logs_deleted == expired  # the killed run reported nothing; each row is counted once
    assert detached_partitions(world.engine) == {}
    assert all(at >= world.log_cutoff for at in _timestamps(world.engine))
    assert _partitions_left(world.engine) == {"logs_p5", "logs_p6", "logs_default"}


def test_a_detached_partition_with_nothing_hanging_off_is_dropped_whatever_took_its_range(
    postgresql_only: None, log_world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    world = log_world
    expired = _expired(world)
    _killed_after_the_detach(world, monkeypatch, "count")
    # While P1 was detached, a late line of its range went to the default partition.
    world.log(world.log_cutoff - timedelta(days=4.2))

    stats = world.run()

    assert stats.logs_deleted == expired + 1  # P1's two lines dropped, the late one through the batches
    assert detached_partitions(world.engine) == {}
    assert all(at >= world.log_cutoff for at in _timestamps(world.engine))


def test_a_partition_whose_name_needs_quoting_goes_whole_too(postgresql_only: None, log_world: CameraWorld):
    world = log_world
    expired = _expired(world)
    with world.engine.begin() as conn:
        conn.execute(text('ALTER TABLE logs_p1 RENAME TO "Logs:p%1""x"'))

    stats = world.run()

    assert stats.logs_deleted == expired
    assert _partitions_left(world.engine) == {"logs_p5", "logs_p6", "logs_default"}
    assert detached_partitions(world.engine) == {}


@pytest.mark.parametrize(
    "camera_does",
    ["DROP TABLE logs_p1", "ALTER TABLE logs DETACH PARTITION logs_p1"],
    ids=["dropped", "detached"],
)
def test_a_partition_the_camera_takes_away_before_our_detach_is_passed_over_uncounted(
    postgresql_only: None, log_world: CameraWorld, monkeypatch: pytest.MonkeyPatch, camera_does: str
):
    world = log_world
    expired = _expired(world)
    detach = partitions._detach

    def camera_first(engine: Engine, *args: Any) -> tuple[str | None, str, float]:
        if "logs_p1" in _partitions_left(engine):  # the camera's own partition manager, just before us
            with engine.begin() as conn:
                conn.execute(text(camera_does))
        return detach(engine, *args)

    monkeypatch.setattr(partitions, "_detach", camera_first)

    stats = world.run()

    assert stats.logs_deleted == expired - 2  # P1's two lines were not ours to count
    assert all(at >= world.log_cutoff for at in _timestamps(world.engine))
    assert _partitions_left(world.engine) == {"logs_p5", "logs_p6", "logs_default"}
    assert detached_partitions(world.engine) == {}


def test_a_drop_repeated_after_its_commit_was_lost_finds_the_partition_gone(
    postgresql_only: None, log_world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    world = log_world
    expired = _expired(world)
    drop = partition_ddl.drop
    lost: list[str] = []

    def reply_lost(engine: Engine, name: str) -> tuple[bool, float]:
        done = drop(engine, name)
        if not lost:  # committed, then the connection went before the reply came
            lost.append(name)
            raise OperationalError("DROP TABLE", {}, Exception("server closed the connection unexpectedly"))
        return done

    monkeypatch.setattr(partition_ddl, "drop", reply_lost)

    stats = world.run()

    assert lost and stats.logs_deleted == expired  # its rows counted once
    assert _partitions_left(world.engine) == {"logs_p5", "logs_p6", "logs_default"}
    assert detached_partitions(world.engine) == {}


def test_a_purge_failing_after_some_partitions_went_counts_their_rows_as_committed(
    postgresql_only: None, log_world: CameraWorld, monkeypatch: pytest.MonkeyPatch
):
    world = log_world
    expired = _expired(world)
    drop, drops = partition_ddl.drop, [0]

    def third_fails(engine: Engine, name: str) -> tuple[bool, float]:
        drops[0] += 1
        if drops[0] == 3:
            raise RuntimeError("permission denied for table")
        return drop(engine, name)

    monkeypatch.setattr(partition_ddl, "drop", third_fails)
    prepare_database(world.engine)
    committed = RowCounts()

    with pytest.raises(RuntimeError, match="permission denied"):
        clean_table(world.engine, world.plan(), "logs", lambda _message: None, committed=committed)

    # Two partitions of two rows each went before the failure: an emergency pass counts them. The third,
    # detached but not dropped, is counted by the run that drops it, as after a kill.
    assert committed.deleted == 4
    monkeypatch.undo()
    assert world.run().logs_deleted == expired - 4 and _expired(world) == 0


SNAPSHOTS_POLICY = "tables:\n  - table: snapshots\n    time_column: taken_at\n    retention_days: 30\n"


def _partitioned_on_taken_at(world: CameraWorld, name: str, columns: str = "") -> None:
    """A policy table `name` range-partitioned on taken_at: a default partition and one week, w1, from 20 to
    10 days before the cutoff. Names are quoted, so mixed case is kept."""
    with world.engine.begin() as conn:
        conn.execute(
            text(
                f'CREATE TABLE "{name}" (id SERIAL, taken_at TIMESTAMPTZ NOT NULL, {columns}'
                " PRIMARY KEY (id, taken_at)) PARTITION BY RANGE (taken_at)"
            )
        )
        conn.execute(text(f'CREATE TABLE "{name}_default" PARTITION OF "{name}" DEFAULT'))
        conn.execute(
            text(f'CREATE TABLE "{name}_w1" PARTITION OF "{name}" FOR VALUES FROM (:low) TO (:high)'),
            {"low": world.cutoff - timedelta(days=20), "high": world.cutoff - timedelta(days=10)},
        )


def test_a_detached_partition_lacking_a_media_column_the_table_gained_since_is_finished_by_the_next_run(
    postgresql_only: None, world: CameraWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    policy = tmp_path / "policy.yaml"
    policy.write_text(SNAPSHOTS_POLICY + "    files: {image_path: thumbnails}\n")
    world.policy = read_policy(policy)
    _partitioned_on_taken_at(world, "snapshots", "image_path TEXT,")
    old = [world.file(f"{THUMBS}/old{days}.jpg") for days in (15, 12)]
    with world.engine.begin() as conn:
        for days, path in zip((15, 12), old, strict=True):
            conn.execute(
                text("INSERT INTO snapshots (taken_at, image_path) VALUES (:at, :path)"),
                {"at": world.cutoff - timedelta(days=days), "path": path},
            )
    _killed_after_the_detach(world, monkeypatch, "count_and_sum")
    assert detached_partitions(world.engine) == {"retention_detached_snapshots__snapshots_w1": 2}
    # Then the camera adds a thumbnail column, and the policy names it.
    with world.engine.begin() as conn:
        conn.execute(text("ALTER TABLE snapshots ADD COLUMN thumb_path TEXT"))
    policy.write_text(SNAPSHOTS_POLICY + "    files: {image_path: thumbnails, thumb_path: thumbnails}\n")
    world.policy = read_policy(policy)

    stats = world.run()

    assert stats.rows_deleted_by_table["snapshots"] == 2
    assert detached_partitions(world.engine) == {}
    assert not any(world.exists(path) for path in old)


def test_a_policy_table_named_in_mixed_case_loses_its_expired_partitions_whole(
    postgresql_only: None, world: CameraWorld, tmp_path: Path
):
    policy = tmp_path / "policy.yaml"
    policy.write_text(SNAPSHOTS_POLICY.replace("snapshots", "AuditLog"))
    world.policy = read_policy(policy)
    _partitioned_on_taken_at(world, "AuditLog")
    with world.engine.begin() as conn:
        for days in (15, 12, -1):
            conn.execute(
                text('INSERT INTO "AuditLog" (taken_at) VALUES (:at)'),
                {"at": world.cutoff - timedelta(days=days)},
            )

    preview = world.run(dry_run=True)
    stats = world.run()

    assert stats.rows_deleted_by_table["AuditLog"] == preview.rows_deleted_by_table["AuditLog"] == 2
    with world.engine.connect() as conn:
        left = conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = '\"AuditLog\"'::regclass"
            )
        ).scalars()
        assert set(left) == {"AuditLog_default"}  # the expired week went whole, not row by row
