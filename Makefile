# Two commands set everything up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The official centrifuge SDK, bundled for the demo pages (built, never committed)
BUNDLE := livehub/demos/static/vendor/centrifuge.js

.PHONY: run test lint check unit peers browser frontend install clean dist docs js-suite chaos

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,docs]'
	touch $(STAMP)

install: $(STAMP)

## Serve the demo app on the in-memory engine at http://127.0.0.1:8000
run: $(STAMP) $(BUNDLE)
	$(BIN)/livehub serve --config examples/demo.toml --host localhost --port 8000

## Lint, type-check and run the whole test suite (provisions what the tests need)
test: $(STAMP) peers $(BUNDLE) browser
	$(BIN)/ruff check livehub tests
	$(BIN)/ruff format --check livehub tests
	$(BIN)/mypy livehub
	$(BIN)/python -m pytest

## The tests that need nothing but Python: no service, browser, SDK download or process (tests/conftest.py
## marks the others); --isolated fails any of them that starts a process or reaches Redis/NATS/PostgreSQL
UNIT := not (redis or nats or postgres or browser or peers or cluster or subprocess or slow)
unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "$(UNIT)" --isolated $(PYTEST_ARGS)

## Build the documentation site strictly (any warning fails) into .cache/site; the configuration
## reference is generated from livehub/settings.py (docs/gen_config.py). Serve it: .venv/bin/mkdocs serve
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .cache/site

## Lint, format check and type check, without running a test
check: $(STAMP)
	$(BIN)/ruff check livehub tests
	$(BIN)/ruff format --check livehub tests
	$(BIN)/mypy livehub

lint:
	$(BIN)/ruff format livehub tests
	$(BIN)/ruff check --fix livehub tests

## Download the official SDKs the conformance tests run (cached in .cache/)
peers: $(STAMP)
	bash scripts/provision_peers.sh

## The centrifuge-js repository's own jest suite against livehub serve on localhost:8000 (scripts/js_suite.py:
## needs its git repository, $$CENTRIFUGE_JS_SRC; table + .cache/centrifuge-js/results.json; fails on a test
## tests/peers/js_suite_expected.json lists as passing). Takes the heavy-tests lock. JS_SUITE_ARGS=--files src/map.test.ts
js-suite: $(STAMP)
	flock /tmp/livehub-heavy.lock $(BIN)/python scripts/js_suite.py --expected tests/peers/js_suite_expected.json $(JS_SUITE_ARGS)

## Build the browser bundle of the centrifuge SDK for the demo pages (npm ci + esbuild)
frontend: $(BUNDLE)

$(BUNDLE): frontend/package.json frontend/package-lock.json frontend/src/centrifuge.js frontend/build.sh
	bash frontend/build.sh

## Build the sdist and the wheel into dist/, the SDK bundle included (setup.py builds it when missing)
dist: $(STAMP) $(BUNDLE)
	$(BIN)/python -m pip show -q build >/dev/null 2>&1 || $(BIN)/python -m pip install -q build
	rm -rf build dist
	$(BIN)/python -P -m build --outdir dist .

## Install Debian's Chromium for the browser tests (tests/browser) when it is missing
browser:
	bash scripts/provision_browser.sh

## Benchmark livehub next to its anchors (bench/: load generator, FastAPI and Node ws servers); table in docs/bench (~35 min; QUICK=1: ~6 min)
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -c 'import picows, uvloop, matplotlib' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[bench]'
	bash scripts/npm_ci.sh bench/servers || echo "bench: no Node.js/npm: the node_ws anchor will be skipped"
	$(BIN)/python bench/run.py $(if $(QUICK),--quick) $(BENCH_ARGS)

## Chaos and soak figures (bench/chaos_*.py; docs/chaos.md), each under the shared heavy lock. ~45 min;
## CHAOS_QUICK=1: small sizes, ~8 min. SOAK_MINUTES=60 for the one-hour soak.
CHAOS_LOCK = flock /tmp/livehub-heavy.lock
SOAK_MINUTES ?= 15
.PHONY: chaos
chaos: $(STAMP)
	$(BIN)/python -c 'import picows, uvloop' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[bench]'
	$(CHAOS_LOCK) $(BIN)/python bench/chaos_storm.py --clients $(if $(CHAOS_QUICK),2000,10000) --runs 3
	$(CHAOS_LOCK) $(BIN)/python bench/chaos_restart.py --broker redis --runs 3
	$(CHAOS_LOCK) $(BIN)/python bench/chaos_restart.py --broker nats --runs 3
	$(CHAOS_LOCK) $(BIN)/python bench/chaos_flood.py --runs 3
	$(CHAOS_LOCK) $(BIN)/python bench/chaos_connections.py $(if $(CHAOS_QUICK),--conns 5000 --minutes 1,--conns 50000 --minutes 10)
	$(CHAOS_LOCK) $(BIN)/python bench/chaos_soak.py --minutes $(if $(CHAOS_QUICK),2,$(SOAK_MINUTES))

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
