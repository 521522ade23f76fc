# Every target installs what it needs into .venv first, so a fresh clone needs only Python 3.11+.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_HOME

.PHONY: install demo test lint dev bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Builds the demo database and media tree under data/, then a dry run and a real run of data_cleanup.
demo: install
	$(BIN)/retention-pipeline demo
	$(BIN)/retention-pipeline run --dry-run
	$(BIN)/retention-pipeline run
	$(BIN)/retention-pipeline status --limit 2

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# The whole suite: lint, types, then every test on SQLite and on PostgreSQL.
test: lint
	$(BIN)/pytest

# The Dagster UI and daemon on 127.0.0.1:3000, with the daily schedule.
dev: install
	mkdir -p "$(DAGSTER_HOME)"
	test -f "$(DAGSTER_HOME)/dagster.yaml" || cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

bench: install
	$(BIN)/python benchmarks/bench_cleanup.py

clean:
	rm -rf $(VENV) .dagster_home data .pytest_cache .mypy_cache .ruff_cache
