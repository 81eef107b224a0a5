"""Cached computations behind the Learn page, shared by every session (read-only results).

Keyed by the catalog key (itself a hash of the checkpoint and the data) and by the query's values, so a
rerun with the same inputs costs nothing, and a new model gets fresh results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from latent import teaching
from latent.catalog import kl_per_dimension
from latent.interpolation import LatentPath, geodesic_path
from ui.resources import Resources

#: The histogram range and resolution of step 5.
HIST_LIMIT = 4.0
HIST_BINS = 60
GRID_POINTS = 121
#: How many catalog means the uncertainty map draws as background (a seeded sample; all are searched).
BACKGROUND = 8000


@dataclass(frozen=True)
class PriorPicture:
    """Everything step 5 draws (see :func:`latent.teaching.mu_histogram` and ``aggregate_density``)."""

    edges: np.ndarray  # (B + 1,)
    density: np.ndarray  # (d, B)
    grid: np.ndarray  # (G,)
    aggregate: np.ndarray  # (d, G)
    prior: np.ndarray  # (G,)
    kl: np.ndarray  # (d,)


@st.cache_resource(show_spinner="Summing all 70,000 posteriors ...", max_entries=4)
def _prior_picture(key: str, _mu: np.ndarray, _sigma: np.ndarray, _catalog) -> PriorPicture:
    density, edges = teaching.mu_histogram(_mu, bins=HIST_BINS, limit=HIST_LIMIT)
    grid = np.linspace(-HIST_LIMIT, HIST_LIMIT, GRID_POINTS)
    return PriorPicture(edges, density, grid, teaching.aggregate_density(_mu, _sigma, grid),
                        teaching.prior_density(grid), kl_per_dimension(_catalog))


def prior_picture(res: Resources) -> PriorPicture:
    return _prior_picture(res.catalog.key, res.catalog.mu, res.catalog.sigma, res.catalog)


@st.cache_data(show_spinner=False, max_entries=256)
def _overlap(key: str, z: tuple[float, ...], k: int, spreads: tuple[float, ...], _res: Resources) -> np.ndarray:
    return teaching.overlap_curve(np.array(z), _res.catalog.mu, _res.catalog.sigma, k, spreads)


def overlap(res: Resources, z: np.ndarray, k: int, spreads: np.ndarray) -> np.ndarray:
    """:func:`latent.teaching.overlap_curve` over the catalog, cached per query."""
    return _overlap(res.catalog.key, tuple(float(v) for v in z), int(k), tuple(float(s) for s in spreads), res)


@st.cache_resource(show_spinner=False, max_entries=4)
def _background(key: str, n: int, size: int) -> np.ndarray:
    return np.sort(np.random.default_rng(0).choice(n, size=min(size, n), replace=False))


def background_items(res: Resources) -> np.ndarray:
    """A fixed, seeded sample of item numbers drawn as the background of the uncertainty map."""
    return _background(res.catalog.key, len(res.catalog), BACKGROUND)


@st.cache_resource(show_spinner="Bending the path along the decoder (about a second) ...", max_entries=64)
def _geodesic(sha: str, za: tuple[float, ...], zb: tuple[float, ...], n: int, _res: Resources) -> LatentPath:
    return geodesic_path(_res.model, np.array(za), np.array(zb), n)


def geodesic(res: Resources, za: np.ndarray, zb: np.ndarray, n: int) -> LatentPath:
    """:func:`latent.interpolation.geodesic_path`, cached per model and end points."""
    return _geodesic(res.checkpoint_sha256, tuple(float(v) for v in za), tuple(float(v) for v in zb), int(n), res)


@st.cache_resource(show_spinner=False, max_entries=64)
def _prototype(key: str, label: int, _res: Resources) -> int:
    from latent.teaching import class_prototype

    return class_prototype(_res.catalog.mu, _res.catalog.labels, label)


def prototype(res: Resources, label: int) -> int:
    """:func:`latent.teaching.class_prototype`: the most typical item of a class, cached per catalog."""
    return _prototype(res.catalog.key, int(label), res)
