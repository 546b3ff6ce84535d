# Two commands on a fresh clone: `make serve` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup serve check test format clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Development mode on loopback unless told otherwise (`nessen serve` alone is production).
serve: setup
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

# The side-by-side benchmark suite (about 20 minutes; see docs/BENCHMARKS.md).
bench:
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
