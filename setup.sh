#!/usr/bin/env bash
# Set up customs-edge on a Debian machine with Python 3.11, 3.12 or 3.13 and run the demo or the tests.
#   ./setup.sh demo [cedge demo options]   install Mosquitto + the package, run the demo
#   ./setup.sh test [pytest options]       install Mosquitto + the package with test tools, run ruff and pytest
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-demo}"; shift || true

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages: Mosquitto is the production broker (demo and link tests start their own
# private instance on a loopback port); python3-venv gives Debian's Python its venv module.
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# Tests only: the real gpsd checks the gpsd driver and re-derives the GPS bench's reference fixes
# (gpsfake); those tests skip without it.
[ "$mode" != test ] || command -v gpsfake >/dev/null 2>&1 || need+=(gpsd gpsd-clients)
# Tests only: Debian's Chromium, driven headless by Playwright in tests/test_web_console.py (the
# operator console); we never run `playwright install`, which would download a browser.
[ "$mode" != test ] || command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Tests only: Debian's PostgreSQL server binaries; tests/pg_fixture.py starts a private server on a
# temporary directory for the PostgreSQL store's tests (they skip without it)
[ "$mode" != test ] || [ -x /usr/lib/postgresql/15/bin/initdb ] || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
# $PYTHON if given, else the first supported Python on the PATH: 3.11 (Debian 12), 3.12 (Ubuntu 24.04),
# 3.13 (Debian 13); pyproject says requires-python >= 3.11 and CI tests the wheel on all three
PY="${PYTHON:-$(command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)}"
[ -x .venv/bin/python ] && PY=.venv/bin/python  # keep an existing venv's Python
"$PY" -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 13), sys.version' \
  || { echo "customs-edge needs Python 3.11 to 3.13 (found $("$PY" --version 2>&1))" >&2; exit 2; }
"$PY" -m venv --help >/dev/null 2>&1 && "$PY" -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package enables a system-wide broker on 1883; our runs never use it.

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
case "$mode" in
  demo)
    # the demo runs every role (units, simulator, controller): all extras
    .venv/bin/python -m pip install -q -e '.[all]'
    exec .venv/bin/cedge demo "$@"
    ;;
  test)
    .venv/bin/python -m pip install -q -e '.[test]'
    .venv/bin/ruff check .
    exec .venv/bin/python -m pytest -q "$@"
    ;;
  *) echo "usage: $0 demo|test [options]" >&2; exit 2 ;;
esac
