"""A role given every GRANT doctor prints but not owning the range-partitioned `logs` (PostgreSQL): no GRANT
lets it detach or drop a partition, so its run deletes the expired rows in batches, and doctor says why."""

import re
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from retention_pipeline.core.cleanup import prepare_database, run_cleanup
from retention_pipeline.core.doctor import diagnose
from retention_pipeline_tests.core.test_partitions import _partitions_left, _timestamps, log_world
from retention_pipeline_tests.factories import CameraWorld, login_role

__all__ = ["log_world"]  # the fixture


@pytest.fixture
def granted_role(log_world: CameraWorld) -> Iterator[Engine]:
    """An engine logged in as a role holding every right doctor asks for, owning no camera table."""
    world = log_world
    with login_role(world.engine, "tenant", "GRANT USAGE, CREATE ON SCHEMA public TO {role}") as engine:
        lacking = diagnose(engine, world.plan(dry_run=True)).blocking
        with world.engine.begin() as conn:
            for problem in lacking:
                conn.execute(text(re.search(r"run (GRANT [^;]*;)", problem)[1]))  # type: ignore[index]
        yield engine


def test_a_role_not_owning_a_partitioned_table_deletes_its_expired_rows_in_batches(
    postgresql_only: None, log_world: CameraWorld, granted_role: Engine
):
    world = log_world
    partitions = _partitions_left(world.engine)
    kept = [at for at in _timestamps(world.engine) if at >= world.log_cutoff]

    report = diagnose(granted_role, world.plan(dry_run=True))
    prepare_database(granted_role, world.policy)
    stats = run_cleanup(granted_role, world.plan())

    assert report.ok, report.blocking
    owner_warnings = [w for w in report.warnings if "does not own table logs" in w]
    assert len(owner_warnings) == 1 and "GRANT postgres TO" in owner_warnings[0]
    assert stats.logs_deleted == 11
    assert _timestamps(world.engine) == kept
    assert _partitions_left(world.engine) == partitions  # none dropped: emptied by the batches


def test_doctor_names_the_owner_of_a_partition_the_role_lacks_not_the_tables_own_owner(
    postgresql_only: None, log_world: CameraWorld, granted_role: Engine
):
    world = log_world
    role = granted_role.url.username
    with world.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE logs OWNER TO {role}"))  # its partitions stay postgres's

    report = diagnose(granted_role, world.plan(dry_run=True))

    owner_warnings = [w for w in report.warnings if "of table logs" in w]
    assert len(owner_warnings) == 1
    assert "does not own table logs" not in owner_warnings[0]  # it does: only its partitions it does not
    assert "does not own partitions logs_" in owner_warnings[0]
    assert (
        "(owner: postgres)" in owner_warnings[0]
        and "run as postgres or GRANT postgres TO" in owner_warnings[0]
    )


def test_doctor_names_every_owner_of_the_partitions_the_role_lacks_quoted_for_the_grant(
    postgresql_only: None, log_world: CameraWorld, granted_role: Engine
):
    world = log_world
    role = granted_role.url.username
    partition = sorted(_partitions_left(world.engine))[0]
    other = f"Camera Ops {uuid.uuid4().hex[:8]}"  # roles are the cluster's: not shared with another run
    with world.engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{other}"'))
    try:
        with world.engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE logs OWNER TO {role}"))
            conn.execute(text(f'ALTER TABLE {partition} OWNER TO "{other}"'))

        report = diagnose(granted_role, world.plan(dry_run=True))
    finally:
        with world.engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {partition} OWNER TO postgres"))
            conn.execute(text(f'DROP ROLE "{other}"'))

    owner_warnings = [w for w in report.warnings if "of table logs" in w]
    assert len(owner_warnings) == 1
    assert f"(owners: {other}, postgres)" in owner_warnings[0]
    # One GRANT a person can paste: no single role to run as.
    assert f'GRANT "{other}", postgres TO' in owner_warnings[0] and "run as" not in owner_warnings[0]
