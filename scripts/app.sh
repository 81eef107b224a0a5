#!/usr/bin/env bash
# Set up (first run only) and start the Latent Explorer dashboard.
#   LATENT_DATA_DIR  Fashion-MNIST folder (default: per-user cache; downloaded when missing)
#   LATENT_PORT      port to serve on (default 8501); LATENT_ADDRESS (default localhost)
#   (every variable: README's configuration table, or `.venv/bin/python -m latent.config`)
# Extra arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
# The port and address come from latent.config, the one reader of the LATENT_* variables (it checks them).
serve="$(.venv/bin/python -m latent.config port address)"
port="${serve%%$'\n'*}"
address="${serve#*$'\n'}"
# Compile the project's bytecode now (fast when it is current): Python would otherwise recompile every
# module at each start wherever PYTHONDONTWRITEBYTECODE is set, as it is on some shared machines.
.venv/bin/python -m compileall -q app.py latent ui pages >/dev/null
# ui/serve.py: `streamlit run app.py`, warming the server process while it waits for the first visit.
exec .venv/bin/python -m ui.serve --server.port "$port" --server.address "$address" "$@"
