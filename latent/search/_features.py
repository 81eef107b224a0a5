r"""One score's prepared features at one spread: float32 features, error norms, int16 codes, rescoring terms.

Built from the score's record (``latent.scores.Score``): psi for the item side, the segments for the
Cauchy-Schwarz error bounds, and ``item_term`` for the rescoring. The bounds are derived in
docs/search.md ("The float32 error bound", "The fused scan").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from latent.scores import Score, spread_constants
from latent.search import _query
from latent.search._query import FLOAT32_SAFE, Codes, Groups, ScorePlan
from latent.search._tiles import to_tiles

_U32 = 2.0**-24  # float32 unit roundoff
_U64 = 2.0**-53  # float64 unit roundoff
_PAD_KEY = -1e38  # constant feature of padding items: below any real key, and still finite in float32

#: Groups kept beyond k in the "blas" selection, so that kappa is usually well below the k-th key.
EXTRA_GROUPS = 8

#: Tiles (and so candidates) kept beyond k in the "fused" scan.
EXTRA_TILES = 24


@dataclass(frozen=True)
class Catalog:
    """The fitted catalog as the features need it (private arrays, never written)."""

    centered_mu: np.ndarray  # (N, d) mu - centre
    sigma: np.ndarray  # (N, d)
    log_sigma: np.ndarray  # (N, d)
    mu_sigma: np.ndarray  # (N, 2, d)
    center: np.ndarray  # (d,)
    group_size: int
    fused: bool  # whether to build the int16 codes


@dataclass(frozen=True)
class Prepared:
    """What queries of one score at one spread read.

    ``groups`` is None where psi does not fit in float32: that score and spread are answered by float64
    brute force. Memory per item: 4 m bytes of features, 4 n_segments of norms, 2 m of codes ("fused"),
    8 d of rescoring terms (scores with an item term) (m = the score's width).
    """

    plan: ScorePlan
    groups: Groups | None
    codes: Codes | None
    item_norms: np.ndarray | None  # (N_pad, n_segments) float32 bounds on ||psi_i,b||_2, rounded up
    group_norms: np.ndarray | None  # (N_pad / group_size, n_segments) float64 maxima per group
    compiled_rescore: bool  # latent.search._query.rescore_rows equals numpy's kernel on this catalog


def private(array: ArrayLike, dtype: type = np.float64) -> np.ndarray:
    """A C-contiguous copy that only the index holds. Kept writeable: numba's dispatcher types writeable
    aligned arrays in C but read-only ones in Python, which costs microseconds per argument and query."""
    return np.array(array, dtype=dtype, order="C", copy=True)


def build(score: Score, spread: np.ndarray, catalog: Catalog, shared: Prepared | None) -> Prepared:
    """The prepared features of ``score`` at the spread (d,); ``shared``: the prepared features of
    ``score.features_from`` when that is another score (kl reads likelihood's), else None."""
    d = catalog.sigma.shape[1]
    if score.item_term is None:
        terms, has_terms = private(np.zeros((1, d))), False
    elif score.item_term_uses_spread:
        terms, has_terms = private(score.item_term(catalog.sigma, spread)), True
    else:  # log sigma
        terms, has_terms = catalog.log_sigma, True
    arrays, scalars = spread_constants(spread)
    if shared is not None:
        base_plan = shared.plan
        groups, codes, item_norms, group_norms = shared.groups, shared.codes, shared.item_norms, shared.group_norms
        norm_bounds, error_factor, max_l1, slack = (
            base_plan.norm_bounds, base_plan.error_factor, base_plan.max_l1, base_plan.slack
        )
    else:
        psi, magnitude = score.psi(catalog.centered_mu, catalog.sigma, catalog.log_sigma,
                                   spread if score.spread_features else None)
        groups, codes, item_norms, group_norms, norm_bounds, max_l1 = _layouts(score, psi, magnitude, catalog)
        m = psi.shape[1]
        # Rounding psi and phi to float32 and any float32 summation order (with or without FMA) err by at
        # most (m+3)u/(1-(m+3)u) sum_j |psi_j phi_j|; doubling it also covers every float64 error.
        error_factor = 2.0 * (m + 3) * _U32 / (1.0 - (m + 3) * _U32) * (1.0 + 1e-5)
        slack = 16.0 * (d + m + 8) * _U64
    plan = ScorePlan(
        code=score.code, squared=score.squared, higher_is_nearer=score.higher_is_nearer, center=catalog.center,
        spread_arrays=private(arrays), spread_scalars=private(scalars), spread=private(spread),
        norm_bounds=norm_bounds, error_factor=float(error_factor), max_l1=float(max_l1), slack=float(slack),
        mu_sigma=catalog.mu_sigma, terms=terms, has_terms=has_terms,
    )
    compiled = groups is not None and _query.matches_numpy(score.name, plan)
    return Prepared(plan, groups, codes, item_norms, group_norms, compiled)


def _layouts(score: Score, psi: np.ndarray, magnitude: np.ndarray, catalog: Catalog):
    """Float32 features (m, N_pad), padded to whole groups, their per-item and per-group error norms and
    the int16 codes; all None (and infinite bounds) where psi does not fit in float32.

    Padding items have psi = 0 except the constant column, -1e38: their key is -1e38 for every query
    whose keys fit in float32 (|key| < 1e30), so they never rank above a real item."""
    n, m = psi.shape
    d = catalog.sigma.shape[1]
    widths = [d if segment == "d" else 1 for segment in score.segments]
    if not np.isfinite(psi).all() or np.abs(psi).max() >= FLOAT32_SAFE:
        return None, None, None, None, private(np.full((len(widths), 2), np.inf)), math.inf
    size = catalog.group_size
    n_pad = -(-n // size) * size
    starts = np.cumsum([0, *widths[:-1]])
    norms = np.zeros((n_pad, len(widths)))  # padding rows stay 0: they never need a bound
    for b, (first, width) in enumerate(zip(starts, widths, strict=True)):
        norms[:n, b] = np.sqrt((psi[:, first : first + width] ** 2).sum(axis=1))
    norms[:n, -1] = np.maximum(norms[:n, -1], magnitude)  # the constant column's parts
    norms *= 1.0 + 1e-6  # round up, so that the float32 copy is still an upper bound
    features = np.zeros((m, n_pad), dtype=np.float32)
    features[:, :n] = psi.T
    features[-1, n:] = _PAD_KEY
    max_norms = norms[:n].max(axis=0)
    groups = Groups(features=features, group_size=int(size), extra_groups=EXTRA_GROUPS, n_items=int(n))
    codes = _quantize(psi) if catalog.fused else None
    return (
        groups,
        codes,
        norms.astype(np.float32),
        norms.reshape(size, n_pad // size, len(widths)).max(axis=0),  # item i is in group i mod (n_pad / size)
        private(np.stack([max_norms, np.sqrt(widths)], axis=1)),
        float(np.sqrt(widths) @ max_norms),
    )


def _quantize(psi: np.ndarray) -> Codes:
    """int16 codes of the item features psi (N, m), in the scan's tile layout, with their error weights:
    psi_ij = mid_j + scale_j q_ij + e_ij, |q_ij| <= 32767, and for any query phi the float32 sum
    S_i = sum_j fl32(phi_j scale_j) q_ij (any order, with or without FMA) satisfies
    |psi_i . phi - (phi . mid + S_i)| <= error_weights . |phi| (docs/search.md, "The fused scan")."""
    n, m = psi.shape
    low, high = psi.min(axis=0), psi.max(axis=0)  # (m,)
    mid = 0.5 * (low + high)
    span = high - low
    scale = np.where(span > 0.0, span / 65532.0, 1.0)  # |psi - mid| / scale <= 32766, with room to round
    codes64 = np.rint((psi - mid) / scale)  # (N, m)
    np.clip(codes64, -32767.0, 32767.0, out=codes64)
    tiles = to_tiles(codes64.T.astype(np.int16))
    residual = np.abs(psi - (mid + scale * codes64)).max(axis=0)  # (m,) measured, in float64
    magnitude = np.abs(psi).max(axis=0) + np.abs(mid)
    arithmetic = (m + 3) * _U32 / (1.0 - (m + 3) * _U32)
    error_weights = (
        residual * (1.0 + 1e-6)
        + scale * np.abs(codes64).max(axis=0) * arithmetic * (1.0 + 1e-5)  # float32: phi_j scale_j, products, sums
        + 64.0 * (m + 4) * _U64 * magnitude  # float64 rounding: the residuals, psi, the offset, fn
    )
    return Codes(
        tiles=tiles, scale=private(scale), mid=private(mid), error_weights=private(error_weights),
        extra_tiles=EXTRA_TILES, n_items=int(n),
    )
