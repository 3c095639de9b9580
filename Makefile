# Every target works on a fresh machine: the virtual environment is made on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv test test-fast test-django42 django-suite lint format bench check clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,lint,bench]"
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

check: venv
	$(BIN)/dbpool check

clean:
	rm -rf $(VENV) $(VENV42) .cache build *.egg-info .pytest_cache .mypy_cache .ruff_cache

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
