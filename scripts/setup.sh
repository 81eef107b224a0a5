#!/usr/bin/env bash
# Create .venv and install the pinned dependencies into it. Idempotent: it reinstalls only when
# a requirements or constraints file changes. Usage: scripts/setup.sh [requirements.txt|requirements-dev.txt]
set -euo pipefail
cd "$(dirname "$0")/.."
want="${1:-requirements.txt}"
py="${PYTHON:-python3}"
digest=$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -c1-16)
stamp=".venv/.installed-${digest}-$(basename "$want" .txt)"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
if [ ! -f "$stamp" ]; then
  echo "setup: installing pinned dependencies from $want (first run only; a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # torch first and exactly 2.13.0: that version is the CPU build; others pull several GB of CUDA.
  .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$want" -c constraints.txt
  rm -f .venv/.installed-*
  touch "$stamp"
fi
