"""A small convolutional VAE for 28x28 grayscale images, and its self-describing checkpoint.

Generative model (Kingma & Welling, 2014):
    p(z) = N(0, I_d),   p(x|z) = prod_pixels Bernoulli(x_i; sigmoid(logits(z)_i)),
    q(z|x) = N(mu(x), diag(sigma(x)^2)),   sigma = exp(logvar / 2).

The likelihood is a Bernoulli evaluated on grey levels in [0, 1] (a continuous Bernoulli without its
normaliser), so the ELBO here is a training objective, not a bound on log p(x).

The decoder is deliberately small (about 1.3 M multiply-accumulates per image, see
:func:`count_macs`) and smooth (SiLU activations), because the geometry features take its
Jacobian many times per second and piecewise-linear decoders give piecewise-constant metrics.

Checkpoint format (a plain dict, loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "latent-explorer-vae", "format_version": 1,
     "config": asdict(VAEConfig), "state_dict": {...tensors...}, "meta": {...plain values...}}
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .io import atomic_writer

CHECKPOINT_FORMAT = "latent-explorer-vae"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, unsafe, or does not match its config."""


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of :class:`VAE`; saved inside every checkpoint."""

    latent_dim: int = 10  # d, the size of z
    image_side: int = 28  # input images are image_side x image_side, one channel
    enc_channels_1: int = 32  # first encoder conv: 28x28 -> 14x14
    enc_channels_2: int = 64  # second encoder conv: 14x14 -> 7x7
    dec_channels: int = 32  # channels of both decoder transposed convs: 7x7 -> 14x14 -> 28x28
    hidden: int = 256  # width of the dense layer on each side
    logvar_min: float = -12.0  # soft bounds on log sigma^2, for numerical safety
    logvar_max: float = 4.0

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.image_side % 4:
            raise ValueError(f"image_side must be a multiple of 4, got {self.image_side}")


class VAE(nn.Module):
    """Convolutional VAE.

    Shapes: images x are (B, 1, 28, 28) floats in [0, 1]; z, mu and logvar are (B, d); the decoder
    returns pixel logits of shape (B, 1, 28, 28).
    """

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or VAEConfig()
        c = self.config
        q = c.image_side // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c.enc_channels_1, 4, stride=2, padding=1),  # (B, c1, 14, 14)
            nn.SiLU(),
            nn.Conv2d(c.enc_channels_1, c.enc_channels_2, 4, stride=2, padding=1),  # (B, c2, 7, 7)
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(c.enc_channels_2 * q * q, c.hidden),
            nn.SiLU(),
            nn.Linear(c.hidden, 2 * c.latent_dim),  # (B, 2d): mu and raw logvar
        )
        self.decoder = nn.Sequential(
            nn.Linear(c.latent_dim, c.hidden),
            nn.SiLU(),
            nn.Linear(c.hidden, c.dec_channels * q * q),
            nn.SiLU(),
            nn.Unflatten(1, (c.dec_channels, q, q)),  # (B, cd, 7, 7)
            nn.ConvTranspose2d(c.dec_channels, c.dec_channels, 4, stride=2, padding=1),  # (B, cd, 14, 14)
            nn.SiLU(),
            nn.ConvTranspose2d(c.dec_channels, 1, 4, stride=2, padding=1),  # (B, 1, 28, 28) logits
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 28, 28) in [0, 1] -> mu (B, d), logvar (B, d)."""
        h = self.encoder(x)
        mu, raw = h.chunk(2, dim=-1)
        lo, hi = self.config.logvar_min, self.config.logvar_max
        logvar = lo + (hi - lo) * torch.sigmoid(raw)  # smooth bound keeps sigma in a safe range
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d) -> pixel logits (B, 1, 28, 28)."""
        return self.decoder(z)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d) -> Bernoulli means sigmoid(logits), (B, 1, 28, 28) in (0, 1)."""
        return torch.sigmoid(self.decode(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One reparameterised pass: z = mu + sigma * eps. Returns (logits, mu, logvar)."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode(z), mu, logvar


def elbo_terms(
    x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image reconstruction and KL terms of the negative ELBO, each of shape (B,).

    recon = -sum_i [x_i log p_i + (1 - x_i) log(1 - p_i)],  p = sigmoid(logits)   (Bernoulli on greys)
    kl    = KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum_j [mu_j^2 + sigma_j^2 - 1 - log sigma_j^2]
    """
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
    return recon, kl


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_macs(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of Linear, Conv2d and ConvTranspose2d layers for one example input."""
    total = 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Linear):
            total += layer.in_features * layer.out_features
        elif isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += output[0].numel() * (layer.in_channels // layer.groups) * k
        elif isinstance(layer, nn.ConvTranspose2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += inputs[0][0].numel() * layer.out_channels * k

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            module(example[:1])
    finally:
        for h in handles:
            h.remove()
    return total


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(model: VAE, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> Path:
    """Write the model, its config and plain-value ``meta`` atomically to ``path``."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": asdict(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    with atomic_writer(path) as fh:
        torch.save(payload, fh)
    return path


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[VAE, dict[str, Any]]:
    """Rebuild a :class:`VAE` from a checkpoint file alone, with ``weights_only=True``.

    Returns:
        (model in eval mode, meta dict).

    Raises:
        CheckpointError: missing file, corrupt file, a pickled object (refused by the safe loader),
            an unknown format or version, an unknown config field, or tensor shapes that do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint. Train one with `python -m latent train`.")
    corrupt = (
        f"{path}: not a readable checkpoint, the file is corrupt or truncated" + "{why}. Restore it from the "
        "repository (git checkout models/) or retrain with `python -m latent train`."
    )
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise CheckpointError(corrupt.format(why=" (not a torch zip archive)"))
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused by the safe loader (weights_only=True): it holds something other than "
            f"tensors and plain values ({str(exc).splitlines()[0][:200]}). Only load checkpoints written "
            "by `python -m latent train`."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(corrupt.format(why=f" ({type(exc).__name__})")) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a Latent Explorer checkpoint (no format marker {CHECKPOINT_FORMAT!r}).")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this version of Latent Explorer reads version "
            f"{FORMAT_VERSION}. Retrain with `python -m latent train`."
        )
    raw_config = payload.get("config")
    known = {f.name for f in fields(VAEConfig)}
    if not isinstance(raw_config, dict):
        raise CheckpointError(f"{path}: the checkpoint has no config dict.")
    unknown = sorted(set(raw_config) - known)
    if unknown:
        raise CheckpointError(
            f"{path}: unknown config fields {unknown}; allowed fields are {sorted(known)}."
        )
    try:
        config = VAEConfig(**raw_config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid config ({exc}).") from None
    model = VAE(config)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the checkpoint has no state_dict.")
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: shape {tuple(state[k].shape)} but the config needs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if problems:
        raise CheckpointError(
            f"{path}: the weights do not match the saved config: " + "; ".join(problems[:5])
            + ("; ..." if len(problems) > 5 else "")
        )
    model.load_state_dict(state)
    model.to(device).eval()
    meta = payload.get("meta") or {}
    return model, dict(meta)


@torch.no_grad()
def decode_images(model: VAE, z: np.ndarray) -> np.ndarray:
    """Decoder means for latent points: z of shape (d,) or (B, d) -> (28, 28) or (B, 28, 28) float32 in (0, 1)."""
    array = np.asarray(z, dtype=np.float32)
    single = array.ndim == 1
    batch = torch.from_numpy(np.atleast_2d(array).copy())
    if batch.shape[1] != model.config.latent_dim:
        raise ValueError(f"z must have {model.config.latent_dim} values per point; got shape {array.shape}")
    images = model.decode_mean(batch).squeeze(1).numpy()  # (B, 28, 28)
    return images[0] if single else images
