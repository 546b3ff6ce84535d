# Two commands on a fresh clone: `make serve` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make serve` installs what serving needs (the package and its six dependencies);
# `make test` adds the test extras (FastAPI, uvicorn, granian, linters, ...).
SERVE_STAMP := $(VENV)/.serve-stamp
TEST_STAMP := $(VENV)/.test-stamp

.PHONY: setup serve check test format clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(SERVE_STAMP)

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP) $(SERVE_STAMP)

setup: $(TEST_STAMP)

# Development mode on loopback unless told otherwise (`nessen serve` alone is production).
serve: $(SERVE_STAMP)
	NESSEN_ENV=$${NESSEN_ENV:-development} HOST=$${HOST:-127.0.0.1} $(BIN)/nessen serve

check: setup
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: check
	rm -f .coverage .coverage.*
	PYTHONASYNCIODEBUG=1 $(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report --fail-under=90

# The side-by-side benchmark suite (about 30 minutes on 2 cores; see docs/BENCHMARKS.md).
bench:
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
