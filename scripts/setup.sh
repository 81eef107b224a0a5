#!/usr/bin/env bash
# Create .venv and install the pinned dependencies into it. Idempotent: it reinstalls only when
# a requirements or constraints file changes. Usage:
#   scripts/setup.sh [requirements.txt|requirements-dev.txt] [no-warm-up]
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
# Compile the search kernels and fill the cache folder once per machine and version of the code, so
# that no first page visit waits for them (latent/warmup.py). The stamp lives in numba's cache folder,
# so removing that cache (or a new clone) runs it again.
warm_digest=$(cat latent/search/*.py latent/scores.py latent/warmup.py 2>/dev/null | sha256sum | cut -c1-16)
warm_stamp="latent/search/__pycache__/.warmed-${warm_digest}"
if [ ! -f "$warm_stamp" ] && [ "${2:-}" != no-warm-up ]; then
  .venv/bin/python -m latent warm-up
  mkdir -p latent/search/__pycache__ && rm -f latent/search/__pycache__/.warmed-* && touch "$warm_stamp"
fi

