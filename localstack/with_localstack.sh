#!/usr/bin/env bash
# Run a command with a real LocalStack (SQS, EventBridge) as the AWS endpoint: LocalStack is
# started on this host without Docker, from its own virtualenv (.venv-localstack, `make` installs
# it), on a free port, and stopped when the command ends. The command sees AWS_ENDPOINT_URL.
# Used by `make test-localstack` and `make bench`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LS_VENV="$ROOT/.venv-localstack"
PORT="${LOCALSTACK_PORT:-$("$ROOT/.venv/bin/python" -c 'from emulator.ports import free_port; print(free_port())')}"
DATA="$(mktemp -d -t punctual-localstack-XXXX)"
export LOCALSTACK_HOST="127.0.0.1:$PORT"

(cd "$DATA" && OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$DATA/fs" GATEWAY_LISTEN="127.0.0.1:$PORT" \
  SERVICES=sqs,events SKIP_SSL_CERT_DOWNLOAD=1 exec "$LS_VENV/bin/python" -m localstack.runtime.main \
  >"$DATA/localstack.log" 2>&1) &
LS_PID=$!
trap 'kill $LS_PID 2>/dev/null; wait $LS_PID 2>/dev/null; rm -rf "$DATA"' EXIT

for _ in $(seq 1 120); do
  curl -fs "http://$LOCALSTACK_HOST/_localstack/health" >/dev/null 2>&1 && break
  kill -0 $LS_PID 2>/dev/null || { cat "$DATA/localstack.log"; exit 1; }
  sleep 0.5
done
# The endpoint as localstack-client resolves it from LOCALSTACK_HOST.
AWS_ENDPOINT_URL="$("$ROOT/.venv/bin/python" -c \
  'from localstack_client.config import get_service_endpoint; print(get_service_endpoint("sqs"))')"
export AWS_ENDPOINT_URL
echo "LocalStack at $AWS_ENDPOINT_URL" >&2
cd "$ROOT"
"$@"
