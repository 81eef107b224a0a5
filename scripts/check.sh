#!/usr/bin/env bash
# Fast static checks, the first stage of CI: ruff (lint and import order) on the whole tree and mypy
# on the library. Sets up .venv with the pinned dev tools on first use. Extra arguments go to ruff.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt no-warm-up  # the checks compile nothing
echo "check: ruff $(.venv/bin/ruff --version | cut -d' ' -f2)"
.venv/bin/ruff check . "$@"
echo "check: mypy on latent/"
.venv/bin/mypy
