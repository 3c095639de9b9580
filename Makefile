# Every target works on a fresh machine: the virtual environment is made on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv test test-fast test-django42 django-suite lint format bench check clean docs docs-serve tune-plot

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,lint,bench,docs,tune]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow" -x -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict dbpool

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	$(BIN)/python benchmarks/pool_overhead.py
	$(BIN)/python benchmarks/fairness.py
	$(BIN)/python benchmarks/postgres_throughput.py
	$(BIN)/python benchmarks/mysql_throughput.py
	$(BIN)/python benchmarks/django_load.py
	$(BIN)/python benchmarks/spike.py
	$(BIN)/python benchmarks/tpcb.py --quick

check: venv
	$(BIN)/dbpool check

# The documentation site (mkdocs.yml): built strictly into site/, or previewed with live reload.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# A real `dbpool tune` plot for docs/cli.md: pgbench's TPC-B-like transaction on the local
# PostgreSQL, in a database of its own (dropped afterwards). Run it on a quiet machine.
TUNE_PG ?= postgresql://postgres@127.0.0.1:5432
TUNE_SCALE ?= 10
TUNE_OUT ?= docs/img/tune-postgresql
PGBENCH ?= $(firstword $(wildcard /usr/lib/postgresql/*/bin/pgbench) pgbench)

tune-plot: venv
	psql "$(TUNE_PG)/postgres" -q -c "DROP DATABASE IF EXISTS dbpool_tune" -c "CREATE DATABASE dbpool_tune"
	$(PGBENCH) -i -q -s $(TUNE_SCALE) "$(TUNE_PG)/dbpool_tune"
	mkdir -p $(dir $(TUNE_OUT))
	$(BIN)/dbpool tune "$(TUNE_PG)/dbpool_tune" --sql-file benchmarks/tune/tpcb-like.sql \
		--transaction --define scale=$(TUNE_SCALE) --threads 64 --sizes 1,2,3,4,5,6,8,12,16 \
		--seconds 8 --warmup 2 --json $(TUNE_OUT).json --plot $(TUNE_OUT).png \
		> $(TUNE_OUT).txt; status=$$?; cat $(TUNE_OUT).txt; \
		psql "$(TUNE_PG)/postgres" -q -c "DROP DATABASE dbpool_tune"; exit $$status

clean:
	rm -rf $(VENV) $(VENV42) .cache build *.egg-info .pytest_cache .mypy_cache .ruff_cache site .artifacts

# Django 4.2 LTS beside the main venv's 5.2: the Django tests and Django's own suite.
VENV42 := .venv-django42
STAMP42 := $(VENV42)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
DJANGO_TESTS := tests/integration/test_django_config.py tests/integration/test_django_backends.py \
	tests/integration/test_django_runner.py tests/integration/test_django_app.py

$(STAMP42): setup.cfg pyproject.toml
	test -x $(VENV42)/bin/python || $(PYTHON) -m venv $(VENV42)
	$(VENV42)/bin/python -m pip install -q --upgrade pip
	$(VENV42)/bin/python -m pip install -q -e ".[test,bench]" "django>=4.2,<5"
	rm -f $(VENV42)/.installed-*
	touch $(STAMP42)

test-django42: $(STAMP42)
	$(VENV42)/bin/python -m pytest -q $(DJANGO_TESTS)

# Django's own test suite on Django's stock backends and on dbpool's, PostgreSQL and
# MariaDB, compared test by test, on 5.2 and 4.2 (docs/integrations/django-test-suite.md).
django-suite: venv $(STAMP42)
	$(BIN)/python tests/django_suite/run.py
	$(VENV42)/bin/python tests/django_suite/run.py
