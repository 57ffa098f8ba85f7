# The two commands: `make run` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

setup: $(STAMP)
	@bash localstack/ensure_redis.sh

run: setup
	$(PY) -m localstack.stack

lint: setup
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest

bench: setup
	$(PY) bench/webhooks.py

clean:
	rm -rf $(VENV) .local dist .pytest_cache .ruff_cache
