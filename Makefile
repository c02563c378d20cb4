# One command per task. `make test` installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE := src/integration_health/model.py,src/integration_health/config.py,src/integration_health/checks.py,src/integration_health/runner.py,src/integration_health/policy.py

.PHONY: install test lint bench demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## Every test; fails if branch coverage of the framework core is below 85 %.
test: install
	$(PY) -m pytest --cov --cov-branch --cov-report= $(PYTEST_ARGS)
	$(PY) -m coverage report --include='$(CORE)' --fail-under=85

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/http_clients.py
	$(PY) bench/runner_throughput.py
	$(PY) bench/timeout_precision.py

clean:
	rm -rf $(VENV) .coverage .pytest_cache .mypy_cache .ruff_cache

## The newcomer's first run: simulated vendors, a sample organisation, real checks.
demo: install
	$(VENV)/bin/integration-health demo
