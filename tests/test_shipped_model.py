"""The shipped checkpoint: loads safely, encodes real test images sensibly, and decodes garments."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from latent import paths
from latent.model import load_checkpoint
from latent.train import to_tensor


def test_shipped_checkpoint_loads_and_encodes_real_test_images(real_data):
    model, meta = load_checkpoint(paths.DEFAULT_CHECKPOINT)  # weights_only=True inside
    assert model.config.latent_dim == 10
    assert meta["n_train"] == 60000, "the shipped model must be trained on all 60,000 training images"
    x = to_tensor(real_data.test_images[:2000])
    with torch.no_grad():
        mu, logvar = model.encode(x)
        sigma = torch.exp(0.5 * logvar)
        recon = model.decode(mu)
    assert torch.isfinite(mu).all() and (sigma > 0).all() and torch.isfinite(sigma).all()
    # Decodes look like the garments: far better than predicting the mean training image.
    bce = F.binary_cross_entropy_with_logits(recon, x, reduction="none").flatten(1).sum(-1).mean()
    mean_image = to_tensor(real_data.train_images[:10000]).mean(0, keepdim=True).clamp(1e-4, 1 - 1e-4)
    baseline = F.binary_cross_entropy(mean_image.expand_as(x), x, reduction="none").flatten(1).sum(-1).mean()
    assert bce < 0.75 * baseline, f"reconstruction {bce:.1f} nats is not much better than the mean image {baseline:.1f}"


def test_history_and_model_card_agree_with_the_checkpoint():
    _, meta = load_checkpoint(paths.DEFAULT_CHECKPOINT)
    history = json.loads(paths.DEFAULT_HISTORY.read_text())["history"]
    assert len(history) == meta["epochs_done"]
    assert history[-1]["test_neg_elbo"] < history[0]["test_neg_elbo"]
    card = (paths.MODELS_DIR / "README.md").read_text()
    from latent.catalog import file_sha256

    assert file_sha256(paths.DEFAULT_CHECKPOINT) in card, "the model card describes another checkpoint"
    assert (paths.MODELS_DIR / "samples.png").is_file()
