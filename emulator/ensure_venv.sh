#!/usr/bin/env bash
# Make sure `python -m venv` works: Debian ships venv/ensurepip in a separate package
# (python3.11-venv), so a fresh machine with only python3 cannot create .venv without it.
set -euo pipefail
PYTHON="${1:-python3}"
if "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  exit 0
fi
package="python$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "$PYTHON cannot create a virtualenv: installing Debian's $package package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "$package" >/dev/null
  exit 0
fi
cat >&2 <<MSG
$PYTHON cannot create a virtualenv (its venv/ensurepip modules are missing), and this user
cannot install them. Install them, then run the command again:
  Debian/Ubuntu:  sudo apt-get install $package
MSG
exit 1
