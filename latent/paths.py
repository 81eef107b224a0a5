"""Where the repository's shipped artefacts live, and paths derived from a checkpoint's.

The folders that the environment can change (data, cache, checkpoint) are in :mod:`latent.config`.
"""

from __future__ import annotations

from pathlib import Path

#: The repository root (the folder that holds ``latent/``).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The shipped model folder.
MODELS_DIR = REPO_ROOT / "models"
#: The shipped checkpoint.
DEFAULT_CHECKPOINT = MODELS_DIR / "vae.pt"


def history_path(checkpoint: str | Path) -> Path:
    """The training history beside a checkpoint: ``models/vae.pt`` -> ``models/vae-history.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + "-history.json")


#: The shipped training history.
DEFAULT_HISTORY = history_path(DEFAULT_CHECKPOINT)
