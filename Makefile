# userdest: `make run` to bring the stack up here, `make test` to check it. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/userdest
export REDIS_URL ?= redis://127.0.0.1:6379/0
# Fixed secrets for this machine's own stack only; a deployment sets its own (docs/security.md).
export ENVELOPE_SECRET ?= make-run-envelope-secret-not-for-production
export SUPPRESSION_SECRET ?= make-run-suppression-secret-not-for-production
PORT ?= 8000
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= userdest
CONTAINER ?= docker
TEST_JOBS ?= 2

.PHONY: help install run run-readapi test test-fast lint migrate bench bench-scale lock image clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# The runtime packages first, exactly the files constraints.txt names (versions and hashes, as the
# image installs them), so the tests run what ships; then userdest itself, editable (a source tree
# has no hash to check), with its test and dev tools, which pip resolves around those pins.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "userdest needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r constraints.txt
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## make the virtual environment from pyproject.toml

migrate: install ## create the database if needed and migrate it to the newest schema
	$(BIN)/userdest db upgrade

run: migrate ## start the receiver (gunicorn) and a worker, and print how to send a first call
	@bash scripts/run.sh

run-readapi: migrate ## start the read API (gunicorn) on 127.0.0.1:$$READ_API_PORT (default 8001)
	$(BIN)/gunicorn -c python:api.gunicorn_conf --bind 127.0.0.1:$${READ_API_PORT:-8001} "readapi:create_app()"

test: install ## run the whole test suite against local Postgres and Redis, in TEST_JOBS processes
	$(BIN)/pytest -n $(TEST_JOBS)

test-fast: install ## the inner loop: every test but those that start processes or services (e2e)
	$(BIN)/pytest -n $(TEST_JOBS) -m "not e2e"

lint: install ## ruff and mypy on the packages
	$(BIN)/ruff check api readapi workers shared ops bench tests
	$(BIN)/ruff format --check api readapi workers shared ops bench tests
	$(BIN)/mypy

bench: install ## run the seeded bench workload on the real stack; writes bench-results/latest.json
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-scale: install ## a batch of 100 at an empty and a ~10M-call database, storage per call, a month of dedupe
	$(BIN)/python -m bench.scale $(BENCH_SCALE_ARGS)

lock: install ## pin the runtime packages with their hashes in constraints.txt (LOCK_ARGS=--upgrade: newest)
	$(BIN)/python scripts/lock.py $(LOCK_ARGS)

image: ## build the labelled image userdest:<version of pyproject.toml> (CONTAINER=podman works too)
	$(CONTAINER) build \
	  --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
	  --build-arg SOURCE=$$(git remote get-url origin 2>/dev/null || echo unknown) \
	  -t $(IMAGE):$(VERSION) .

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
