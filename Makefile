# One entry point per job. `make serve` and `make test` work on a fresh machine with Python >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install serve test lint typecheck unit integration bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install opentasks with its dev tools

serve: $(STAMP)  ## Start the server on the embedded SQLite store (gRPC :8123)
	$(BIN)/opentasks serve

lint: $(STAMP)  ## ruff lint + format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)  ## mypy --strict on the package
	$(BIN)/mypy

unit: $(STAMP)  ## Fast tests only (no server process)
	$(BIN)/pytest -q tests/unit tests/contract

test: lint typecheck  ## Everything CI runs: lint, types, unit, contract, integration
	$(BIN)/pytest -q

bench: $(STAMP)  ## Benchmarks (several minutes): CreateTask (gRPC, REST), dispatch, memory, HTTP/2 resets, nodes (PostgreSQL)
	$(BIN)/python bench/create_tasks.py
	$(BIN)/python bench/create_tasks_rest.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/http2_resets.py
	$(BIN)/python bench/nodes.py

clean:  ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
