# lmweb: the two commands are `make run` and `make test`; both start with `make setup`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# make test uses a private PostgreSQL and Redis under var/ (scripts/test-services.sh) unless
# TEST_DATABASE_URL / TEST_BROKER_URL name servers to use.
TEST_SERVICES = urls=$$(scripts/test-services.sh) && eval "$$urls"

.PHONY: setup setup-test run demo test test-fast bench lint format migrate

setup:
	@scripts/setup.sh

migrate: setup
	$(PY) manage.py migrate --noinput

run: setup
	@scripts/run.sh

demo: setup
	@scripts/demo.sh

# What only the tests need (Chromium, the PostgreSQL server); quick when nothing is missing.
setup-test: setup
	@scripts/setup-test.sh

# The suite starts with the linters: a layer broken or a file unformatted fails `make test` too.
test: setup-test lint
	@$(TEST_SERVICES) && set -x && \
	DATABASE_URL=$$TEST_DATABASE_URL CELERY_BROKER_URL=$$TEST_BROKER_URL $(PY) -m pytest $(PYTEST_ARGS)

# The quick loop: no real CCTools, Celery or Work Queue processes (-m "not integration"), no
# browser, and the test database kept between runs (--create-db in PYTEST_ARGS after a migration).
test-fast: setup-test
	@$(TEST_SERVICES) && set -x && \
	DATABASE_URL=$$TEST_DATABASE_URL CELERY_BROKER_URL=$$TEST_BROKER_URL $(PY) -m pytest \
	  -m "not integration" --ignore=tests/test_browser.py --reuse-db $(PYTEST_ARGS)

# Every layer against its bare baseline, side by side (about 12 minutes); see README, Performance.
bench: setup-test
	@$(TEST_SERVICES) && set -x && \
	BENCH_DATABASE_URL=$${BENCH_DATABASE_URL:-$${TEST_DATABASE_URL%/*}/lmweb_bench} \
	BENCH_BROKER_URL=$${BENCH_BROKER_URL:-$${TEST_BROKER_URL%/*}/14} $(PY) -m bench $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo --no-cache

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
