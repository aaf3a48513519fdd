# Development tasks. `make test` needs PostgreSQL on 127.0.0.1:5432 unless DATABASE_URL
# names another PostgreSQL database. `make demo` leaves DATABASE_URL as it is.

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Written after a successful install, so pip runs again only when a requirements file changes.
VENV_STAMP := $(VENV)/.installed

# Database of `make test` when DATABASE_URL is unset or empty. pytest-django creates
# and drops its own test database ("test_" and this name) on the same server.
TEST_DATABASE_URL := postgres://postgres@127.0.0.1:5432/aip_backup

# AIP_SAMPLES_DIR (DSpace sample AIPs) and AIP_SCHEMA_DIR (XML schemas) reach pytest
# unchanged, because make exports variables from the environment and the command line.
# Tests that need either folder skip when it is unset.

# Extra pytest arguments, for example: make test PYTEST_ARGS="tests/repository -x"
PYTEST_ARGS ?=
# pytest-xdist processes; each test file runs whole on one of them, with its own test database
# (test_<name>_gw0, ...). TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

# Redis of `make web`, `make worker` and `make scheduler` when REDIS_URL is unset or empty.
DEV_REDIS_URL := redis://127.0.0.1:6379/0
DEV_ENV := REDIS_URL="$${REDIS_URL:-$(DEV_REDIS_URL)}"

.PHONY: venv demo test web worker scheduler clean

venv: $(VENV_STAMP)

$(VENV_STAMP): $(wildcard requirements/*.txt)
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install -r requirements/test.txt
	touch $@

demo: venv
	$(VENV_PYTHON) manage.py aip_demo

test: venv
	DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" $(VENV_PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Development servers, one per terminal; they share DATABASE_URL (SQLite under var/ when unset) and Redis.
web: venv
	$(DEV_ENV) $(VENV_PYTHON) manage.py migrate --no-input
	$(DEV_ENV) $(VENV_PYTHON) manage.py runserver 127.0.0.1:8000

worker: venv
	$(DEV_ENV) $(VENV_PYTHON) manage.py rqworker default

scheduler: venv
	$(DEV_ENV) $(VENV_PYTHON) manage.py aip_scheduler

clean:
	rm -rf var/demo
