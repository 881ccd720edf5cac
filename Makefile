# The two set-up commands are `make demo` and `make test`; each builds .venv when it is missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo
# Tools the project starts (uvicorn under `clinical serve`, prefect, mlflow) come from the venv.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# No usage telemetry from MLflow or Prefect: nothing leaves the machine but calls to configured servers.
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := true

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipelines.demo --workdir $(DEMO)

lint: $(STAMP)
	$(BIN)/ruff check clinical pipelines tests benchmarks
	$(BIN)/lint-imports

# The tests also use Debian's dcmtk, Orthanc and openslide-tools: installed here when missing (or the command to run).
test: $(STAMP)
	bash infra/system-packages.sh
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(DEMO) mlflow.db mlruns mlartifacts .pytest_cache
