# The README's commands. Everything installs into .venv with Python 3.11.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install demo ui test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

## Generate synthetic camera videos and run the pipeline on the embedded default.
demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/anpr demo

## Open the Dagster UI (webserver + daemon) on the same embedded instance as the demo.
ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml

## Start the test servers this machine provides (Postgres) and run the whole suite.
test: install
	bash .ci/start_services.sh
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -q

## ruff: lint rules and formatting (`ruff format anpr_pipeline anpr_pipeline_tests` fixes the latter).
lint: install
	$(BIN)/ruff check anpr_pipeline anpr_pipeline_tests
	$(BIN)/ruff format --check anpr_pipeline anpr_pipeline_tests

bench: install
	$(BIN)/anpr bench --json bench.json

clean:
	rm -rf .anpr_data .dagster_home demo_report.json
