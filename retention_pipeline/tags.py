"""Run tags shared by the jobs, the schedules, the CLI and the run history."""

# dagster.yaml limits runs carrying this tag to one at a time, across every retention job.
EXCLUSIVE_TAG = "retention_pipeline/exclusive"
EXCLUSIVE_TAGS = {EXCLUSIVE_TAG: "true"}
# Which process runs a run, so a later check can tell a dead run from a live one.
PID_TAG = "retention_pipeline/pid"
HOST_TAG = "retention_pipeline/host"
