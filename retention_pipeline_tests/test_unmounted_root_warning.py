"""The data_cleanup job's file step tells the operator of a storage root that looks unmounted."""

import logging

import dagster as dg

from retention_pipeline_tests.core.test_unmounted_roots import mount, queued_paths, unmount
from retention_pipeline_tests.dagster_helpers import execute, plan_config
from retention_pipeline_tests.factories import CLIPS, CameraWorld


def test_the_file_step_warns_once_of_an_unmounted_root(world: CameraWorld, instance: dg.DagsterInstance):
    for i in range(2):
        world.event(world.old(), clip=world.file(f"{CLIPS}/c{i}.mp4"))
    volume = unmount(world, CLIPS)

    result = execute(world, instance, plan_config(dry_run=False))

    assert result.success
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING and "is its volume mounted?" in entry.user_message
    ]
    assert warnings == [
        f"storage root {world.media / CLIPS} is missing or empty: is its volume mounted? its 2 queued files"
        " stay queued (not counted as missing) for the next run"
    ]
    mount(world, CLIPS, volume)
    assert queued_paths(world) == sorted(f"{CLIPS}/c{i}.mp4" for i in range(2))
