# Every target installs what it needs into .venv first, so a fresh clone needs only Python 3.11+.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_HOME

.PHONY: install instance demo test lint dev bench bench-rows bench-full bench-load clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Dagster reads dagster.yaml (run queue, one cleanup at a time, run monitoring) from DAGSTER_HOME.
# An existing one is kept: it may point at PostgreSQL storage.
instance:
	mkdir -p "$(DAGSTER_HOME)"
	test -f "$(DAGSTER_HOME)/dagster.yaml" || cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

# The demo always works on its own files under data/, whatever DATABASE_URL says in your shell.
DEMO_ENV := DATABASE_URL=sqlite:///$(CURDIR)/data/retention.db MEDIA_ROOT=$(CURDIR) \
	THUMBNAIL_DIR=data/thumbnails CLIPS_DIR=data/clips IMAGES_DIR=data/images DELETE_IMAGES=true

# Builds the demo database and media tree under data/, then a dry run and a real run of data_cleanup.
demo: install instance
	$(BIN)/retention-pipeline demo
	@echo "== dry run: what data_cleanup would delete =="
	$(DEMO_ENV) $(BIN)/retention-pipeline run --dry-run
	@echo "== real run =="
	$(DEMO_ENV) $(BIN)/retention-pipeline run
	@echo "== retention-pipeline status =="
	$(DEMO_ENV) $(BIN)/retention-pipeline status --limit 2
	@echo "== orphaned-file sweep, dry run =="
	$(DEMO_ENV) $(BIN)/retention-pipeline orphans

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# The whole suite: lint, types, then every test on SQLite and on PostgreSQL.
test: lint
	$(BIN)/pytest

# The Dagster UI and daemon on 127.0.0.1:3000, with the daily schedule.
dev: install instance
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

# The benchmarks measure the camera system's own schema (no path indexes) unless given --shape ours; they
# import its DDL from the test package, hence PYTHONPATH.
BENCH := PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks

# 100k detections on both engines against the floor, then the same data without and with indexes on the path
# columns (and on the children's foreign keys), then partitioned logs and gpu_stats (PostgreSQL, 2M + 1M
# rows, under a minute): 6-9 minutes here.
bench: install
	$(BENCH)/bench_cleanup.py --sizes 100000
	$(BENCH)/bench_camera_shape.py --sizes 100000
	$(BENCH)/bench_partitions.py

# 1M detections on both engines without files: the database figures (rows/s, longest transaction, db time
# against the floor); both engines 4.5-6 minutes here.
bench-rows: install
	$(BENCH)/bench_cleanup.py --sizes 1000000 --rows-only

# About 45 minutes on this disk, most of it creating and unlinking 2.8 million files.
bench-full: install
	$(BENCH)/bench_cleanup.py --sizes 100000,1000000
	$(BENCH)/bench_camera_shape.py --sizes 100000,1000000
	$(BENCH)/bench_partitions.py

# PostgreSQL only: every batch's held time and a camera writer's commit times at 1M, on a quiet server and
# while another database bulk-loads on it (3.5 minutes here).
bench-load: install
	$(BENCH)/bench_under_load.py --n 1000000

clean:
	rm -rf $(VENV) .dagster_home data .pytest_cache .mypy_cache .ruff_cache
