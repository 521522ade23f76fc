"""Plain-Python retention logic; nothing here imports Dagster."""
