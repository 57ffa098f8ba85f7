#!/usr/bin/env bash
# Make sure Debian's chromium exists for the dashboard's browser test (tests/e2e/test_dashboard_e2e.py):
# Playwright drives it through executable_path, since Playwright's own browser download is not used.
# Install it when we can (as root, with apt-get), else say how.
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "$CHROMIUM not found: installing Debian's chromium package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
chromium is not installed, and this user cannot install it (the dashboard's browser test needs it).
Install it, then run the command again:
  Debian/Ubuntu:  sudo apt-get install chromium
Or set CHROMIUM to a Chromium or Chrome binary.
MSG
exit 1
