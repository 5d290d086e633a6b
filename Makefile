# `make run` starts a peer; `make test` runs every check.  Both set up what they need.
PYTHON ?= python3
VENV := .venv
PYLIBP2P_VENV := .venv-pylibp2p
JS_PEER := tests/interop/js

.PHONY: run test lint typecheck unit bench deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

$(JS_PEER)/node_modules/.installed: $(JS_PEER)/package.json $(JS_PEER)/package-lock.json
	cd $(JS_PEER) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(PYLIBP2P_VENV)/.installed: tests/interop/py/requirements.txt
	$(PYTHON) -m venv $(PYLIBP2P_VENV)
	$(PYLIBP2P_VENV)/bin/pip install -q -r tests/interop/py/requirements.txt
	touch $@

deps: $(VENV)/.installed $(JS_PEER)/node_modules/.installed $(PYLIBP2P_VENV)/.installed

## run: a peer on every interface with the persisted identity: ping for anyone; on
## /p2p/1.0.0 it asks on this terminal whether to allow each new peer, then echoes its requests
run: $(VENV)/.installed
	$(VENV)/bin/aiop2p serve --echo --default-rule ask

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

unit: $(VENV)/.installed
	$(VENV)/bin/pytest -q

## test: lint, type check, and every test (interop peers included)
test: deps lint typecheck
	$(VENV)/bin/pytest -q

$(VENV)/.bench-installed: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[bench]'
	touch $@

## bench: aiop2p, its floor, js-libp2p and py-libp2p side by side (ratios, bench/RESULTS.png);
##        BASE=PATH also runs the aiop2p checkout at PATH, BENCH_ARGS overrides --repeat 3
BENCH_ARGS ?= --repeat 3
bench: deps $(VENV)/.bench-installed
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS) $(if $(BASE),--base $(BASE)) \
		--chart bench/RESULTS.png

clean:
	rm -rf $(VENV) $(PYLIBP2P_VENV) $(JS_PEER)/node_modules
