# Quickstart: `make run` and `make test` each build .venv from nothing on a clean clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/simcluster run

# The suite on every core (pytest-xdist, a dev dependency): `make test PYTEST_FLAGS=` runs it in one process.
# loadgroup: tests that share a module-scoped fixture stay on one worker (tests/conftest.py).
PYTEST_FLAGS ?= -n auto --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check simcluster tests benchmarks scripts

test: lint
	$(BIN)/python -m pytest $(PYTEST_FLAGS)

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
