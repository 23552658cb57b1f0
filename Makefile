# Two commands set everything up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit peers install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Serve the demo app on the in-memory engine at http://127.0.0.1:8000
run: $(STAMP)
	$(BIN)/livehub serve --config examples/demo.toml --host localhost --port 8000

## Lint, type-check and run the whole test suite (provisions what the tests need)
test: $(STAMP) peers
	$(BIN)/ruff check livehub tests
	$(BIN)/ruff format --check livehub tests
	$(BIN)/mypy livehub
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff format livehub tests
	$(BIN)/ruff check --fix livehub tests

## Download the official SDKs the conformance tests run (cached in .cache/)
peers: $(STAMP)
	bash scripts/provision_peers.sh

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
