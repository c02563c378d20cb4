# One command per task. `make test` installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE := src/integration_health/model.py,src/integration_health/config.py,src/integration_health/checks.py,src/integration_health/runner.py,src/integration_health/policy.py

.PHONY: install test lint bench bench-peers demo clean

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

## The benchmarks of docs/benchmarks.md (PostgreSQL on 127.0.0.1:5432; `hey`, `wrk` and
## prometheus-blackbox-exporter from Debian for the API and peer benchmarks: bench-peers).
bench: install
	$(PY) bench/http_clients.py
	$(PY) bench/runner_throughput.py
	$(PY) bench/timeout_precision.py
	$(PY) bench/store_write.py
	$(PY) bench/load_run.py
	$(PY) bench/planning_cost.py --rounds 5
	$(PY) bench/end_to_end.py
	$(PY) bench/end_to_end.py --instant --checked --worker --rounds 5
	$(PY) bench/soak.py --integrations 10000 --slots 10

bench-peers: install
	command -v hey >/dev/null || apt-get install -y -qq hey
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	command -v prometheus-blackbox-exporter >/dev/null || apt-get install -y -qq prometheus-blackbox-exporter
	$(PY) bench/api_latency.py --requests 5000
	$(PY) bench/api_latency.py --stores postgres --cache on --client wrk
	$(PY) bench/blackbox_compare.py

clean:
	rm -rf $(VENV) .coverage .pytest_cache .mypy_cache .ruff_cache

## The newcomer's first run: simulated vendors, a sample organisation, real checks.
demo: install
	$(VENV)/bin/integration-health demo
