# The two commands: `make run` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run run-cluster test lint chromium bench package test-localstack clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))" >&2; exit 1; }
	@bash emulator/ensure_venv.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

setup: $(STAMP)
	@bash emulator/ensure_redis.sh

run: setup
	$(PY) -m emulator.stack

# The same stack on a throwaway Redis Cluster of three primaries on free ports (redis-server
# --cluster-enabled yes, joined by redis-cli --cluster create), gone when the stack stops.
run-cluster: setup
	$(PY) -m emulator.stack --cluster

lint: setup
	$(PY) -m ruff check .

# The agent spec's JavaScript client (socket.io-client, pinned by the lockfile) for its e2e test.
JS_DEPS := tests/js/node_modules/.package-lock.json
$(JS_DEPS): tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund

# The dashboard's browser test drives Debian's chromium through Playwright (no browser download).
chromium:
	@bash emulator/ensure_chromium.sh

test: lint $(JS_DEPS) chromium
	$(PY) -m pytest

# LocalStack in its own virtualenv (it pins its own dependencies, and downloads a lot).
LS_VENV := .venv-localstack
$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --disable-pip-version-check 'localstack-core[runtime]==4.13.1' \
	  'cbor2<5.8' 'cryptography<44' 'pyopenssl==24.2.1' service_identity
	@touch $@

# SQS on LocalStack: moto's SQS scans every message on each call, which the benchmarks' thousands
# of queued messages turn into seconds per call.
bench: setup $(LS_VENV)/.installed
	bash localstack/with_localstack.sh $(PY) -u bench/webhooks.py
	bash localstack/with_localstack.sh $(PY) -u bench/agents.py
	bash localstack/with_localstack.sh $(PY) -u bench/live.py

# The stack to deploy: dist/sam/sam.json (CloudFormation/SAM) and dist/terraform/ (STAGE=prod by default).
STAGE ?= prod
package: $(STAMP)
	bash deploy/package.sh dist $(STAGE)

test-localstack: setup $(LS_VENV)/.installed
	bash localstack/with_localstack.sh $(PY) -m pytest tests/e2e

clean:
	rm -rf $(VENV) $(LS_VENV) .local dist .pytest_cache .ruff_cache tests/js/node_modules
