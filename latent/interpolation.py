"""Paths between two latent points and the garments decoded along them.

- The straight line ``z(t) = (1 - t) z_a + t z_b`` for K evenly spaced t in [0, 1]: what a VAE's smooth latent
  space is usually shown with.
- The geodesic under the decoder: the K-point curve with the same ends that minimises the decoded path's
  energy (:func:`latent.geodesic.continuous_geodesic`, squared L2 between consecutive decoded images). It bends
  around regions where the decoded image changes fast, so its frames change more evenly.

Nothing here imports streamlit; the geodesic takes tens of decoder evaluations or more (bench/bench_geometry.py
times it), so callers cache it. The maths: docs/cartography.md section 5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .geodesic import continuous_geodesic, straight_line
from .geometry import vae_decoder
from .model import VAE, decode_images


@dataclass(frozen=True)
class LatentPath:
    """A latent path and its decoded frames.

    Attributes:
        points: (K, d) float64 latent points, points[0] = z_a and points[-1] = z_b.
        frames: (K, 28, 28) float32 decoder means in (0, 1).
        kind: "straight" or "geodesic".
        length: sum of the L2 distances between consecutive decoded frames (flattened images).
    """

    points: np.ndarray
    frames: np.ndarray
    kind: str
    length: float


def _ends(za: ArrayLike, zb: ArrayLike, d: int, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(za, dtype=np.float64)
    b = np.asarray(zb, dtype=np.float64)
    if a.shape != (d,) or b.shape != (d,):
        raise ValueError(f"z_a and z_b must both have shape ({d},); got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("z_a and z_b must be finite")
    if int(n_points) < 3:
        raise ValueError(f"n_points must be >= 3; got {n_points!r}")
    return a, b


def decoded_length(frames: np.ndarray) -> float:
    """``sum_k ||f_{k+1} - f_k||_2`` over consecutive frames (K, H, W), in pixel intensity units."""
    flat = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)  # (K, H*W)
    return float(np.linalg.norm(np.diff(flat, axis=0), axis=1).sum())


def straight_path(model: VAE, za: ArrayLike, zb: ArrayLike, n_points: int = 10) -> LatentPath:
    """K evenly spaced points on the segment from z_a to z_b, and their decoded frames."""
    a, b = _ends(za, zb, model.config.latent_dim, n_points)
    points = straight_line(a, b, int(n_points))  # (K, d)
    frames = decode_images(model, points)  # (K, 28, 28)
    return LatentPath(points, frames, "straight", decoded_length(frames))


def geodesic_path(model: VAE, za: ArrayLike, zb: ArrayLike, n_points: int = 10, *, max_iter: int = 100,
                  rtol: float = 1e-6) -> LatentPath:
    """The decoder geodesic from z_a to z_b with K points (squared-L2 energy, L-BFGS), and its frames.

    The model is not modified (gradients flow to the curve only).
    """
    a, b = _ends(za, zb, model.config.latent_dim, n_points)
    result = continuous_geodesic(vae_decoder(model), a, b, n_points=int(n_points), measure="l2",
                                 max_iter=max_iter, rtol=rtol)
    frames = decode_images(model, result.curve)  # (K, 28, 28)
    return LatentPath(result.curve, frames, "geodesic", decoded_length(frames))
