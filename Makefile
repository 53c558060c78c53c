# lmweb: the two commands are `make run` and `make test`; both start with `make setup`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/lmweb
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15

.PHONY: setup run demo test bench lint format migrate

setup:
	@scripts/setup.sh

migrate: setup
	$(PY) manage.py migrate --noinput

run: setup
	@scripts/run.sh

demo: setup
	@scripts/demo.sh

test: setup
	@scripts/ensure-services.sh
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
		$(PY) -m pytest $(PYTEST_ARGS)

# Every layer against its bare baseline, side by side (about 12 minutes); see README, Performance.
bench: setup
	@scripts/ensure-services.sh
	$(PY) -m bench $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
