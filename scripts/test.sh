#!/usr/bin/env bash
# Set up (first run only) and run the full test suite. Installs Debian's chromium for the browser
# tests when it is missing and this is root on Debian; otherwise it says so and those tests skip.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing Debian's chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "test: could not install chromium; the browser tests will be skipped"
  else
    echo "test: chromium is missing and cannot be installed here (needs root and apt-get);" \
         "the browser tests will be skipped. Install it with: sudo apt-get install chromium"
  fi
fi
exec .venv/bin/python -m pytest "$@"
