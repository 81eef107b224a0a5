"""Analytic decoders with known geometry (docs/geometry.md section 8), shared by the geometry tests.

Each is embedded in R^784 by a random orthonormal Q, so the tests exercise the same output size as the VAE.
All work in float64.
"""

from __future__ import annotations

import numpy as np
import torch

from latent.geometry import Decoder

D_OUT = 784


def orthonormal(m: int, seed: int) -> torch.Tensor:
    """(784, m) with orthonormal columns."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((D_OUT, m)))
    return torch.tensor(q)


def linear(d: int = 10, seed: int = 0) -> tuple[Decoder, np.ndarray]:
    """f(z) = A z + b with a random A (784, d). Returns (decoder, A)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((D_OUT, d)) / np.sqrt(D_OUT) * rng.uniform(0.5, 2.0, d)
    b = torch.tensor(rng.standard_normal(D_OUT))
    At = torch.tensor(A)
    return Decoder(lambda z: z @ At.T + b, d), A


def function_graph(d: int = 10, seed: int = 1) -> tuple[Decoder, callable]:
    """f(z) = Q [z; g(z)] with g(z) = sin(w.z) + 0.3 |z|^2; G = I + grad g grad g^T.

    Returns (decoder, grad_g) with grad_g: (N, d) numpy -> (N, d) numpy.
    """
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d)
    wt = torch.tensor(w)
    Q = orthonormal(d + 1, seed)

    def f(z: torch.Tensor) -> torch.Tensor:
        g = torch.sin(z @ wt) + 0.3 * (z**2).sum(-1)
        return torch.cat([z, g[:, None]], dim=1) @ Q.T

    def grad_g(z: np.ndarray) -> np.ndarray:
        return np.cos(z @ w)[:, None] * w[None, :] + 0.6 * z

    return Decoder(f, d), grad_g


def sphere_point(z: np.ndarray) -> np.ndarray:
    """(N, 2) (theta, phi) -> (N, 3) unit vectors."""
    th, ph = z[:, 0], z[:, 1]
    return np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], axis=1)


def great_circle(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = sphere_point(np.asarray(a)[None])[0], sphere_point(np.asarray(b)[None])[0]
    return float(np.arccos(np.clip(pa @ pb, -1.0, 1.0)))


def sphere(seed: int = 2, radius: float = 1.0) -> Decoder:
    """Q * radius * (sin t cos p, sin t sin p, cos t): G = r^2 diag(1, sin^2 t), MF = r^2 sin t."""
    Q = orthonormal(3, seed)

    def f(z: torch.Tensor) -> torch.Tensor:
        th, ph = z[:, 0], z[:, 1]
        x = torch.stack([torch.sin(th) * torch.cos(ph), torch.sin(th) * torch.sin(ph), torch.cos(th)], dim=1)
        return radius * x @ Q.T

    return Decoder(f, 2)


def cylinder(R: float = 0.5, seed: int = 3) -> Decoder:
    """Q (R cos(z1/R), R sin(z1/R), z2): G = I, geodesics are straight in z with length |dz| (> chord)."""
    Q = orthonormal(3, seed)

    def f(z: torch.Tensor) -> torch.Tensor:
        x = torch.stack([R * torch.cos(z[:, 0] / R), R * torch.sin(z[:, 0] / R), z[:, 1]], dim=1)
        return x @ Q.T

    return Decoder(f, 2)


def mlp_logits(d: int = 10, hidden: int = 64, seed: int = 4) -> tuple[Decoder, torch.nn.Module]:
    """A small smooth (tanh) MLP giving Bernoulli logits (784,), as a float64 Bernoulli decoder."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, D_OUT)
    ).double()
    return Decoder.from_logits(lambda z: net(z), d), net


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only copy: any in-place write by the code under test raises."""
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a
