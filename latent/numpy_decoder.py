"""The VAE decoder's forward pass in numpy, to show decoded garments without importing torch.

Importing torch takes over a second here, and the dashboard's landing page needs only the decoder
means sigmoid(decoder(z)). :class:`NumpyDecoder` holds the decoder's weights as float32 arrays and
runs the same layers (:class:`latent.model.VAE`'s ``decoder``)::

    z (B, d) -> Linear(d, hidden) -> SiLU -> Linear(hidden, C q q) -> SiLU -> (B, C, q, q), q = side / 4
      -> ConvTranspose2d(C, C, 4, stride 2, padding 1) -> SiLU -> (B, C, 2q, 2q)
      -> ConvTranspose2d(C, 1, 4, stride 2, padding 1) -> (B, 1, side, side) logits -> sigmoid

A transposed convolution with kernel 4, stride 2 and padding 1 maps input pixel (i, j) through kernel
tap (a, b) to output pixel (2i - 1 + a, 2j - 1 + b): each of the 16 taps is one matrix product over
the channels, added into a strided view of the output. The weights are exported once per checkpoint
(:meth:`NumpyDecoder.from_model`, which needs torch) to a plain ``.npz`` keyed by the checkpoint's
SHA-256 and read back with ``allow_pickle=False``; the results agree with torch to float32 rounding
(tests/test_numpy_decoder.py).
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .io import atomic_writer

if TYPE_CHECKING:
    from .model import VAE

#: Version of the exported file; a file of another version is ignored (and exported again).
FORMAT_VERSION = 1

#: The decoder's parameters, by name in the exported file and in ``VAE.state_dict()``.
_STATE_KEYS = {
    "fc1_weight": "decoder.0.weight",  # (hidden, d)
    "fc1_bias": "decoder.0.bias",  # (hidden,)
    "fc2_weight": "decoder.2.weight",  # (C q q, hidden)
    "fc2_bias": "decoder.2.bias",  # (C q q,)
    "deconv1_weight": "decoder.5.weight",  # (C, C, 4, 4)
    "deconv1_bias": "decoder.5.bias",  # (C,)
    "deconv2_weight": "decoder.7.weight",  # (C, 1, 4, 4)
    "deconv2_bias": "decoder.7.bias",  # (1,)
}


def _silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), with sigmoid(x) = (1 + tanh(x / 2)) / 2: no overflow for any x."""
    return x * (0.5 + 0.5 * np.tanh(0.5 * x))


def _conv_transpose_4s2p1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """ConvTranspose2d(kernel 4, stride 2, padding 1): x (B, C_in, H, W), weight (C_in, C_out, 4, 4),
    bias (C_out,) -> (B, C_out, 2H, 2W)."""
    batch, _, height, width = x.shape
    c_out = weight.shape[1]
    taps = np.einsum("bchw,cokl->klbohw", x, weight, optimize=True)  # (4, 4, B, C_out, H, W)
    full = np.zeros((batch, c_out, 2 * height + 2, 2 * width + 2), dtype=x.dtype)  # before cropping
    for a in range(4):
        for b in range(4):
            full[:, :, a : a + 2 * height : 2, b : b + 2 * width : 2] += taps[a, b]
    return full[:, :, 1 : 2 * height + 1, 1 : 2 * width + 1] + bias[None, :, None, None]


