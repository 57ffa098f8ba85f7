# The two commands: `make run` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench package test-localstack clean

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
	$(PY) -u bench/webhooks.py
	$(PY) -u bench/agents.py
	$(PY) -u bench/live.py

# The stack to deploy: dist/sam/sam.json (CloudFormation/SAM) and dist/terraform/ (STAGE=prod by default).
STAGE ?= prod
package: $(STAMP)
	bash deploy/package.sh dist $(STAGE)

# LocalStack in its own virtualenv (it pins its own dependencies, and downloads a lot).
LS_VENV := .venv-localstack
$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --disable-pip-version-check 'localstack-core[runtime]==4.13.1' \
	  'cbor2<5.8' 'cryptography<44' 'pyopenssl==24.2.1' service_identity
	@touch $@

test-localstack: setup $(LS_VENV)/.installed
	bash localstack/test_localstack.sh

clean:
	rm -rf $(VENV) $(LS_VENV) .local dist .pytest_cache .ruff_cache
