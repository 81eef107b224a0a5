"""Where the project's files live: the repository's shipped artefacts and the per-user cache."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (the folder that holds ``latent/``).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The shipped model folder.
MODELS_DIR = REPO_ROOT / "models"
#: The shipped checkpoint.
DEFAULT_CHECKPOINT = MODELS_DIR / "vae.pt"
#: The shipped training history.
DEFAULT_HISTORY = MODELS_DIR / "vae-history.json"


def cache_dir() -> Path:
    """Per-user cache for derived artefacts: ``$LATENT_CACHE_DIR``, else ``$XDG_CACHE_HOME/latent-explorer``."""
    env = os.environ.get("LATENT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "latent-explorer"