@dataclass(frozen=True)
class NumpyDecoder:
    """The decoder of one checkpoint, as float32 numpy arrays (see the module docstring)."""

    weights: dict[str, np.ndarray]  # by the keys of _STATE_KEYS, float32, read-only
    checkpoint_sha256: str  # the checkpoint the weights came from

    @property
    def latent_dim(self) -> int:
        return int(self.weights["fc1_weight"].shape[1])

    @property
    def image_side(self) -> int:
        return 4 * self._q

    @property
    def _q(self) -> int:
        channels = self.weights["deconv1_weight"].shape[0]
        return round((self.weights["fc2_weight"].shape[0] / channels) ** 0.5)

    @classmethod
    def from_model(cls, model: VAE, checkpoint_sha256: str) -> NumpyDecoder:
        """Copy the decoder weights out of a loaded :class:`latent.model.VAE`."""
        state = model.state_dict()
        weights = {name: state[key].detach().cpu().numpy().astype(np.float32) for name, key in _STATE_KEYS.items()}
        return cls._frozen(weights, checkpoint_sha256)

    @classmethod
    def _frozen(cls, weights: dict[str, np.ndarray], checkpoint_sha256: str) -> NumpyDecoder:
        arrays = {name: np.array(array, dtype=np.float32, order="C") for name, array in weights.items()}
        for array in arrays.values():
            array.setflags(write=False)
        return cls(arrays, checkpoint_sha256)

    def decode_mean(self, z: ArrayLike) -> np.ndarray:
        """Decoder means for z of shape (d,) or (B, d): (28, 28) or (B, 28, 28) float32 in (0, 1)."""
        array = np.asarray(z, dtype=np.float32)
        single = array.ndim == 1
        batch = np.atleast_2d(array)
        if batch.ndim != 2 or batch.shape[1] != self.latent_dim:
            raise ValueError(f"z must have {self.latent_dim} values per point; got shape {array.shape}")
        w = self.weights
        h = _silu(batch @ w["fc1_weight"].T + w["fc1_bias"])  # (B, hidden)
        h = _silu(h @ w["fc2_weight"].T + w["fc2_bias"])  # (B, C q q)
        q = self._q
        h = h.reshape(len(batch), -1, q, q)  # (B, C, q, q)
        h = _silu(_conv_transpose_4s2p1(h, w["deconv1_weight"], w["deconv1_bias"]))  # (B, C, 2q, 2q)
        logits = _conv_transpose_4s2p1(h, w["deconv2_weight"], w["deconv2_bias"])[:, 0]  # (B, side, side)
        images = (0.5 + 0.5 * np.tanh(0.5 * logits)).astype(np.float32)  # sigmoid
        return images[0] if single else images

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights atomically to ``path`` (an uncompressed ``.npz``)."""
        path = Path(path)
        with atomic_writer(path) as fh:
            np.savez(fh, allow_pickle=False, format_version=np.array(FORMAT_VERSION),
                     checkpoint_sha256=np.array(self.checkpoint_sha256), **self.weights)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], checkpoint_sha256: str) -> NumpyDecoder | None:
        """The decoder saved at ``path`` for this checkpoint; None when the file is missing, damaged (the zip
        format's CRC-32 check), of another version or checkpoint, or not shaped like a decoder."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                if int(npz["format_version"]) != FORMAT_VERSION or str(npz["checkpoint_sha256"]) != checkpoint_sha256:
                    return None
                weights = {name: npz[name] for name in _STATE_KEYS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        if not _consistent(weights):
            return None
        return cls._frozen(weights, checkpoint_sha256)


def _consistent(w: dict[str, np.ndarray]) -> bool:
    """Do the arrays fit together as the decoder described in the module docstring?"""
    try:
        hidden, d = w["fc1_weight"].shape
        channels = w["deconv1_weight"].shape[0]
        flat = w["fc2_weight"].shape[0]
        q = round((flat / channels) ** 0.5)
        return (
            d >= 1 and q * q * channels == flat and w["fc1_bias"].shape == (hidden,)
            and w["fc2_weight"].shape == (flat, hidden) and w["fc2_bias"].shape == (flat,)
            and w["deconv1_weight"].shape == (channels, channels, 4, 4) and w["deconv1_bias"].shape == (channels,)
            and w["deconv2_weight"].shape == (channels, 1, 4, 4) and w["deconv2_bias"].shape == (1,)
            and all(np.isfinite(array).all() for array in w.values())
        )
    except (KeyError, ValueError, ZeroDivisionError):
        return False


def cache_file(cache_dir: str | os.PathLike[str], checkpoint_sha256: str) -> Path:
    """Where the numpy decoder of a checkpoint is kept in the cache folder."""
    return Path(cache_dir) / f"decoder-{checkpoint_sha256[:20]}.npz"


def load_or_export(
    cache_dir: str | os.PathLike[str], checkpoint_sha256: str, load_model: Callable[[], VAE]
) -> NumpyDecoder:
    """The numpy decoder of a checkpoint: from the cache folder, else exported from ``load_model()``
    (which imports torch) and saved there once; a read-only cache folder only costs the export again."""
    path = cache_file(cache_dir, checkpoint_sha256)
    decoder = NumpyDecoder.load(path, checkpoint_sha256) if checkpoint_sha256 else None
    if decoder is None:
        decoder = NumpyDecoder.from_model(load_model(), checkpoint_sha256)
        with contextlib.suppress(OSError):
            decoder.save(path)
    return decoder

