#!/usr/bin/env bash
# Make sure a redis-server binary exists: install Debian's when we can, else say how.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian's redis-server package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
redis-server is not installed, and this user cannot install it.
Install it, then run the command again:
  Debian/Ubuntu:  sudo apt-get install redis-server
  macOS:          brew install redis
Or point REDIS_URL at a Redis you already run.
MSG
exit 1
