#!/usr/bin/env bash
# Set up (first run only) and start the Latent Explorer dashboard.
#   LATENT_DATA_DIR  Fashion-MNIST folder (default: per-user cache; downloaded when missing)
#   LATENT_PORT      port to serve on (default 8501); LATENT_ADDRESS (default localhost)
# Extra arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
port="${LATENT_PORT:-8501}"
case "$port" in (*[!0-9]*|"") echo "LATENT_PORT must be a number, got '$port'" >&2; exit 2;; esac
# Compile the project's bytecode now (fast when it is current): Python would otherwise recompile every
# module at each start wherever PYTHONDONTWRITEBYTECODE is set, as it is on some shared machines.
.venv/bin/python -m compileall -q app.py latent ui pages >/dev/null
exec .venv/bin/python -m streamlit run app.py --server.port "$port" \
  --server.address "${LATENT_ADDRESS:-localhost}" "$@"
