"""A role whose UPDATE on the locked tables is granted on one column only: enough for the batches'
SELECT ... FOR UPDATE (PostgreSQL), so doctor and the run accept it and the run deletes what expired."""

import re

from sqlalchemy import text
from sqlalchemy.engine import Engine

from retention_pipeline.core.cleanup import prepare_database, run_cleanup
from retention_pipeline.core.doctor import diagnose
from retention_pipeline.core.schema import detections, events
from retention_pipeline_tests.factories import CameraWorld
from retention_pipeline_tests.test_doctor_checks import bare_role

__all__ = ["bare_role"]  # the fixture


def test_update_on_one_column_is_enough_to_lock_the_batches(
    postgresql_only: None, world: CameraWorld, bare_role: Engine
):
    expired = {world.detection(world.old()) for _ in range(2)}
    kept = world.detection(world.recent())
    old_event = world.event(world.old())
    lacking = diagnose(bare_role, world.plan(dry_run=True)).blocking
    grants = [re.search(r"run (GRANT [^;]*;)", p)[1] for p in lacking]  # type: ignore[index]
    with world.engine.begin() as conn:
        for grant in grants:
            # The row locks' UPDATE on one column, not the table: GRANT UPDATE (id) ON detections ...
            table_update = re.match(r"GRANT (.*)UPDATE, (.*) ON (detections|events) TO (.*);", grant)
            if table_update:
                select_, rest, table, role = table_update.groups()
                conn.execute(text(f"GRANT {select_}{rest} ON {table} TO {role}"))
                conn.execute(text(f"GRANT UPDATE (id) ON {table} TO {role}"))
            else:
                conn.execute(text(grant))

    report = diagnose(bare_role, world.plan(dry_run=True))
    prepare_database(bare_role, world.policy, delete_images=False)
    stats = run_cleanup(bare_role, world.plan())

    assert report.ok, report.blocking
    assert stats.detections_deleted == 2 and stats.events_deleted == 1
    assert world.ids(detections) == {kept} and old_event not in world.ids(events)
    assert not world.ids(detections) & expired
