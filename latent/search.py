r"""Exact, fast top-k search of the catalog under any score of :mod:`latent.scores`.

:class:`SearchIndex` is fitted once on the catalog's ``mu`` and ``sigma`` (both shape (N, d)) and then
answers queries: :meth:`~SearchIndex.search` (one query), :meth:`~SearchIndex.search_batch` (many) and
:meth:`~SearchIndex.scores_all` (every item's score, for full rankings). Results are exact: the top-k
returned, with their float64 scores, are exactly what sorting ``SCORES[name].fn(z, mu, sigma, s)`` over
the whole catalog gives, nearest first and ties broken by the lower item index.

Linear feature maps
-------------------
Every score is, up to a monotone map, an inner product between per-item features psi(x) and per-query
features phi(z, s). Write y = z - c and m = mu - c for a fixed centre c (the catalog's mean mu; the
scores only depend on z - mu, and centring keeps float32 cancellation small), a = 1/sigma^2 and
w = 1/(2 s^2), all per dimension, and let "key" be psi . phi, higher = nearer.

Four scores have item features that do not depend on the spread s:

* likelihood: log q(z|x) = sum[-(y - m)^2 a/2 - log sigma] - (d/2) log 2pi
  = sum y^2 (-a/2) + sum y (m a) + sum(-m^2 a/2 - log sigma) - (d/2) log 2pi, so
  psi = [-a/2, m a, sum(-m^2 a/2 - log sigma)], phi = [y^2, y, 1], value = key - (d/2) log 2pi.
* kl: KL = sum[log sigma - log s + (s^2 + (y - m)^2) a/2 - 1/2]
  = sum (s^2 + y^2)(a/2) - sum y (m a) + sum(m^2 a/2 + log sigma) - sum log s - d/2, so it shares
  likelihood's psi, with phi = [s^2 + y^2, y, 1] and value = (-sum log s - d/2) - key. (This is the
  identity kl = -log q(z|x) + sum s^2/(2 sigma^2) + c(s).)
* mahalanobis^2 = sum (y - m)^2 a = sum y^2 a - 2 sum y m a + sum m^2 a:
  psi = [-a, 2 m a, -sum m^2 a], phi = [y^2, y, 1], value = sqrt(-key).
* euclidean^2 = sum y^2 - 2 sum y m + sum m^2: psi = [2 m, -sum m^2], phi = [y, 1] (d + 1 features),
  value = sqrt(sum y^2 - key).

The other four are linear too, in fewer features, once s is fixed: s then only enters constants. The
index builds their features for the default spread at fit time, and for another spread the first time
it is asked for (kept in a small cache), so moving z at a fixed s, as the dashboard does, costs one
inner product per item:

* kl_reverse = sum[log s - log sigma + (sigma^2 + (m - y)^2) w - 1/2]
  = sum w y^2 - 2 sum w y m + sum[w (sigma^2 + m^2) - log sigma] + sum(log s - 1/2), a weighted
  Euclidean distance plus a per-item constant: psi_s = [m, -sum(w (sigma^2 + m^2) - log sigma)],
  phi = [2 w y, 1] (d + 1 features), value = sum(w y^2 + log s - 1/2) - key.
* wasserstein2^2 = sum (y - m)^2 + sum (s - sigma)^2 = sum y^2 - 2 sum y m + sum[m^2 + (s - sigma)^2]:
  psi_s = [m, -sum(m^2 + (s - sigma)^2)], phi = [2 y, 1] (d + 1 features), value = sqrt(sum y^2 - key).
* jeffreys = kl + kl_reverse = sum[(s^2 + y^2) a/2 - y m a + m^2 a/2 + w (sigma^2 + m^2) - 2 w y m + w y^2 - 1]
  = sum y^2 (a/2) - sum y m (a + 2 w) + sum[(s^2 + m^2) a/2 + w (sigma^2 + m^2)] + sum(w y^2) - d:
  psi_s = [-a/2, m (a + 2 w), -sum((s^2 + m^2) a/2 + w (sigma^2 + m^2))], phi = [y^2, y, 1]
  (2d + 1 features), value = sum(w y^2) - d - key.
* bhattacharyya mixes s into each item's variance, v = sigma^2 + s^2, so it is not linear in features
  that are independent of s. For one fixed s it is: with b = 1/(4 v),
  D_B = sum (y - m)^2 b + (1/2) log(v / (2 s sigma))
  = sum y^2 b - 2 sum y m b + sum(m^2 b + (1/2) log v - (1/2) log sigma) - (1/2) sum log(2 s), so
  psi_s = [-b, 2 m b, -sum(m^2 b + log(v)/2 - log(sigma)/2)], phi = [y^2, y, 1] and
  value = -(1/2) sum log(2 s) - key.

Exactness
---------
Per query the index computes all keys in float32 with one matrix-vector product over the contiguous
feature matrix (stored transposed, (m, N), so that numpy's BLAS sgemv streams it), picks an over-fetched
candidate set from it, and rescores the candidates in float64 with the same kernel as ``fn``. The
candidates come from a partial sort of the maxima of groups of ``block_size`` items rather than of all
N keys (item i is in group i mod (N_pad / block_size), so that all maxima come from vectorised passes:
first over subgroups of 16 items, then over groups): with kappa the (k + 8)-th largest group maximum,
every key outside the best k + 8 groups is at most kappa, and the candidates are the keys above kappa,
about k + 8 items, found through the subgroups whose maximum exceeds kappa (compiled for single
queries, :mod:`latent.group_select`; numpy for ties at kappa, batches, and where the compiled
rescoring does not apply). The float32 key of item i differs from the exact psi . phi by at most

    E_i = 2 (m + 3) u / (1 - (m + 3) u) * sum_j |psi_ij| |phi_j| + eta,     u = 2^-24,

(rounding psi and phi to float32, then any summation order, with or without FMA; the factor 2 also
covers the float64 errors of building psi and of ``fn`` itself, which are 2^29 times smaller, and eta
covers float32 underflow). The sum is bounded per item by Cauchy-Schwarz over the feature blocks,
sum_b ||psi_i,b||_2 ||phi_b||_2, precomputed per item, per group of items and for the whole catalog.
After rescoring, tau is the k-th best float64 value among the candidates; it is turned into a key
threshold t (with a float64 slack) such that any item whose exact key is below t is strictly worse
than tau. Every item outside the candidates has a float32 key no higher than a known kappa (the best
key left out), so if kappa + E_max < t no left-out item can enter the top k, even on a tie. Otherwise
the candidate set is widened to every item whose own bound key_i + E_i reaches t (found through the
per-group bounds, then per item) and rescored; that set provably contains the top k. Features too large
for float32 fall back to float64 brute force, which is exact by definition.

The "fused" backend (the default from 200,000 items) reads int16 codes of the features instead, half the
bytes of float32: each feature column j is stored as mid_j + scale_j q_ij with |q_ij| <= 32767, in blocks
of 64 items that the scan reads as one stream, and a compiled loop computes S_i = sum_j fl32(phi_j
scale_j) q_ij in float32, keeping the best block maxima in a heap as it goes (:mod:`latent.fused_scan`).
kappa is the (k + 25)-th largest block maximum, so every item outside the k + 24 best blocks has S_i <=
kappa, and the candidates are the items above kappa in those blocks. The exact key differs from
sum_j phi_j mid_j + S_i by at most sum_j |phi_j| w_j for every item, where w_j covers the quantisation
residual and the float32 and float64 rounding (``_Quantized``); the same certificate and widening apply
(the widening recomputes float32 keys). On the benchmark's catalogs fewer than 40 items lie within twice
that bound of the 20th key, so widening is rare.

A single query is compiled from z to the certified top k (:mod:`latent.single_query`): the query
features, the bounds, the keys and the selection, the rescoring and the certificate, in one call for
"blas" and in two around the scan for "fused"; Python only validates the input and handles the rare
outcomes (ties at kappa, widening, features too large for float32).

Rescoring reads one (N, 2 + t, d) table per score: mu, sigma and the kernel's per-item terms that
depend only on (sigma, s) (``latent.scores.KERNEL_TERMS``), precomputed for the spread in use, so that
one gather fetches everything and the values still equal ``fn``'s bit for bit. A compiled loop
(:mod:`latent.rescore`) does the same arithmetic in the same order as numpy, a few microseconds instead
of about twenty; the index checks it against the numpy kernel on each table before it relies on it,
and uses numpy where they differ (or for d > 128).

Thread safety: after ``fit`` the index is only read, except for a small lock-protected cache of
spread-dependent features by spread, so one fitted index can serve many threads. The library never
changes torch's, BLAS's or FAISS's thread counts; callers (the benchmark) may.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from latent.scores import (
    KERNEL_TERMS,
    KERNELS,
    check_catalog,
    check_queries,
    check_query,
    check_spread,
    default_spread,
    get_score,
)

if TYPE_CHECKING:
    import torch

#: Search backends by name: "auto" (default: "fused" for catalogs of at least FUSED_MIN_ITEMS items,
#: else "blas"), "fused" (a compiled scan over int16 feature codes that keeps the best blocks as it goes,
#: :mod:`latent.fused_scan`), "blas" (numpy's BLAS, then numpy selection) and "faiss" (FAISS's exact
#: inner-product index).
BACKENDS: tuple[str, ...] = ("auto", "fused", "blas", "faiss")

#: From this catalog size "auto" picks "fused": it reads half the bytes, which pays once the features
#: no longer fit in the cache (measured on the 2-core development machine at 1M items, one thread:
#: 0.82 ms against 1.97 ms for Euclidean with "blas"), while at 70,000 items "blas" is a little faster
#: with one thread (117 against 125 us for Mahalanobis) and much faster with two (76 against 125 us).
FUSED_MIN_ITEMS = 200_000

#: Scores whose item features do not depend on the spread s (built once, at fit time).
LINEAR_SCORES: tuple[str, ...] = ("likelihood", "kl", "mahalanobis", "euclidean")

#: Scores whose item features are built for one spread s (the default at fit time, others on first use).
SPREAD_FEATURE_SCORES: tuple[str, ...] = ("kl_reverse", "jeffreys", "wasserstein2", "bhattacharyya")

_U32 = 2.0**-24  # float32 unit roundoff
_U64 = 2.0**-53  # float64 unit roundoff
_FLOAT32_SAFE = 1e30  # features or keys beyond this could overflow float32: use float64 brute force
_SPREAD_CACHE_SIZE = 2  # feature matrices kept per spread-dependent score, by spread (about 25 MB each at 70k)
_EXTRA_BLOCKS = 8  # blocks gathered beyond k, so the left-out maximum is usually well below the k-th key
_EXTRA_CANDIDATES = 24  # candidates rescored beyond k
_QUERY_CHUNK = 8  # queries per matrix product in batches: their keys (8 x N) stay in cache
_SUBGROUP = 16  # items per subgroup in the two-level selection of group maxima
_SUBGROUP_ROWS = np.arange(_SUBGROUP)[:, None]
_COMPILED_MAX_DIM = 128  # latent.rescore.MAX_DIM, without importing numba here
_KINDS = {name: kind for kind, name in enumerate(
    ("likelihood", "euclidean", "mahalanobis", "kl", "kl_reverse", "jeffreys", "bhattacharyya", "wasserstein2")
)}  # latent.rescore.KINDS
_PAD_KEY = -1e38  # constant feature of padding items: below any real key, and still finite in float32


class NotFittedError(ValueError, AttributeError):
    """The index is used before :meth:`SearchIndex.fit` (same bases as scikit-learn's)."""


# --------------------------------------------------------------------------------------------------
# Feature maps. Each returns float64 arrays; see the module docstring for the derivations.


@dataclass(frozen=True)
class _ItemFeatures:
    psi: np.ndarray  # (N, m) float64 item features, key = psi @ phi, higher = nearer
    const_magnitude: np.ndarray  # (N,) sum of |parts| of the constant column, >= |psi[:, -1]|


@dataclass(frozen=True)
class _QueryFeatures:
    phi: np.ndarray  # (B, m) float64 query features
    const: np.ndarray  # (B,) value = const + key (higher nearer) or const - key (lower), before any sqrt
    const_magnitude: np.ndarray  # (B,) sum of |parts| of const, for the float64 slack


@dataclass(frozen=True)
class _Form:
    blocks: tuple[str, ...]  # widths of the feature blocks: "d" or "1"
    squared: bool  # value = sqrt(const - key) instead of const -/+ key
    higher_is_nearer: bool
    spread_features: bool  # psi depends on s (bhattacharyya)


_FORMS: dict[str, _Form] = {
    "likelihood": _Form(("d", "d", "1"), squared=False, higher_is_nearer=True, spread_features=False),
    "kl": _Form(("d", "d", "1"), squared=False, higher_is_nearer=False, spread_features=False),
    "mahalanobis": _Form(("d", "d", "1"), squared=True, higher_is_nearer=False, spread_features=False),
    "euclidean": _Form(("d", "1"), squared=True, higher_is_nearer=False, spread_features=False),
    "kl_reverse": _Form(("d", "1"), squared=False, higher_is_nearer=False, spread_features=True),
    "jeffreys": _Form(("d", "d", "1"), squared=False, higher_is_nearer=False, spread_features=True),
    "wasserstein2": _Form(("d", "1"), squared=True, higher_is_nearer=False, spread_features=True),
    "bhattacharyya": _Form(("d", "d", "1"), squared=False, higher_is_nearer=False, spread_features=True),
}

#: Scores that share another score's item features (kl is likelihood with a different query map).
_SHARED_FEATURES = {"kl": "likelihood"}


def _column(values: np.ndarray) -> np.ndarray:
    return values[:, None]


def item_features(
    name: str,
    mu: ArrayLike,
    sigma: ArrayLike,
    center: ArrayLike | None = None,
    s: ArrayLike | float | None = None,
) -> np.ndarray:
    """The item features psi of shape (N, m) of a score: m = 2d+1, or d+1 for euclidean, kl_reverse
    and wasserstein2.

    ``center`` (d,) defaults to 0; the index uses the catalog mean. ``s`` is used only by the scores in
    :data:`SPREAD_FEATURE_SCORES` (None: the default spread of ``sigma``). Together with
    :func:`query_features` and :func:`value_from_key` this reproduces ``SCORES[name].fn`` (see the module
    docstring for the derivation of each map).
    """
    mu_array, sigma_array = check_catalog(mu, sigma)
    d = mu_array.shape[1]
    center_array = np.zeros(d) if center is None else check_query(center, d)
    if name not in _FORMS:
        raise ValueError(f"unknown score {name!r}; choose one of: {', '.join(_FORMS)}")
    spread = None
    if _FORMS[name].spread_features:
        spread = default_spread(sigma_array) if s is None else np.broadcast_to(check_spread(s, d), (d,))
    return _item_features(name, mu_array - center_array, sigma_array, np.log(sigma_array), spread).psi


def _item_features(
    name: str, m: np.ndarray, sigma: np.ndarray, log_sigma: np.ndarray, s: np.ndarray | None
) -> _ItemFeatures:
    """psi for centred means m (N, d), sigma (N, d), log sigma (N, d); s (d,) for the spread-feature scores."""
    name = _SHARED_FEATURES.get(name, name)
    if name == "likelihood":
        a = 1.0 / (sigma * sigma)  # (N, d)
        half_m2a = 0.5 * m * m * a  # (N, d)
        const = -(half_m2a + log_sigma).sum(axis=1)  # (N,)
        magnitude = (half_m2a + np.abs(log_sigma)).sum(axis=1)
        psi = np.concatenate([-0.5 * a, m * a, _column(const)], axis=1)  # (N, 2d+1)
    elif name == "mahalanobis":
        a = 1.0 / (sigma * sigma)
        const = -(m * m * a).sum(axis=1)
        magnitude = -const
        psi = np.concatenate([-a, 2.0 * m * a, _column(const)], axis=1)
    elif name == "euclidean":
        const = -(m * m).sum(axis=1)
        magnitude = -const
        psi = np.concatenate([2.0 * m, _column(const)], axis=1)  # (N, d+1)
    elif name == "kl_reverse":
        assert s is not None
        w = 0.5 / (s * s)  # (d,)
        spread_part = (w * (sigma * sigma + m * m)).sum(axis=1)  # (N,)
        const = log_sigma.sum(axis=1) - spread_part
        magnitude = spread_part + np.abs(log_sigma).sum(axis=1)
        psi = np.concatenate([m, _column(const)], axis=1)  # (N, d+1)
    elif name == "wasserstein2":
        assert s is not None
        gap = s - sigma  # (N, d)
        const = -(m * m + gap * gap).sum(axis=1)
        magnitude = -const
        psi = np.concatenate([m, _column(const)], axis=1)  # (N, d+1)
    elif name == "jeffreys":
        assert s is not None
        w = 0.5 / (s * s)  # (d,)
        a = 1.0 / (sigma * sigma)
        m2 = m * m
        const = -(0.5 * (s * s + m2) * a + w * (sigma * sigma + m2)).sum(axis=1)
        magnitude = -const
        psi = np.concatenate([-0.5 * a, m * (a + 2.0 * w), _column(const)], axis=1)  # (N, 2d+1)
    elif name == "bhattacharyya":
        assert s is not None
        v = sigma * sigma + s * s  # (N, d) summed variances
        b = 0.25 / v
        m2b = m * m * b
        log_v = np.log(v)
        const = -(m2b + 0.5 * log_v - 0.5 * log_sigma).sum(axis=1)
        magnitude = (m2b + 0.5 * np.abs(log_v) + 0.5 * np.abs(log_sigma)).sum(axis=1)
        psi = np.concatenate([-b, 2.0 * m * b, _column(const)], axis=1)
    else:  # pragma: no cover - _FORMS and this function list the same names
        raise ValueError(f"no feature map for {name!r}")
    return _ItemFeatures(psi=np.ascontiguousarray(psi), const_magnitude=magnitude)


def query_features(
    name: str, z: ArrayLike, s: ArrayLike | float, center: ArrayLike | None = None
) -> tuple[np.ndarray, float]:
    """The query features phi (m,) and the constant c of a score, for one query z (d,) and spread s.

    With psi from :func:`item_features` (same centre and, for the spread-feature scores, same s),
    ``value_from_key(name, psi @ phi, c)`` equals ``SCORES[name].fn(z, mu, sigma, s)`` up to float64
    rounding.
    """
    z_array = np.asarray(z, dtype=np.float64)
    if z_array.ndim != 1:
        raise ValueError(f"z must have shape (d,); got shape {z_array.shape}")
    d = z_array.shape[0]
    z_array = check_query(z_array, d)[None, :]  # (1, d)
    spread = np.broadcast_to(check_spread(s, d), (d,))
    center_array = np.zeros(d) if center is None else check_query(center, d)
    if name not in _FORMS:
        raise ValueError(f"unknown score {name!r}; choose one of: {', '.join(_FORMS)}")
    phi, const, _, _ = _query_one(name, z_array[0] - center_array, _SpreadConstants.of(np.array(spread)))
    return phi, const


def _query_features(name: str, y: np.ndarray, c: _SpreadConstants) -> _QueryFeatures:
    """phi (B, m), const (B,) and magnitude (B,) for centred queries y (B, d), B >= 1, row by row with
    :func:`_query_one` (one derivation of every map; a batch's matrix product dwarfs this loop)."""
    rows = [_query_one(name, row, c) for row in y]
    return _QueryFeatures(
        phi=np.stack([row[0] for row in rows]),
        const=np.array([row[1] for row in rows]),
        const_magnitude=np.array([row[2] for row in rows]),
    )


@dataclass(frozen=True)
class _SpreadConstants:
    """What the query features need from a spread s (d,), computed once per spread."""

    s2: np.ndarray  # (d,) s^2
    s2_norm: float  # ||s^2||_2
    w: np.ndarray  # (d,) 1 / (2 s^2)
    two_w: np.ndarray  # (d,) 1 / s^2
    log_s_sum: float  # sum log s
    abs_log_s_sum: float  # sum |log s|
    half_log_2s_sum: float  # sum log(2 s) / 2
    abs_half_log_2s_sum: float  # sum |log(2 s)| / 2
    arrays: np.ndarray  # (3, d) [s2, w, two_w], for latent.single_query
    scalars: np.ndarray  # (5,) [s2_norm, log_s_sum, abs_log_s_sum, half_log_2s_sum, abs_half_log_2s_sum]

    @classmethod
    def of(cls, s: np.ndarray) -> _SpreadConstants:
        s2 = s * s
        log_s = np.log(s)
        half_log_2s = 0.5 * np.log(2.0 * s)
        w = 0.5 / s2
        scalars = (
            math.sqrt(float(s2 @ s2)), float(log_s.sum()), float(np.abs(log_s).sum()), float(half_log_2s.sum()),
            float(np.abs(half_log_2s).sum()),
        )
        return cls(
            s2=s2, s2_norm=scalars[0], w=w, two_w=2.0 * w, log_s_sum=scalars[1], abs_log_s_sum=scalars[2],
            half_log_2s_sum=scalars[3], abs_half_log_2s_sum=scalars[4], arrays=np.stack([s2, w, 2.0 * w]),
            scalars=np.array(scalars),
        )


def _query_one(
    name: str, y: np.ndarray, c: _SpreadConstants
) -> tuple[np.ndarray, float, float, tuple[float, ...]]:
    """:func:`_query_features` for one centred query y (d,) and a spread's constants, with fewer array
    operations, for the latency-critical single query.

    Returns phi (m,), const, its magnitude, and upper bounds on the 2-norm of each feature block of phi
    (for the float32 error bound; ||y^2||_2 <= ||y||_2^2 saves computing the exact norms).
    """
    d = y.shape[0]
    if name in ("euclidean", "wasserstein2", "kl_reverse"):
        phi = np.empty(d + 1)
        phi[d] = 1.0
        head = phi[:d]
        if name == "kl_reverse":
            np.multiply(c.two_w, y, out=head)
            wy2 = float(head @ y) * 0.5  # sum w y^2, since head = 2 w y
            head_norm = math.sqrt(float(head @ head))
            return phi, wy2 + (c.log_s_sum - 0.5 * d), wy2 + c.abs_log_s_sum + 0.5 * d, (head_norm, 1.0)
        y2 = float(y @ y)
        if name == "euclidean":
            head[:] = y
            return phi, y2, y2, (math.sqrt(y2), 1.0)
        np.multiply(2.0, y, out=head)
        return phi, y2, y2, (2.0 * math.sqrt(y2), 1.0)
    phi = np.empty(2 * d + 1)
    phi[2 * d] = 1.0
    np.multiply(y, y, out=phi[:d])
    phi[d : 2 * d] = y
    y2 = float(y @ y)
    norms = (y2, math.sqrt(y2), 1.0)  # [y^2, y, 1]: ||y^2||_2 <= ||y||_2^2
    if name == "likelihood":
        return phi, -0.5 * d * math.log(2.0 * math.pi), 0.5 * d * math.log(2.0 * math.pi), norms
    if name == "mahalanobis":
        return phi, 0.0, 0.0, norms
    if name == "kl":
        phi[:d] += c.s2
        norms = (c.s2_norm + y2, norms[1], 1.0)  # ||s^2 + y^2|| <= ||s^2|| + ||y||^2
        return phi, -c.log_s_sum - 0.5 * d, c.abs_log_s_sum + 0.5 * d, norms
    if name == "jeffreys":
        wy2 = float(phi[:d] @ c.w)
        return phi, wy2 - d, wy2 + d, norms
    if name == "bhattacharyya":
        return phi, -c.half_log_2s_sum, c.abs_half_log_2s_sum, norms
    raise ValueError(f"no feature map for {name!r}")  # pragma: no cover


def value_from_key(name: str, key: ArrayLike, const: float) -> np.ndarray:
    """Natural-unit values from keys psi . phi: const + key, const - key, or sqrt(const - key) for the
    squared distances (euclidean, mahalanobis, wasserstein2). Shapes follow ``key``."""
    if name not in _FORMS:
        raise ValueError(f"unknown score {name!r}; choose one of: {', '.join(_FORMS)}")
    form = _FORMS[name]
    key_array = np.asarray(key, dtype=np.float64)
    if form.squared:
        return np.sqrt(np.maximum(const - key_array, 0.0))
    return const + key_array if form.higher_is_nearer else const - key_array


# --------------------------------------------------------------------------------------------------
# Prepared features for one score (and, for bhattacharyya, one spread).


@dataclass(frozen=True)
class _Prepared:
    features: np.ndarray | None  # (m, N_pad) float32, C-contiguous; None: float64 brute force only
    block_widths: tuple[int, ...]  # feature block widths, summing to m
    block_starts: np.ndarray  # (n_feature_blocks,) first column of each feature block
    item_norms: np.ndarray | None  # (N_pad, n_feature_blocks) float32 bounds on ||psi_i,b||_2, rounded up
    block_norms: np.ndarray | None  # (N_pad // block_size, n_feature_blocks) float64 maxima per item group
    max_norms: np.ndarray | None  # (n_feature_blocks,) float64 maxima over the catalog
    max_l1: float  # bound on sum_j |psi_ij| over the catalog, for the underflow term
    block_indicator: np.ndarray  # (n_feature_blocks, m) 0/1: which feature block each column is in
    norm_bounds: np.ndarray | None  # (n_feature_blocks, 2): [max_norms, sqrt(block widths)] (L1 <= sqrt(w) L2)
    error_factor: float  # E_i = error_factor * sum_b ||psi_i,b|| ||phi_b|| + underflow
    slack: float  # relative float64 slack for the key threshold
    faiss_index: Any  # faiss.IndexFlatIP over the unpadded psi, or None
    norm_bound_pairs: tuple[tuple[float, float], ...] = ()  # the rows of norm_bounds, as Python floats
    rescore: np.ndarray | None = None  # (N, 2 + t, d): _rescore_table of this score (and spread)
    compiled_rescore: bool = False  # latent.rescore reproduces this score's kernel on this table, bit for bit
    quantized: _Quantized | None = None  # int16 codes of the features, for the "fused" backend


@dataclass(frozen=True)
class _Quantized:
    """The item features psi (N, m) as int16 codes, one affine scale per feature column j:
    psi_ij = mid_j + scale_j q_ij + e_ij with |q_ij| <= 32767 and |e_ij| <= residual_j (about scale_j / 2).

    The fused scan reads these 2-byte codes instead of the float32 features, half the memory traffic.
    For a query phi, S_i = sum_j fl32(phi_j scale_j) q_ij computed in float32 (any order, with or without
    FMA) and the exact key psi_i . phi differ by at most

        sum_j |phi_j| (residual_j + scale_j max_i |q_ij| (m + 3) u / (1 - (m + 3) u)) + (float64 terms)

    on top of the offset sum_j phi_j mid_j: one bound for every item, ``error_weights @ |phi|``.
    """

    codes: np.ndarray  # (ceil(N / 64), m, 64) int16: latent.fused_scan.to_blocks of the (m, N) codes; padding 0
    scale: np.ndarray  # (m,) float64
    mid: np.ndarray  # (m,) float64
    error_weights: np.ndarray  # (m,) float64: key error <= error_weights @ |phi| + underflow


def _prepare(features: _ItemFeatures, d: int, form: _Form, block_size: int, backend: str) -> _Prepared:
    """Float32 features, transposed and padded to whole blocks, with their per-item error norms.

    Padding items have psi = 0 except the constant column, -1e38: their key is -1e38 for every query
    whose keys fit in float32 (|key| < 1e30), so they never rank above a real item.
    """
    psi = features.psi  # (N, m)
    n, m = psi.shape
    widths = tuple(d if width == "d" else 1 for width in form.blocks)
    starts = np.cumsum((0,) + widths[:-1])
    indicator = np.zeros((len(widths), m))
    for b, (start, width) in enumerate(zip(starts, widths, strict=True)):
        indicator[b, start : start + width] = 1.0
    common = dict(
        block_widths=widths,
        block_starts=starts,
        block_indicator=indicator,
        # Rounding psi and phi to float32 and any float32 summation order (with or without FMA) err by
        # at most (m+3)u/(1-(m+3)u) sum_j |psi_j phi_j|; doubling it also covers every float64 error.
        error_factor=2.0 * (m + 3) * _U32 / (1.0 - (m + 3) * _U32) * (1.0 + 1e-5),
        slack=16.0 * (d + m + 8) * _U64,
    )
    if not np.isfinite(psi).all() or np.abs(psi).max() >= _FLOAT32_SAFE:
        return _Prepared(
            None, item_norms=None, block_norms=None, max_norms=None, norm_bounds=None, max_l1=math.inf,
            faiss_index=None, **common,
        )
    n_pad = -(-n // block_size) * block_size
    norms = np.zeros((n_pad, len(widths)))  # padding rows stay 0: they never need a bound
    norms[:n] = np.sqrt((psi * psi) @ indicator.T)  # (N, n_feature_blocks)
    norms[:n, -1] = np.maximum(norms[:n, -1], features.const_magnitude)  # the constant column's parts
    norms *= 1.0 + 1e-6  # round up, so that the float32 copy is still an upper bound
    features = np.zeros((m, n_pad), dtype=np.float32)
    features[:, :n] = psi.T
    features[-1, n:] = _PAD_KEY
    faiss_index = None
    if backend == "faiss":
        import faiss  # optional dependency: imported only when asked for

        faiss_index = faiss.IndexFlatIP(m)
        faiss_index.add(np.ascontiguousarray(psi, dtype=np.float32))
    max_norms = norms[:n].max(axis=0)
    quantized = _quantize(psi) if backend == "fused" else None
    return _Prepared(
        quantized=quantized,
        features=features,
        item_norms=norms.astype(np.float32),
        block_norms=norms.reshape(block_size, n_pad // block_size, len(widths)).max(axis=0),
        max_norms=max_norms,
        norm_bounds=np.stack([max_norms, np.sqrt(widths)], axis=1),
        norm_bound_pairs=tuple(zip(max_norms.tolist(), np.sqrt(widths).tolist(), strict=True)),
        max_l1=float(np.sqrt(widths) @ max_norms),
        faiss_index=faiss_index,
        **common,
    )


def _quantize(psi: np.ndarray) -> _Quantized:
    """int16 codes of the item features psi (N, m), in the scan's block layout; see :class:`_Quantized`."""
    m = psi.shape[1]
    low, high = psi.min(axis=0), psi.max(axis=0)  # (m,)
    mid = 0.5 * (low + high)
    span = high - low
    scale = np.where(span > 0.0, span / 65532.0, 1.0)  # |psi - mid| / scale <= 32766, with room to round
    codes64 = np.rint((psi - mid) / scale)  # (N, m)
    np.clip(codes64, -32767.0, 32767.0, out=codes64)
    from latent.fused_scan import to_blocks  # (numba is imported only where the fused backend is used)

    codes = to_blocks(codes64.T.astype(np.int16))
    residual = np.abs(psi - (mid + scale * codes64)).max(axis=0)  # (m,) measured, in float64
    magnitude = np.abs(psi).max(axis=0) + np.abs(mid)
    arithmetic = (m + 3) * _U32 / (1.0 - (m + 3) * _U32)
    error_weights = (
        residual * (1.0 + 1e-6)
        + scale * np.abs(codes64).max(axis=0) * arithmetic * (1.0 + 1e-5)  # float32: phi_j scale_j, products, sums
        + 64.0 * (m + 4) * _U64 * magnitude  # float64 rounding: the residuals, psi, the offset, fn
    )
    return _Quantized(codes=codes, scale=scale, mid=mid, error_weights=error_weights)


@dataclass(frozen=True)
class _Plan:
    """Per-query features and float32 error bounds for B queries."""

    phi32: np.ndarray  # (B, m) float32 query features (zeros on rows that are not usable)
    query: _QueryFeatures
    query_norms: np.ndarray  # (B, n_feature_blocks) norms of phi's feature blocks
    underflow: np.ndarray  # (B,) absolute error bound from float32 underflow
    max_error: np.ndarray  # (B,) error bound valid for every item
    usable: np.ndarray  # (B,) bool: float32 cannot overflow for this query


# --------------------------------------------------------------------------------------------------
# Exact ranking helpers.


def _order(values: np.ndarray, ids: np.ndarray, higher_is_nearer: bool) -> np.ndarray:
    """Positions that sort 1-D values nearest first, ties by lower id."""
    return np.lexsort((ids, -values if higher_is_nearer else values))


def _exact_top_k(values: np.ndarray, k: int, higher_is_nearer: bool) -> np.ndarray:
    """Indices of the k nearest of all N float64 values (N,), nearest first, ties by lower index."""
    n = values.shape[0]
    nearness = -values if higher_is_nearer else values  # lower = nearer
    if k >= n:
        return np.lexsort((np.arange(n), nearness))
    kth = np.partition(nearness, k - 1)[k - 1]
    ids = np.flatnonzero(nearness <= kth)  # every item as near as the k-th, ties included
    return ids[np.lexsort((ids, nearness[ids]))][:k]


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer (0 gives empty results, k > N gives all N); got {k!r}")
    return int(k)


# --------------------------------------------------------------------------------------------------


def _rescore_table(name: str, mu_sigma: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """What rescoring a candidate reads, as one (N, 2 + t, d) float64 array, so that one gather fetches it:
    mu, sigma and the t arrays of KERNEL_TERMS[name](sigma, spread) (none for euclidean and mahalanobis)."""
    make = KERNEL_TERMS[name]
    if make is None:
        return mu_sigma
    terms = make(mu_sigma[:, 1], spread)
    terms = terms if isinstance(terms, tuple) else (terms,)
    return np.concatenate([mu_sigma, np.stack(terms, axis=1)], axis=1)


def _split_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | tuple[np.ndarray, ...] | None]:
    """Gathered rescore rows (M, 2 + t, d) as the kernel's mu (M, d), sigma (M, d) and terms."""
    t = rows.shape[1] - 2
    terms = None if t == 0 else rows[:, 2] if t == 1 else tuple(rows[:, 2 + i] for i in range(t))
    return rows[:, 0], rows[:, 1], terms


def _auto_block_size(n: int) -> int:
    """The power of two nearest sqrt(n)/2, clipped to [16, 1024]: 128 for 70,000 items, 512 for 1,000,000."""
    return int(2 ** min(10, max(4, round(math.log2(max(math.sqrt(n) / 2.0, 1.0))))))


class SearchIndex:
    """Exact top-k search over a catalog of diagonal Gaussians, for every score in :data:`SCORES`.

    scikit-learn's estimator contract: ``__init__`` stores parameters only, :meth:`fit` validates the
    catalog, precomputes features and returns ``self``, and fitted state ends in ``_``.

    Args:
        backend: "auto" (default): "fused" for catalogs of at least :data:`FUSED_MIN_ITEMS` items, else
            "blas". "fused": a compiled scan (:mod:`latent.fused_scan`, numba) over int16 codes
            of the features, which keeps the best blocks of items as it goes, with one error bound for every
            item (see ``_Quantized``); "blas": one float32 matrix-vector product per query through
            numpy's BLAS (sgemv), then a compiled selection through group maxima
            (:mod:`latent.group_select`; numpy where the compiled rescoring does not apply); or
            "faiss": the candidates come from FAISS's exact inner-product index (``faiss.IndexFlatIP``).
            All give identical, exact results, and batches use the float32 matrix product whatever
            the backend.
        block_size: items per group for the candidate selection (the groups with the highest maximum
            key are gathered instead of partially sorting all N keys; item i is in group
            i mod (N_pad / block_size), where N_pad is N rounded up to a multiple of block_size).
            None (default): the power of two nearest sqrt(N)/2, within [16, 1024], which balances the
            partial sort of N / block_size group maxima against the passes over all N keys.

    Fitted attributes:
        mu_, sigma_: float64 (N, d) read-only copies of the catalog.
        n_items_, dim_: N and d.
        block_size_: the block size in use (``block_size``, or the automatic choice).
        backend_: the backend in use ("fused", "blas" or "faiss"; "auto" resolved by catalog size).
        center_: (d,) the catalog mean of mu, the origin of the feature maps.
        default_spread_: (d,) the spread used when ``s`` is None: :func:`latent.scores.default_spread`.
        features_: per-score prepared float32 features, filled as scores are first searched (private layout).
    """

    def __init__(self, backend: str = "auto", block_size: int | None = None) -> None:
        self.backend = backend
        self.block_size = block_size

    # -- fitting -----------------------------------------------------------------------------------

    def fit(self, mu: ArrayLike, sigma: ArrayLike) -> SearchIndex:
        """Validate the catalog, mu and sigma of shape (N, d), and keep float64 copies; return self.

        Each score's features are precomputed the first time that score is searched."""
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        block_size = self.block_size
        if block_size is not None and (
            isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1
        ):
            raise ValueError(f"block_size must be a positive integer or None (automatic); got {self.block_size!r}")
        mu_array, sigma_array = check_catalog(mu, sigma)
        mu_copy = np.array(mu_array, dtype=np.float64, order="C", copy=True)
        sigma_copy = np.array(sigma_array, dtype=np.float64, order="C", copy=True)
        log_sigma = np.log(sigma_copy)
        for array in (mu_copy, sigma_copy, log_sigma):
            array.flags.writeable = False
        n, d = mu_copy.shape
        self.block_size_ = _auto_block_size(n) if block_size is None else int(block_size)
        self.backend_ = ("fused" if n >= FUSED_MIN_ITEMS else "blas") if self.backend == "auto" else self.backend
        self.mu_ = mu_copy
        self.sigma_ = sigma_copy
        self.n_items_ = n
        self.dim_ = d
        self.center_ = mu_copy.mean(axis=0)
        self.default_spread_ = default_spread(sigma_copy)
        self._log_sigma_ = log_sigma
        self._mu_sigma_ = np.stack([mu_copy, sigma_copy], axis=1)  # (N, 2, d): candidates gather both at once
        self._centered_mu_ = mu_copy - self.center_
        # Each score's features are built the first time it is searched (the dashboard's landing page
        # needs three of the eight), for the default spread; other spreads are cached separately.
        self.features_: dict[str, _Prepared] = {}
        self._default_constants_ = _SpreadConstants.of(self.default_spread_)
        self._spread_cache_: OrderedDict[tuple[str, bytes], _Prepared] = OrderedDict()
        self._lock_ = threading.Lock()
        self._scratch_ = threading.local()  # per-thread buffers for single queries (see _keys_buffer)
        self._kernel_arguments_: dict[str, tuple] = {}  # per score, at the default spread (_search_compiled)
        return self

    def _default_features(self, name: str) -> _Prepared:
        """The prepared features of ``name`` at the default spread, built on first use (thread-safe)."""
        prepared = self.features_.get(name)
        if prepared is not None:
            return prepared
        with self._lock_:
            return self._build_default_features(name)

    def _build_default_features(self, name: str) -> _Prepared:
        """:meth:`_default_features` with the lock held."""
        prepared = self.features_.get(name)
        if prepared is not None:
            return prepared
        if _FORMS[name].spread_features:
            prepared = self._spread_features(name, self.default_spread_)
        else:
            source = _SHARED_FEATURES.get(name)  # kl reads likelihood's features, with its own rescore table
            if source is not None:
                base = self._build_default_features(source)
            else:
                features = _item_features(name, self._centered_mu_, self.sigma_, self._log_sigma_, None)
                base = _prepare(features, self.dim_, _FORMS[name], self.block_size_, self.backend_)
            prepared = self._with_rescore(base, name, self.default_spread_)
        self.features_[name] = prepared
        return prepared

    def _constants(self, spread: np.ndarray) -> _SpreadConstants:
        """The query-side constants of a spread of shape () or (d,) (those of the default, precomputed)."""
        if spread is self.default_spread_:
            return self._default_constants_
        return _SpreadConstants.of(np.broadcast_to(spread, (self.dim_,)))

    def _check_fitted(self) -> None:
        if not hasattr(self, "features_"):
            raise NotFittedError("this SearchIndex is not fitted yet; call fit(mu, sigma) first")

    def _spread(self, s: ArrayLike | float | None) -> np.ndarray:
        """The spread as float64 of shape () or (d,): the default when None, checked when given."""
        if s is None:
            return self.default_spread_
        return check_spread(s, self.dim_)

    def _spread_features(self, name: str, spread_d: np.ndarray) -> _Prepared:
        features = _item_features(name, self._centered_mu_, self.sigma_, self._log_sigma_, spread_d)
        prepared = _prepare(features, self.dim_, _FORMS[name], self.block_size_, self.backend_)
        return self._with_rescore(prepared, name, spread_d)

    def _with_rescore(self, prepared: _Prepared, name: str, spread_d: np.ndarray) -> _Prepared:
        """``prepared`` with the rescore table of ``name`` at the spread (d,), and whether the compiled
        rescoring (:mod:`latent.rescore`, numba) reproduces numpy's kernel on it bit for bit."""
        table = _rescore_table(name, self._mu_sigma_, spread_d)
        compiled = False
        if self.dim_ <= _COMPILED_MAX_DIM:
            from latent.rescore import matches_numpy  # compiles on first use

            compiled = matches_numpy(name, table, spread_d)
        return dataclasses.replace(prepared, rescore=table, compiled_rescore=compiled)

    def _rescore_table_for(self, name: str, spread: np.ndarray, prepared: _Prepared) -> np.ndarray:
        """The (N, 2 + t, d) rescore table of this score and spread (for kl at another spread than the
        default: mu and sigma only, and the kernel computes its terms)."""
        if name == "kl" and spread is not self.default_spread_:
            return self._mu_sigma_
        return prepared.rescore

    def _prepared_for(self, name: str, spread: np.ndarray) -> _Prepared:
        """The prepared features of score ``name``; for a spread-feature score, those of this spread (d,) or ()."""
        if spread is self.default_spread_ or not _FORMS[name].spread_features:
            return self._default_features(name)
        spread_d = np.ascontiguousarray(np.broadcast_to(spread, (self.dim_,)))
        if np.array_equal(spread_d, self.default_spread_):
            return self._default_features(name)
        cache_key = (name, spread_d.tobytes())
        with self._lock_:
            cached = self._spread_cache_.get(cache_key)
            if cached is not None:
                self._spread_cache_.move_to_end(cache_key)
                return cached
        prepared = self._spread_features(name, spread_d)  # outside the lock: other threads keep searching
        with self._lock_:
            self._spread_cache_[cache_key] = prepared
            while len(self._spread_cache_) > _SPREAD_CACHE_SIZE * len(SPREAD_FEATURE_SCORES):
                self._spread_cache_.popitem(last=False)
        return prepared

    # -- public queries ----------------------------------------------------------------------------

    def scores_all(self, z: ArrayLike, score: str = "likelihood", s: ArrayLike | float | None = None) -> np.ndarray:
        """Every item's score for one query z (d,), float64 (N,), natural units; identical to
        ``SCORES[score].fn(z, mu_, sigma_, s)`` with the catalog's default spread when s is None."""
        self._check_fitted()
        get_score(score)
        z_array = check_query(z, self.dim_)
        spread = self._spread(s)
        return KERNELS[score](z_array, self.mu_, self.sigma_, spread)

    def search(
        self, z: ArrayLike, score: str = "likelihood", k: int = 10, s: ArrayLike | float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items to one query z (d,) under ``score``.

        Returns ``(indices, scores)``: int64 (k',) and float64 (k',) with k' = min(k, N), nearest first,
        ties broken by the lower index, scores in natural units (exactly ``SCORES[score].fn``'s values).
        ``s`` is the query spread (a positive scalar or (d,); None: ``default_spread_``), ignored by
        scores that do not need one but checked when given.
        """
        self._check_fitted()
        get_score(score)
        k = _check_k(k)
        z_array = check_query(z, self.dim_)
        return self._search_single(z_array, score, k, self._spread(s))

    def search_batch(
        self, Z: ArrayLike, score: str = "likelihood", k: int = 10, s: ArrayLike | float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for B queries Z (B, d) sharing one spread: int64 (B, k') and float64 (B, k');
        row b equals ``search(Z[b], score, k, s)``."""
        self._check_fitted()
        get_score(score)
        k = _check_k(k)
        z_array = check_queries(Z, self.dim_)
        spread = self._spread(s)
        return self._search(z_array, score, k, spread)

    def feature_matrix(self, score: str, s: ArrayLike | float | None = None) -> torch.Tensor | None:
        """The contiguous float32 matrix (m, N_pad) that one query of ``score`` reads (for benchmarks);
        None for a score answered by float64 brute force (features too large for float32)."""
        self._check_fitted()
        get_score(score)
        import torch  # only the benchmark's memory floor needs a tensor

        features = self._prepared_for(score, self._spread(s)).features
        return None if features is None else torch.from_numpy(features)

    # -- the search itself -------------------------------------------------------------------------

    def _search_single(self, z: np.ndarray, name: str, k: int, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top k for one query z (d,): ids int64 (k',) and values float64 (k',), k' = min(k, N)."""
        if 0 < k < self.n_items_:
            prepared = self._prepared_for(name, spread)
            if prepared.features is not None:
                return self._search_one(z, name, k, spread, prepared)
        ids, values = self._search(z[None, :], name, k, spread)  # k = 0, k >= N, or float64 features
        return ids[0], values[0]

    def _search(self, z: np.ndarray, name: str, k: int, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top k for queries z (B, d): ids int64 (B, k') and values float64 (B, k'), k' = min(k, N)."""
        batch, n = z.shape[0], self.n_items_
        k = min(k, n)
        if k == 0 or batch == 0:
            return np.empty((batch, k), dtype=np.int64), np.empty((batch, k))
        prepared = self._prepared_for(name, spread) if k < n else None
        if prepared is None or prepared.features is None:
            return self._brute_force(z, name, k, spread)
        if batch == 1:
            ids, values = self._search_one(z[0], name, k, spread, prepared)
            return ids[None, :], values[None, :]
        return self._search_many(z, name, k, spread, prepared, self._plan(name, z, spread, prepared))

    def _brute_force(self, z: np.ndarray, name: str, k: int, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float64 brute force for queries z (B, d): exact by definition, used where float32 cannot help."""
        higher = _FORMS[name].higher_is_nearer
        out_ids = np.empty((z.shape[0], k), dtype=np.int64)
        out_values = np.empty((z.shape[0], k))
        for row in range(z.shape[0]):
            values = KERNELS[name](z[row], self.mu_, self.sigma_, spread)  # (N,)
            ids = _exact_top_k(values, k, higher)
            out_ids[row], out_values[row] = ids, values[ids]
        return out_ids, out_values

    def _plan(self, name: str, z: np.ndarray, spread: np.ndarray, prepared: _Prepared) -> _Plan:
        """Query features and error bounds for queries z (B, d)."""
        query = _query_features(name, z - self.center_, self._constants(spread))
        phi = query.phi  # (B, m)
        query_norms = np.sqrt((phi * phi) @ prepared.block_indicator.T)  # (B, n_feature_blocks)
        # key_bound >= sum_j |psi_ij| |phi_j| for every item i, and phi_l1 >= sum_j |phi_j|.
        key_bound, phi_l1 = (query_norms @ prepared.norm_bounds).T  # (B,) each
        # Float32 underflow: each rounding into the subnormal range errs by at most 2^-150 in absolute
        # terms, times a factor of phi (rounding psi), of psi (rounding phi) or 1 (the products).
        underflow = 2.0**-148 * (phi.shape[1] + phi_l1 + prepared.max_l1)  # (B,)
        # Rows whose features could overflow float32 are answered by float64 brute force instead
        # (the comparisons are False for NaN, so those rows are excluded too).
        usable = (key_bound < _FLOAT32_SAFE) & (phi_l1 < _FLOAT32_SAFE)  # (B,)
        phi32 = (phi if usable.all() else np.where(usable[:, None], phi, 0.0)).astype(np.float32)  # (B, m)
        return _Plan(
            phi32=phi32,
            query=query,
            query_norms=query_norms,
            underflow=underflow,
            max_error=prepared.error_factor * key_bound + underflow,
            usable=usable,
        )

    def _search_one(
        self, z: np.ndarray, name: str, k: int, spread: np.ndarray, prepared: _Prepared
    ) -> tuple[np.ndarray, np.ndarray]:
        """One query z (d,), 0 < k < N: the latency-critical path, in one compiled call where it applies."""
        # Rescoring is in float64 with the brute-force kernel's arithmetic, so the values agree with fn
        # bit for bit: compiled (latent.rescore) where that was checked to hold for this table, else numpy.
        table = self._rescore_table_for(name, spread, prepared)
        if prepared.compiled_rescore and table is prepared.rescore and k + _EXTRA_CANDIDATES < self.n_items_:
            found = self._search_compiled(z, name, k, spread, prepared, table)
            if found is not None:
                return found
        return self._search_one_in_steps(z, name, k, spread, prepared, table)

    def _search_compiled(
        self, z: np.ndarray, name: str, k: int, spread: np.ndarray, prepared: _Prepared, table: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`_search_one` in one compiled call (:mod:`latent.single_query`), widened here if its
        certificate fails; None where :meth:`_search_one_in_steps` must answer instead (float32 could
        overflow, keys tie at kappa, or a backend or block size that the compiled path does not cover)."""
        from latent import single_query  # compiled on first use

        backend = self.backend_
        if backend == "blas" and not self._uses_subgroups(k, k + _EXTRA_CANDIDATES, prepared.features.shape[1]):
            return None
        z = np.ascontiguousarray(z)
        default = spread is self.default_spread_
        arguments = self._kernel_arguments_.get(name) if default else None
        if arguments is None:  # the kernel's per-score arguments, kept for the default spread
            arguments = self._kernel_arguments(name, spread, prepared, table)
            if default:
                self._kernel_arguments_[name] = arguments
        if backend == "fused":
            return self._search_fused(z, name, k, spread, prepared, arguments)
        if backend != "blas":
            return None
        keys = self._keys_buffer(prepared.features.shape[1])
        ids, values, candidates, _, phi32, norms, underflow, threshold, status = single_query.blas_query(
            keys, z, k, *arguments
        )
        if status == single_query.OK:
            return ids, values
        if status == single_query.WIDEN:
            return self._widen(prepared, keys, phi32, norms, underflow, candidates, threshold, z, name, spread, k)
        return None  # UNSAFE or TIES

    def _search_fused(
        self, z: np.ndarray, name: str, k: int, spread: np.ndarray, prepared: _Prepared, arguments: tuple
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`_search_compiled` for the "fused" backend: compiled before and after the scan, which is
        called from Python (see :func:`latent.fused_scan.scan`)."""
        from latent import fused_scan, single_query

        codes = prepared.quantized
        n_keep = k + _EXTRA_CANDIDATES
        if n_keep >= codes.codes.shape[0]:  # every block would be kept: the step-by-step path takes all items
            return None
        kind, center, spread_arrays, scalars, norm_bounds, error_factor, max_l1, slack, squared, higher, table, spread_d = (
            arguments
        )
        phi, phi32, phi_codes, const, magnitude, norms, underflow, safe = single_query.fused_start(
            z, codes.scale, kind, center, spread_arrays, scalars, norm_bounds, error_factor, max_l1
        )
        if not safe:
            return None  # float32 could overflow: brute force
        heap_maxima, heap_blocks = fused_scan.scan(
            codes.codes, phi_codes, self.n_items_, n_keep, fused_scan.n_parts(codes.codes, self.n_items_)
        )
        ids, values, candidates, _, threshold, status = single_query.fused_finish(
            z, k, phi, phi_codes, const, magnitude, heap_maxima, heap_blocks, codes.codes, codes.mid,
            codes.error_weights, self.n_items_, n_keep, kind, slack, squared, higher, table, spread_d,
        )
        if status == single_query.OK:
            return ids, values
        return self._widen(prepared, None, phi32, norms, underflow, candidates, threshold, z, name, spread, k)

    def _kernel_arguments(self, name: str, spread: np.ndarray, prepared: _Prepared, table: np.ndarray) -> tuple:
        """The arguments of :func:`latent.single_query.blas_query` after the query's own (for "fused": those
        that describe the score, which :meth:`_search_fused` unpacks)."""
        form = _FORMS[name]
        constants = self._constants(spread)
        spread_d = np.ascontiguousarray(spread) if spread.shape else np.full(self.dim_, float(spread))
        score = (
            _KINDS[name], self.center_, constants.arrays, constants.scalars, prepared.norm_bounds,
            prepared.error_factor, prepared.max_l1, prepared.slack, form.squared, form.higher_is_nearer, table,
            spread_d,
        )
        if self.backend_ == "fused":
            return score
        return (prepared.features, self.block_size_ // _SUBGROUP, _EXTRA_BLOCKS, *score)

    def _search_one_in_steps(
        self, z: np.ndarray, name: str, k: int, spread: np.ndarray, prepared: _Prepared, table: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_search_one` step by step from Python: for FAISS, for ties at kappa in the "blas" selection,
        for features that float32 cannot hold, and where the compiled rescoring does not apply."""
        form = _FORMS[name]
        phi, const, const_magnitude, norms = _query_one(name, z - self.center_, self._constants(spread))
        # key_bound >= sum_j |psi_ij| |phi_j| for every item i (Cauchy-Schwarz per feature block), and
        # phi_l1 >= sum_j |phi_j| (L1 <= sqrt(width) L2).
        key_bound = phi_l1 = 0.0
        for norm, (max_norm, sqrt_width) in zip(norms, prepared.norm_bound_pairs, strict=True):
            key_bound += max_norm * norm
            phi_l1 += sqrt_width * norm
        if not (key_bound < _FLOAT32_SAFE and phi_l1 < _FLOAT32_SAFE):  # False for NaN too
            ids, values = self._brute_force(z[None, :], name, k, spread)  # float32 could overflow
            return ids[0], values[0]
        underflow = 2.0**-148 * (phi.shape[0] + phi_l1 + prepared.max_l1)
        max_error = prepared.error_factor * key_bound + underflow
        phi32 = phi.astype(np.float32)
        n_candidates = k + _EXTRA_CANDIDATES
        keys = None
        if n_candidates >= self.n_items_:
            candidates, kappa, ascending = np.arange(self.n_items_), -math.inf, True
        elif self.backend_ == "fused":
            from latent.fused_scan import top_keys

            quantized = prepared.quantized
            candidates, kappa_codes = top_keys(
                quantized.codes, (phi * quantized.scale).astype(np.float32), self.n_items_, n_candidates
            )
            # Every left-out item's exact key is at most kappa + max_error (see _Quantized).
            kappa = float(phi @ quantized.mid) + kappa_codes
            max_error = float(np.abs(phi) @ quantized.error_weights) + 2.0**-148 * (phi.shape[0] + 1) * 32768.0
            ascending = True
        elif self.backend_ == "faiss":
            keys_top, found = prepared.faiss_index.search(phi32[None, :], n_candidates + 1)  # (1, M+1), best first
            candidates, kappa, ascending = found[0, :n_candidates].astype(np.int64), float(keys_top[0, -1]), False
        else:
            # One BLAS sgemv streaming the features, into this thread's reused buffer.
            keys = np.matmul(phi32, prepared.features, out=self._keys_buffer(prepared.features.shape[1]))
            candidates, kappa, ascending = self._select_one(keys, k, n_candidates)
        if prepared.compiled_rescore and table is prepared.rescore:
            from latent.rescore import nearest

            spread_d = np.ascontiguousarray(spread) if spread.shape else np.full(self.dim_, float(spread))
            ids, values = nearest(
                table, candidates, np.ascontiguousarray(z), spread_d, _KINDS[name], form.higher_is_nearer, k
            )
        else:
            mu, sigma, terms = _split_rows(table[candidates])  # one gather
            values = KERNELS[name](z, mu, sigma, spread, terms)  # (M,)
            nearness = -values if form.higher_is_nearer else values
            # Nearest first, ties by the lower index: a stable sort does that when the ids are ascending.
            order = (nearness.argsort(kind="stable") if ascending else np.lexsort((candidates, nearness)))[:k]
            ids, values = candidates.take(order), values.take(order)
        threshold = self._key_threshold(form, float(values[-1]), const, const_magnitude, prepared.slack)
        if kappa + max_error < threshold:
            return ids, values
        return self._widen(
            prepared, keys, phi32, np.array(norms), underflow, candidates, threshold, z, name, spread, k
        )

    def _uses_blocks(self, k: int, n_candidates: int, n_pad: int) -> bool:
        """Whether selecting through group maxima is valid and worth it (else a partial sort of all keys)."""
        bs = self.block_size_
        kept = k + _EXTRA_BLOCKS
        # The kept groups (each with at most one padding item) hold more than n_candidates real keys,
        # and most groups are left out.
        return kept * (bs - 1) > n_candidates and 2 * kept * bs <= n_pad

    def _keys_buffer(self, n_pad: int) -> np.ndarray:
        """This thread's float32 buffer (n_pad,) for one query's keys, reused from query to query.

        A fresh (n_pad,) array per query (280 KB at 70,000 items) costs about 10 us more whenever the
        allocator has handed its pages back to the system in between, as it does once other code has
        allocated and freed large arrays (measured: 60 against 70 us per query at 70,000 items).
        """
        buffer = getattr(self._scratch_, "keys", None)
        if buffer is None or buffer.shape[0] != n_pad:
            buffer = self._scratch_.keys = np.empty(n_pad, dtype=np.float32)
        return buffer

    def _uses_subgroups(self, k: int, n_candidates: int, n_pad: int) -> bool:
        """Whether :meth:`_select_one` takes its two-level path (group maxima through subgroups)."""
        return self.block_size_ % _SUBGROUP == 0 and self._uses_blocks(k, n_candidates, n_pad)

    def _select_one(self, keys: np.ndarray, k: int, n_candidates: int) -> tuple[np.ndarray, float, bool]:
        """Candidate ids (int64) among the float32 keys (N_pad,), kappa >= every key left out, and whether
        the ids come in ascending order.

        Needs n_candidates < N, so that padding (key -1e38) never ranks among the candidates.
        """
        n_pad = keys.shape[0]
        bs = self.block_size_
        if not self._uses_blocks(k, n_candidates, n_pad):
            cut = n_pad - n_candidates  # keys[part[cut:]] are the n_candidates largest, unordered
            part = np.argpartition(keys, cut - 1)
            return part[cut:], float(keys[part[cut - 1]]), False
        # Partial sort of group maxima instead of all keys. Every key outside the best `kept` groups is
        # at most kappa, the best maximum among the other groups, so the candidates are the keys above
        # kappa, all inside the kept groups: at least one per kept group, about k + _EXTRA_BLOCKS in all.
        kept = k + _EXTRA_BLOCKS
        n_groups = n_pad // bs
        if bs % _SUBGROUP == 0:  # (latent.group_select.top_groups does this part compiled)
            # Two levels, for fewer passes: maxima of subgroups of _SUBGROUP items (item i in subgroup
            # i mod (N_pad / _SUBGROUP)), then of groups; subgroup j lies in group j mod n_groups.
            sub_maxima = keys.reshape(_SUBGROUP, -1).max(axis=0)  # (N_pad / _SUBGROUP,)
            maxima = sub_maxima.reshape(bs // _SUBGROUP, n_groups).max(axis=0)  # (n_groups,)
            maxima.partition(n_groups - kept - 1)  # in place: only kappa is needed from here on
            kappa = float(maxima[n_groups - kept - 1])
            open_subgroups = (sub_maxima > kappa).nonzero()[0]  # ascending
            ids = (_SUBGROUP_ROWS * sub_maxima.shape[0] + open_subgroups).ravel()  # ascending
            candidates = ids[keys[ids] > kappa]
        else:
            maxima = keys.reshape(bs, n_groups).max(axis=0)  # (n_groups,)
            kappa = float(np.partition(maxima, n_groups - kept - 1)[n_groups - kept - 1])
            candidates = (keys > kappa).nonzero()[0]  # ascending
        if candidates.shape[0] >= k:
            return candidates, kappa, True
        # Ties at kappa: take every group whose maximum reaches it, whole (the others are all below kappa).
        grid = keys.reshape(bs, n_groups)
        top_groups = (grid.max(axis=0) >= kappa).nonzero()[0]
        ids = (np.arange(bs)[:, None] * n_groups + top_groups).reshape(-1)
        return ids[ids < self.n_items_], kappa, True

    def _search_many(
        self, z: np.ndarray, name: str, k: int, spread: np.ndarray, prepared: _Prepared, plan: _Plan
    ) -> tuple[np.ndarray, np.ndarray]:
        """Queries z (B, d): one matrix product for all keys, then vectorised selection and rescoring."""
        form = _FORMS[name]
        batch = z.shape[0]
        candidates, kappa = self._candidates(prepared, plan.phi32, k)  # (B, M), (B,)
        mu_sigma = self._mu_sigma_[candidates]  # (B, M, 2, d)
        cand_values = KERNELS[name](z[:, None, :], mu_sigma[:, :, 0], mu_sigma[:, :, 1], spread)  # (B, M)
        rows = np.arange(batch)[:, None]
        order = np.lexsort((candidates, -cand_values if form.higher_is_nearer else cand_values), axis=-1)[:, :k]
        out_ids = candidates[rows, order]  # (B, k)
        out_values = cand_values[rows, order]
        query = plan.query
        threshold = self._key_threshold(form, out_values[:, -1], query.const, query.const_magnitude, prepared.slack)
        certified = plan.usable & (kappa + plan.max_error < threshold)
        for row in np.flatnonzero(~certified):
            if plan.usable[row]:
                out_ids[row], out_values[row] = self._widen(
                    prepared, None, plan.phi32[row], plan.query_norms[row],
                    float(plan.underflow[row]), candidates[row], float(threshold[row]), z[row], name, spread, k,
                )
            else:
                ids, values = self._brute_force(z[row : row + 1], name, k, spread)
                out_ids[row], out_values[row] = ids[0], values[0]
        return out_ids, out_values

    @staticmethod
    def _key_threshold(
        form: _Form, tau: np.ndarray, const: np.ndarray, const_magnitude: np.ndarray, slack: float
    ) -> np.ndarray:
        """Per query, a key t such that an item whose exact key is below t is strictly worse than tau.

        tau (B,) is the k-th best float64 value among the candidates; const (B,) relates keys to values.
        The relative slack covers float64 rounding of the constant, of tau and of fn's last operations.
        """
        if form.squared:  # value = sqrt(const - key) must stay above tau
            tau2 = tau * tau
            return const - tau2 * (1.0 + slack) - slack * (tau2 + const_magnitude)
        margin = slack * (abs(tau) + const_magnitude + abs(const))  # abs: floats or arrays
        if form.higher_is_nearer:  # value = const + key must stay below tau
            return tau - const - margin
        return const - tau - margin  # value = const - key must stay above tau

    def _candidates(self, prepared: _Prepared, phi32: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_select_one` for B queries phi32 (B, m): candidates (B, M) and kappa (B,)."""
        n = self.n_items_
        batch = phi32.shape[0]
        n_candidates = min(n, k + _EXTRA_CANDIDATES)
        if n_candidates >= n:
            return np.broadcast_to(np.arange(n), (batch, n)), np.full(batch, -np.inf)
        if self.backend_ == "faiss":
            keys_top, found = prepared.faiss_index.search(phi32, n_candidates + 1)  # (B, M+1), best first
            return found[:, :n_candidates].astype(np.int64), keys_top[:, -1].astype(np.float64)
        ids = np.empty((batch, n_candidates), dtype=np.int64)
        kappa = np.empty(batch)
        # A few queries at a time, so that their keys stay in cache between the product and the selection.
        for start in range(0, batch, _QUERY_CHUNK):
            rows = slice(start, start + _QUERY_CHUNK)
            ids[rows], kappa[rows] = self._select_many(prepared.features, phi32[rows], k, n_candidates)
        return ids, kappa

    def _select_many(
        self, features: np.ndarray, phi32: np.ndarray, k: int, n_candidates: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_select_one` for a chunk of queries phi32 (C, m): ids (C, M) and kappa (C,)."""
        chunk = phi32.shape[0]
        keys = phi32 @ features  # (C, N_pad) float32, one BLAS sgemm
        n_pad = keys.shape[1]
        if not self._uses_blocks(k, n_candidates, n_pad):
            cut = n_pad - n_candidates
            part = np.argpartition(keys, cut - 1, axis=1)
            kappa = np.take_along_axis(keys, part[:, cut - 1 : cut], axis=1)[:, 0]
            return part[:, cut:], kappa.astype(np.float64)
        bs = self.block_size_
        kept = k + _EXTRA_BLOCKS
        grid = keys.reshape(chunk, bs, -1)  # (C, bs, n_groups)
        n_groups = grid.shape[2]
        maxima = grid.max(axis=1)  # (C, n_groups)
        part = np.argpartition(maxima, n_groups - kept - 1, axis=1)
        kappa_groups = np.take_along_axis(maxima, part[:, n_groups - kept - 1 : n_groups - kept], axis=1)[:, 0]
        top_groups = part[:, n_groups - kept :]  # (C, kept)
        gathered = np.take_along_axis(grid, top_groups[:, None, :], axis=2).reshape(chunk, -1)  # (C, bs*kept)
        cut = gathered.shape[1] - n_candidates
        order = np.argpartition(gathered, cut - 1, axis=1)
        kappa_kept = np.take_along_axis(gathered, order[:, cut - 1 : cut], axis=1)[:, 0]
        positions = order[:, cut:]  # (C, M) into (bs, kept)
        ids = (positions // kept) * n_groups + np.take_along_axis(top_groups, positions % kept, axis=1)
        return ids, np.maximum(kappa_kept, kappa_groups).astype(np.float64)

    def _widen(
        self,
        prepared: _Prepared,
        keys: np.ndarray | None,
        phi32: np.ndarray,
        query_norms: np.ndarray,
        underflow: float,
        candidates: np.ndarray,
        threshold: float,
        z: np.ndarray,
        name: str,
        spread: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top k of one query z (d,) when its first candidates could not be certified.

        Keeps every item whose float32 key (N_pad,) plus its own error bound reaches the threshold
        (found through the per-group bounds first), rescores them with the candidates, and sorts.
        """
        if keys is None:  # not kept (batches) or never computed (FAISS)
            keys = phi32 @ prepared.features  # (N_pad,)
        bs = self.block_size_
        grid = keys.reshape(bs, -1)  # (bs, n_groups): group g is column g
        group_error = prepared.error_factor * (prepared.block_norms @ query_norms) + underflow  # (n_groups,)
        open_groups = np.flatnonzero(grid.max(axis=0).astype(np.float64) + group_error >= threshold)
        ids = (np.arange(bs)[:, None] * grid.shape[1] + open_groups).reshape(-1)
        ids = ids[ids < self.n_items_]
        item_error = prepared.error_factor * (prepared.item_norms[ids] @ query_norms) * (1.0 + 1e-5) + underflow
        reach = keys[ids].astype(np.float64) + item_error
        keep = np.union1d(ids[reach >= threshold], candidates)
        values = KERNELS[name](z, self.mu_[keep], self.sigma_[keep], spread)  # (|keep|,)
        order = _order(values, keep, _FORMS[name].higher_is_nearer)[:k]
        return keep[order], values[order]
