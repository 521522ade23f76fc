"""The data_cleanup job: plan, purge rows in dependency order, delete their files, report."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import ValidationError

from .config import CleanupConfig, OrphanSweepConfig
from .core.options import readable
from .failed_runs import retag_failed_run
from .file_ops import delete_expired_files, plan_file_chunks
from .job_tracker import publish_failure
from .ops import (
    plan_cleanup,
    purge_declared_tables,
    purge_detections,
    purge_events,
    purge_gpu_stats,
    purge_logs,
    report_cleanup,
)
from .orphan_ops import (
    delete_orphaned_files,
    plan_orphan_sweep,
    report_orphan_sweep,
    scan_orphaned_files,
)
from .pressure_ops import relieve_disk_pressure
from .tags import EXCLUSIVE_TAGS


def refusing_bad_values(
    graph: dg.GraphDefinition, configs: Mapping[str, type[dg.Config]], **job_args: Any
) -> dg.JobDefinition:
    """The graph as a job whose launch is refused when an op's typed config breaks its model's bounds.

    Dagster's config schema has no ranges, so the Launchpad alone would accept `retention_days: 0` and the
    run would fail in its first step. A config mapping runs when a run is launched, before the run
    exists; this one keeps the job's own schema (resources as given, checked by the job) and passes the
    config through unchanged once every model accepts it.
    """

    def check(run_config: dict[str, Any]) -> dict[str, Any]:
        problems = []
        for op_name, model in configs.items():
            values = ((run_config.get("ops") or {}).get(op_name) or {}).get("config") or {}
            try:
                model(**values)
            except ValidationError as exc:
                problems.append(f"{op_name}: {readable(exc)}")
        if problems:
            raise dg.DagsterInvalidConfigError(
                "Invalid run config, nothing was launched: " + "; ".join(problems), [], run_config
            )
        return run_config

    own_schema = graph.to_job(**job_args).run_config_schema.run_config_schema_type
    assert isinstance(own_schema, dg.Shape)  # a job's run config is always a Shape of its sections
    fields = dict(own_schema.fields)
    # Resources are bound later (Definitions, execute_in_process); their config passes to the job's check.
    fields["resources"] = dg.Field(dg.Permissive(), is_required=False)
    return graph.to_job(config=dg.ConfigMapping(config_fn=check, config_schema=dg.Shape(fields)), **job_args)


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
    gpu_stats, logs = purge_gpu_stats(plan), purge_logs(plan)
    chunks = plan_file_chunks(plan, detections, declared, gpu_stats, logs)
    files = chunks.map(lambda chunk: delete_expired_files(plan, chunk))
    stats = report_cleanup(plan, detections, events, gpu_stats, logs, declared, files.collect())
    relieve_disk_pressure(plan, stats)


def build_data_cleanup_job(executor_def: dg.ExecutorDefinition = dg.in_process_executor) -> dg.JobDefinition:
    """data_cleanup on an executor of your choice.

    The default, in-process, suits a single machine: every op is I/O-bound on one database and a
    process per op costs about 2 s. With a multiprocess, Celery or Kubernetes executor the mapped
    `delete_expired_files` shares run in parallel workers.
    """
    return refusing_bad_values(
        data_cleanup_graph,
        {"plan_cleanup": CleanupConfig},
        name="data_cleanup",
        tags=EXCLUSIVE_TAGS,
        executor_def=executor_def,
        hooks={publish_failure, retag_failed_run},
    )


data_cleanup = build_data_cleanup_job()


@dg.graph(
    description=(
        "Find media files that no row references and delete those older than min_age_hours, with"
        " safety stops against a wrong or empty database. A manual launch with the default config is"
        " a dry run."
    )
)
def orphaned_file_cleanup_graph() -> None:
    plan = plan_orphan_sweep()
    report_orphan_sweep(delete_orphaned_files(plan, scan_orphaned_files(plan)))


orphaned_file_cleanup = refusing_bad_values(
    orphaned_file_cleanup_graph,
    {"plan_orphan_sweep": OrphanSweepConfig},
    name="orphaned_file_cleanup",
    tags=EXCLUSIVE_TAGS,
    executor_def=dg.in_process_executor,
    hooks={publish_failure, retag_failed_run},
)
