"""The data_cleanup job: plan, purge rows in dependency order, delete their files, report."""

import dagster as dg

from .job_tracker import publish_failure
from .ops import (
    delete_expired_files,
    plan_cleanup,
    plan_file_chunks,
    purge_declared_tables,
    purge_detections,
    purge_events,
    purge_gpu_stats,
    purge_logs,
    relieve_disk_pressure,
    report_cleanup,
)
from .orphan_ops import (
    delete_orphaned_files,
    plan_orphan_sweep,
    report_orphan_sweep,
    scan_orphaned_files,
)
from .tags import EXCLUSIVE_TAGS


@dg.graph(
    description=(
        "Enforce the retention policy: delete expired events, detections, GPU stats, logs and the"
        " tables of RETENTION_POLICY_FILE in short batches, then their thumbnails, clips (and images)."
        " A manual launch with the default config is a dry run."
    )
)
def data_cleanup_graph() -> None:
    plan = plan_cleanup()
    detections = purge_detections(plan)
    events = purge_events(plan, detections)
    declared = purge_declared_tables(plan, events)
    files = plan_file_chunks(plan, detections, declared).map(lambda chunk: delete_expired_files(plan, chunk))
    gpu_stats, logs = purge_gpu_stats(plan), purge_logs(plan)
    stats = report_cleanup(plan, detections, events, gpu_stats, logs, declared, files.collect())
    relieve_disk_pressure(plan, stats)


def build_data_cleanup_job(executor_def: dg.ExecutorDefinition = dg.in_process_executor) -> dg.JobDefinition:
    """data_cleanup on an executor of your choice.

    The default, in-process, suits a single machine: every op is I/O-bound on one database and a
    process per op costs about 2 s. With a multiprocess, Celery or Kubernetes executor the mapped
    `delete_expired_files` shares run in parallel workers.
    """
    return data_cleanup_graph.to_job(
        name="data_cleanup", tags=EXCLUSIVE_TAGS, executor_def=executor_def, hooks={publish_failure}
    )


data_cleanup = build_data_cleanup_job()


@dg.job(
    description=(
        "Find media files that no row references and delete those older than min_age_hours, with"
        " safety stops against a wrong or empty database. A manual launch with the default config is"
        " a dry run."
    ),
    tags=EXCLUSIVE_TAGS,
    executor_def=dg.in_process_executor,
    hooks={publish_failure},
)
def orphaned_file_cleanup() -> None:
    plan = plan_orphan_sweep()
    report_orphan_sweep(delete_orphaned_files(plan, scan_orphaned_files(plan)))
