# intemporal — `make` lists the targets.
# The first Python 3.11+ found (python3 itself, or a versioned name); PY=... overrides.
PY ?= $(shell for p in python3 python3.13 python3.12 python3.11 python; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# test processes for `make test` (pytest-xdist): the suite mostly waits on processes,
# timers and disks, so 4 fill 2 cores; JOBS=0 runs it in this process
JOBS ?= 4

.DEFAULT_GOAL := help
.PHONY: help demo test test-slow lint bench bench-store clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	@test -n "$(PY)" || { echo "no Python 3.11 or later found (tried python3, python3.13, python3.12, python3.11); set PY=/path/to/python"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]' --config-settings editable_mode=compat  # mypy sees it
	@touch $(STAMP)

demo: $(STAMP) ## run a workflow that crashes and resumes, then list the runs
	rm -rf .intemporal-demo
	$(BIN)/python samples/crash_and_resume.py --store .intemporal-demo
	$(BIN)/intemporal --store .intemporal-demo list

test: $(STAMP) ## run the test suite (skips the slow soak/fuzz tests; PostgreSQL: apt-get install postgresql)
	$(BIN)/python -m pytest -q -n $(JOBS)

test-slow: $(STAMP) ## run only the slow soak/fuzz tests
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP) ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check intemporal tests samples bench
	$(BIN)/ruff format --check intemporal tests samples bench
	$(BIN)/mypy

bench: $(STAMP) ## benchmarks, side by side with DBOS (installed in bench/.venv-dbos)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/async_fanout.py

bench-store: $(STAMP) ## the file store at 100,000 runs: list, gc, recover, parked memory, import (BASELINE=DIR: beside another checkout)
	$(BIN)/python bench/store_bench.py $(if $(BASELINE),--baseline $(BASELINE))

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info .intemporal-demo
