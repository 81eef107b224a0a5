r"""Posterior-aware scores between a query and every catalog item: one record per score.

Each catalog item x is encoded as a diagonal Gaussian q(z|x) = N(mu(x), diag(sigma(x)^2)), so "nearest"
can mean more than one thing. A score compares the query with every item at once:

- the query is the point ``z`` (shape ``(d,)``), or, for the scores with ``needs_spread``, the Gaussian
  N(z, diag(s^2)) whose spread ``s`` is a positive scalar or an array of shape ``(d,)``;
- the catalog is ``mu`` and ``sigma``, both of shape ``(N, d)``, with every sigma > 0;
- every score function has the signature ``fn(z, mu, sigma, s) -> (N,)`` and returns float64 values in
  the score's natural units (a log-likelihood, a distance or a divergence, never negated). Whether a
  higher value means nearer is :attr:`Score.higher_is_nearer`.

The formulas, what they mean for Gaussians and their references are in docs/scores.md; the linear
feature maps that the search index uses are derived in docs/search.md.

Everything about one score lives in its :class:`Score` record, built in :func:`_records` below: the
metadata for the UI, the elementwise arithmetic (shared by the numpy kernel and the compiled rescoring
of :mod:`latent.search`, so that both round alike), the per-item term that needs a logarithm, and the
linear feature map (item side psi in numpy, query side phi compiled). The compiled search reaches a
score through its :attr:`Score.code`, its position in :data:`SCORES`; :func:`term_of`,
:func:`finish_of` and :func:`query_of` dispatch on it. Adding a score means adding its functions and
its record here, and one branch to each of those three dispatchers.

When ``s`` is ``None`` it defaults to :func:`default_spread` of the ``sigma`` given. Scores that do not
need a spread ignore ``s``, but a spread that is given is still checked. Bad input raises
:class:`ValueError` with what was wrong and what is allowed; caller arrays are never modified. Nothing
here imports streamlit, and importing the module compiles nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from numba.core.dispatcher import Dispatcher

#: The smallest default query spread; it keeps log(s) and 1/s^2 finite for a collapsed catalog.
MIN_SPREAD = 1e-3

_LOG_2PI = math.log(2.0 * math.pi)

ScoreFn = Callable[[ArrayLike, ArrayLike, ArrayLike, "ArrayLike | float | None"], np.ndarray]

# Compiled helpers are inlined into the search's kernels, which set the compiler flags (latent.search).
_inline = njit(inline="always")


@dataclass(frozen=True)
class Score:
    """Everything about one way to compare a query with the catalog.

    ``fn(z, mu, sigma, s)`` takes z of shape (d,), mu and sigma of shape (N, d), and s a positive scalar,
    an array of shape (d,) or None (see :func:`default_spread`); it returns shape (N,) in natural units.
    ``kernel(z, mu, sigma, s, terms=None)`` is the same without validation, broadcasting z (..., d)
    against mu and sigma (..., N, d) and s () or (d,); ``terms`` may carry :attr:`item_term` precomputed.
    """

    name: str  # registry key, also shown in the UI
    summary: str  # one line, for the UI
    formula: str  # LaTeX, for the UI
    higher_is_nearer: bool  # True for likelihoods, False for distances and divergences
    needs_spread: bool  # whether the query is the Gaussian N(z, diag(s^2)) rather than the point z
    # value = finish(sum_j term(z_j - mu_j, sigma_j, s_j, t_j), d): plain arithmetic, compiled (numba,
    # inlined into the search's kernels) for scalars; its Python function (``.py_func``) is what the
    # numpy kernel runs on arrays, so both do the same operations in the same order.
    term: Dispatcher[Callable[..., Any]]
    finish: Dispatcher[Callable[..., Any]]
    # t = item_term(sigma, s), shaped like sigma: the per-item part that needs a logarithm, computed by
    # numpy only (the compiled rescoring reads it from a table). None: t is unused (0.0).
    item_term: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
    item_term_uses_spread: bool
    # The linear feature map of docs/search.md: key = psi . phi, higher = nearer, and value = const + key,
    # const - key, or sqrt(const - key) when ``squared``.
    psi: Callable  # psi(m, sigma, log_sigma, s) -> (psi (N, width), magnitude (N,)); m = mu - centre
    segments: tuple[str, ...]  # widths of psi's segments, "d" or "1"; the last is the constant column
    squared: bool
    spread_features: bool  # psi depends on s (then built per spread)
    features_from: str  # the score whose psi this one reads (itself, or likelihood for kl)
    code: int = -1  # position in SCORES: how compiled code refers to this score
    fn: ScoreFn = field(default=None, repr=False)  # type: ignore[assignment]
    kernel: Callable[..., np.ndarray] = field(default=None, repr=False)  # type: ignore[assignment]

    def width(self, d: int) -> int:
        """The number of features m = len(psi) = len(phi) for dimension d."""
        return sum(d if segment == "d" else 1 for segment in self.segments)

    def value_from_key(self, key: ArrayLike, const: float) -> np.ndarray:
        """Natural-unit values from keys psi . phi (any shape): const + key, const - key or sqrt(const - key)."""
        key_array = np.asarray(key, dtype=np.float64)
        if self.squared:
            return np.sqrt(np.maximum(const - key_array, 0.0))
        return const + key_array if self.higher_is_nearer else const - key_array


# --------------------------------------------------------------------------------------------------
# Validation. Each helper converts to float64 without copying when it can, and never writes to input.


def _as_float_array(value: ArrayLike, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array of real numbers; could not convert it: {error}") from None
    return array


def _require_finite(array: np.ndarray, name: str) -> None:
    if math.isfinite(np.add.reduce(array, axis=None)):  # a NaN or inf anywhere makes the sum NaN or inf
        return
    finite = np.isfinite(array)  # the sum may also overflow with every value finite
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{name} contains {int((~finite).sum())} NaN or inf value(s), e.g. {name}{list(where)} = "
            f"{array[where]}; allowed: finite real numbers"
        )


def check_catalog(mu: ArrayLike, sigma: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a catalog and return it as float64 arrays ``(mu, sigma)``, each of shape (N, d).

    Raises ValueError unless mu is 2-D with N >= 1 rows and d >= 1 columns, sigma has the same shape,
    every value is finite, and every sigma is > 0.
    """
    mu_array = _as_float_array(mu, "mu")
    sigma_array = _as_float_array(sigma, "sigma")
    if mu_array.ndim != 2 or mu_array.shape[0] < 1 or mu_array.shape[1] < 1:
        raise ValueError(f"mu must have shape (N, d) with N >= 1 and d >= 1; got shape {mu_array.shape}")
    if sigma_array.shape != mu_array.shape:
        raise ValueError(f"sigma must have the same shape as mu, {mu_array.shape}; got shape {sigma_array.shape}")
    _require_finite(mu_array, "mu")
    _require_positive_sigma(sigma_array)
    return mu_array, sigma_array


def _require_positive_sigma(sigma_array: np.ndarray) -> None:
    _require_finite(sigma_array, "sigma")
    if not (sigma_array > 0).all():
        where = tuple(int(i) for i in np.argwhere(sigma_array <= 0)[0])
        raise ValueError(
            f"sigma must be > 0 everywhere; found {int((sigma_array <= 0).sum())} value(s) <= 0, "
            f"e.g. sigma{list(where)} = {sigma_array[where]}; allowed: finite values > 0"
        )


def check_query(z: ArrayLike, d: int) -> np.ndarray:
    """Validate one query point and return it as a float64 array of shape (d,)."""
    z_array = _as_float_array(z, "z")
    if z_array.shape != (d,):
        raise ValueError(f"z must have shape (d,) = ({d},) to match the catalog; got shape {z_array.shape}")
    _require_finite(z_array, "z")
    return z_array


def check_spread(s: ArrayLike | float, d: int) -> np.ndarray:
    """Validate a query spread and return it as float64, of shape () for a scalar or (d,) per dimension."""
    s_array = _as_float_array(s, "s")
    if s_array.shape not in ((), (d,)):
        raise ValueError(
            f"s must be a positive scalar or an array of shape (d,) = ({d},); got shape {s_array.shape}"
        )
    _require_finite(s_array, "s")
    if not (s_array > 0).all():
        raise ValueError(f"s must be > 0 in every dimension; got {s_array.tolist()}; allowed: finite values > 0")
    return s_array


def default_spread(sigma: ArrayLike) -> np.ndarray:
    """The default query spread: the catalog's median sigma per dimension, floored at :data:`MIN_SPREAD`.

    Args:
        sigma: the catalog's posterior standard deviations, shape (N, d), all > 0.

    Returns:
        float64 array of shape (d,): ``max(median_i sigma[i, j], 1e-3)`` for each dimension j. The
        median makes the query "as uncertain as a typical item"; the floor keeps the kl and jeffreys
        scores finite where the encoder has collapsed a dimension.
    """
    sigma_array = _as_float_array(sigma, "sigma")
    if sigma_array.ndim != 2 or sigma_array.shape[0] < 1 or sigma_array.shape[1] < 1:
        raise ValueError(f"sigma must have shape (N, d) with N >= 1 and d >= 1; got shape {sigma_array.shape}")
    _require_positive_sigma(sigma_array)
    return np.maximum(np.median(sigma_array, axis=0), MIN_SPREAD)


def _resolve_spread(s: ArrayLike | float | None, sigma: np.ndarray) -> np.ndarray:
    return default_spread(sigma) if s is None else check_spread(s, sigma.shape[1])


# --------------------------------------------------------------------------------------------------
# Shared pieces of the scores' arithmetic.


def _half_r2_minus_1_minus_log_r(r: np.ndarray) -> np.ndarray:
    """g(r) = (r^2 - 1)/2 - log r >= 0 for r > 0, the per-dimension KL between N(0, r^2) and N(0, 1).

    Near r = 1 the direct form cancels (and can come out slightly negative), so there it is written as
    (t - log1p(t))/2 with t = r^2 - 1, which is >= 0 in floating point too.
    """
    t = r * r - 1.0
    near_one = np.abs(t) < 0.5
    near = 0.5 * (t - np.log1p(np.clip(t, -0.5, 0.5)))
    far = 0.5 * t - np.log(r)
    return np.where(near_one, near, far)


@_inline
def _plain_sum(total, d):
    return total


@_inline
def _square_root(total, d):
    return np.sqrt(total)


def _column(values: np.ndarray) -> np.ndarray:
    return values[:, None]


def spread_constants(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the compiled query maps need from a spread s (d,): arrays (3, d) = [s^2, w, 2 w] with
    w = 1 / (2 s^2), and scalars (5,) = [||s^2||_2, sum log s, sum |log s|, sum log(2 s) / 2,
    sum |log(2 s)| / 2]."""
    s2 = s * s
    log_s = np.log(s)
    half_log_2s = 0.5 * np.log(2.0 * s)
    w = 0.5 / s2
    scalars = np.array([
        math.sqrt(float(s2 @ s2)), float(log_s.sum()), float(np.abs(log_s).sum()), float(half_log_2s.sum()),
        float(np.abs(half_log_2s).sum()),
    ])
    return np.ascontiguousarray(np.stack([s2, w, 2.0 * w])), scalars


@_inline
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum_j a_j b_j over equal-length float64 vectors, left to right."""
    total = 0.0
    for j in range(a.shape[0]):
        total += a[j] * b[j]
    return total


@_inline
def _quadratic_phi(y: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """phi = [y^2, y, 1] (2d + 1,) for a centred query y (d,), ||y||^2, and bounds on the 2-norms of
    phi's segments: [||y||^2 >= ||y^2||, ||y||, 1]."""
    d = y.shape[0]
    phi = np.empty(2 * d + 1)
    phi[2 * d] = 1.0
    for j in range(d):
        phi[j] = y[j] * y[j]
        phi[d + j] = y[j]
    y2 = _dot(y, y)
    norms = np.empty(3)
    norms[0] = y2
    norms[1] = math.sqrt(y2)
    norms[2] = 1.0
    return phi, y2, norms


@_inline
def _linear_phi(y: np.ndarray, factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """phi = [factor * y, 1] (d + 1,) and its segments' 2-norms [||factor y||, 1]; factor (d,)."""
    d = y.shape[0]
    phi = np.empty(d + 1)
    phi[d] = 1.0
    for j in range(d):
        phi[j] = factor[j] * y[j]
    norms = np.empty(2)
    norms[0] = math.sqrt(_dot(phi[:d], phi[:d]))
    norms[1] = 1.0
    return phi, norms


# --------------------------------------------------------------------------------------------------
# The scores. For each: the elementwise term, the per-item term that needs a logarithm (if any), the
# item features psi (numpy) and the query features phi (compiled). In the feature maps y = z - c and
# m = mu - c for the catalog centre c, a = 1/sigma^2 and w = 1/(2 s^2); see docs/search.md.


# likelihood: log q(z|x) = sum[-u^2/2 - log sigma] - (d/2) log 2pi, u = (z - mu)/sigma.
@_inline
def _likelihood_term(diff, sigma, s, t):
    u = diff / sigma
    return -0.5 * (u * u) - t


@_inline
def _likelihood_finish(total, d):
    return total - 0.5 * d * _LOG_2PI


def _likelihood_item_term(sigma: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.log(sigma)


def _likelihood_psi(m: np.ndarray, sigma: np.ndarray, log_sigma: np.ndarray, s: np.ndarray | None):
    a = 1.0 / (sigma * sigma)  # (N, d)
    half_m2a = 0.5 * m * m * a  # (N, d)
    const = -(half_m2a + log_sigma).sum(axis=1)  # (N,)
    magnitude = (half_m2a + np.abs(log_sigma)).sum(axis=1)
    return np.concatenate([-0.5 * a, m * a, _column(const)], axis=1), magnitude  # (N, 2d+1)


@_inline
def _likelihood_query(y, arrays, scalars):
    phi, _, norms = _quadratic_phi(y)
    half_d_log_2pi = 0.5 * y.shape[0] * _LOG_2PI
    return phi, -half_d_log_2pi, half_d_log_2pi, norms


# euclidean: ||z - mu||_2.
@_inline
def _euclidean_term(diff, sigma, s, t):
    return diff * diff


def _euclidean_psi(m: np.ndarray, sigma: np.ndarray, log_sigma: np.ndarray, s: np.ndarray | None):
    const = -(m * m).sum(axis=1)
    return np.concatenate([2.0 * m, _column(const)], axis=1), -const  # (N, d+1)


@_inline
def _euclidean_query(y, arrays, scalars):
    phi, norms = _linear_phi(y, np.ones(y.shape[0]))
    y2 = _dot(y, y)
    return phi, y2, y2, norms


# mahalanobis: sqrt(sum u^2).
@_inline
def _mahalanobis_term(diff, sigma, s, t):
    u = diff / sigma
    return u * u


def _mahalanobis_psi(m: np.ndarray, sigma: np.ndarray, log_sigma: np.ndarray, s: np.ndarray | None):
    a = 1.0 / (sigma * sigma)
    const = -(m * m * a).sum(axis=1)
    return np.concatenate([-a, 2.0 * m * a, _column(const)], axis=1), -const  # (N, 2d+1)


@_inline
def _mahalanobis_query(y, arrays, scalars):
    phi, _, norms = _quadratic_phi(y)
    return phi, 0.0, 0.0, norms


# kl: KL(N(z, s^2) || q(z|x)) = sum[g(s/sigma) + u^2/2]; item features shared with likelihood.
@_inline
def _kl_term(diff, sigma, s, t):
    u = diff / sigma
    return t + 0.5 * (u * u)


def _kl_item_term(sigma: np.ndarray, s: np.ndarray) -> np.ndarray:
    return _half_r2_minus_1_minus_log_r(s / sigma)


@_inline
def _kl_query(y, arrays, scalars):
    phi, y2, norms = _quadratic_phi(y)
    d = y.shape[0]
    for j in range(d):
        phi[j] += arrays[0, j]  # y^2 + s^2
    norms[0] = scalars[0] + y2  # ||s^2 + y^2|| <= ||s^2|| + ||y||^2
    return phi, -scalars[1] - 0.5 * d, scalars[2] + 0.5 * d, norms


# kl_reverse: KL(q(z|x) || N(z, s^2)) = sum[g(sigma/s) + v^2/2], v = (z - mu)/s.
@_inline
def _kl_reverse_term(diff, sigma, s, t):
    v = diff / s
    return t + 0.5 * (v * v)


def _kl_reverse_item_term(sigma: np.ndarray, s: np.ndarray) -> np.ndarray:
    return _half_r2_minus_1_minus_log_r(sigma / s)


def _kl_reverse_psi(m: np.ndarray, sigma: np.ndarray, log_sigma: np.ndarray, s: np.ndarray | None):
    assert s is not None  # spread_features: built per spread
    w = 0.5 / (s * s)  # (d,)
    spread_part = (w * (sigma * sigma + m * m)).sum(axis=1)  # (N,)
    const = log_sigma.sum(axis=1) - spread_part
    magnitude = spread_part + np.abs(log_sigma).sum(axis=1)
    return np.concatenate([m, _column(const)], axis=1), magnitude  # (N, d+1)


@_inline
def _kl_reverse_query(y, arrays, scalars):
    phi, norms = _linear_phi(y, arrays[2])  # [2 w y, 1]
    d = y.shape[0]
    wy2 = _dot(phi[:d], y) * 0.5  # sum w y^2
    return phi, wy2 + (scalars[1] - 0.5 * d), wy2 + scalars[2] + 0.5 * d, norms


# jeffreys: kl + kl_reverse = sum[(r - 1/r)^2/2 + (u^2 + v^2)/2], r = s/sigma: the logs cancel.
@_inline
def _jeffreys_term(diff, sigma, s, t):
    r_gap = s / sigma - sigma / s
    u = diff / sigma
    v = diff / s
    return 0.5 * (r_gap * r_gap) + 0.5 * (u * u + v * v)


def _jeffreys_psi(m: np.ndarray, sigma: np.ndarray, log_sigma: np.ndarray, s: np.ndarray | None):
    assert s is not None  # spread_features: built per spread
    w = 0.5 / (s * s)  # (d,)
    a = 1.0 / (sigma * sigma)
    m2 = m * m
    const = -(0.5 * (s * s + m2) * a + w * (sigma * sigma + m2)).sum(axis=1)
    return np.concatenate([-0.5 * a, m * (a + 2.0 * w), _column(const)], axis=1), -const  # (N, 2d+1)


@_inline
def _jeffreys_query(y, arrays, scalars):
    phi, _, norms = _quadratic_phi(y)
    d = y.shape[0]
    wy2 = _dot(phi[:d], arrays[1])  # sum w y^2
    return phi, wy2 - d, wy2 + d, norms


# bhattacharyya: sum[(z - mu)^2 / (4 (s^2 + sigma^2)) + log((s^2 + sigma^2)/(2 s sigma))/2].
@_inline
def _bhattacharyya_term(diff, sigma, s, t):
    return diff * diff / (4.0 * (s * s + sigma * sigma)) + t


def _bhattacharyya_item_term(sigma: np.ndarray, s: np.ndarray) -> np.ndarray:
    # The log's argument written as 1 + (s - sigma)^2/(2 s sigma), so that it is >= 0 without cancellation.
    gap = s - sigma
    return 0.5 * np.log1p(gap * gap / (2.0 * s * sigma))


def _bhattacharyya_psi(m: np.ndarray, sigma: np.ndarray, log_sigma: np.ndarray, s: np.ndarray | None):
    assert s is not None  # spread_features: built per spread
    v = sigma * sigma + s * s  # (N, d) summed variances
    b = 0.25 / v
    m2b = m * m * b
    log_v = np.log(v)
    const = -(m2b + 0.5 * log_v - 0.5 * log_sigma).sum(axis=1)
    magnitude = (m2b + 0.5 * np.abs(log_v) + 0.5 * np.abs(log_sigma)).sum(axis=1)
    return np.concatenate([-b, 2.0 * m * b, _column(const)], axis=1), magnitude  # (N, 2d+1)


@_inline
def _bhattacharyya_query(y, arrays, scalars):
    phi, _, norms = _quadratic_phi(y)
    return phi, -scalars[3], scalars[4], norms


# wasserstein2: sqrt(||z - mu||^2 + ||s - sigma||^2).
@_inline
def _wasserstein2_term(diff, sigma, s, t):
    gap = s - sigma
    return diff * diff + gap * gap


def _wasserstein2_psi(m: np.ndarray, sigma: np.ndarray, log_sigma: np.ndarray, s: np.ndarray | None):
    assert s is not None  # spread_features: built per spread
    gap = s - sigma  # (N, d)
    const = -(m * m + gap * gap).sum(axis=1)
    return np.concatenate([m, _column(const)], axis=1), -const  # (N, d+1)


@_inline
def _wasserstein2_query(y, arrays, scalars):
    phi, norms = _linear_phi(y, np.full(y.shape[0], 2.0))
    norms[0] = 2.0 * math.sqrt(_dot(y, y))
    y2 = _dot(y, y)
    return phi, y2, y2, norms


def _records() -> list[Score]:
    """The scores, in display order (their codes are their positions)."""
    quadratic, linear = ("d", "d", "1"), ("d", "1")
    return [
        Score(
            name="likelihood",
            summary="Log-density of z under the item's posterior: the principled 'nearest', no sampling needed.",
            formula=r"\log q(z \mid x) = \sum_{j=1}^{d} \left[ -\frac{(z_j - \mu_j)^2}{2\sigma_j^2} - \log\sigma_j"
            r" \right] - \frac{d}{2}\log 2\pi",
            higher_is_nearer=True, needs_spread=False,
            term=_likelihood_term, finish=_likelihood_finish,
            item_term=_likelihood_item_term, item_term_uses_spread=False,
            psi=_likelihood_psi, segments=quadratic, squared=False, spread_features=False,
            features_from="likelihood",
        ),
        Score(
            name="euclidean",
            summary="Straight-line distance from z to the item's mean; ignores the item's uncertainty.",
            formula=r"\lVert z - \mu \rVert_2 = \sqrt{\sum_{j=1}^{d} (z_j - \mu_j)^2}",
            higher_is_nearer=False, needs_spread=False,
            term=_euclidean_term, finish=_square_root, item_term=None, item_term_uses_spread=False,
            psi=_euclidean_psi, segments=linear, squared=True, spread_features=False,
            features_from="euclidean",
        ),
        Score(
            name="mahalanobis",
            summary="Distance from z to the item's mean in units of the item's own sigma.",
            formula=r"\sqrt{\sum_{j=1}^{d} \frac{(z_j - \mu_j)^2}{\sigma_j^2}}",
            higher_is_nearer=False, needs_spread=False,
            term=_mahalanobis_term, finish=_square_root, item_term=None, item_term_uses_spread=False,
            psi=_mahalanobis_psi, segments=quadratic, squared=True, spread_features=False,
            features_from="mahalanobis",
        ),
        Score(
            name="kl",
            summary="How badly the item's posterior explains a fuzzy query N(z, s^2); tends to likelihood as s -> 0.",
            formula=r"\mathrm{KL}\left(\mathcal{N}(z, s^2) \,\|\, q(z \mid x)\right)"
            r" = \sum_{j=1}^{d} \left[ \log\frac{\sigma_j}{s_j}"
            r" + \frac{s_j^2 + (z_j - \mu_j)^2}{2\sigma_j^2} - \frac{1}{2} \right]",
            higher_is_nearer=False, needs_spread=True,
            term=_kl_term, finish=_plain_sum, item_term=_kl_item_term, item_term_uses_spread=True,
            psi=_likelihood_psi, segments=quadratic, squared=False, spread_features=False,
            features_from="likelihood",
        ),
        Score(
            name="kl_reverse",
            summary="How badly a fuzzy query N(z, s^2) explains the item's posterior; penalises broad items.",
            formula=r"\mathrm{KL}\left(q(z \mid x) \,\|\, \mathcal{N}(z, s^2)\right)"
            r" = \sum_{j=1}^{d} \left[ \log\frac{s_j}{\sigma_j}"
            r" + \frac{\sigma_j^2 + (\mu_j - z_j)^2}{2 s_j^2} - \frac{1}{2} \right]",
            higher_is_nearer=False, needs_spread=True,
            term=_kl_reverse_term, finish=_plain_sum, item_term=_kl_reverse_item_term, item_term_uses_spread=True,
            psi=_kl_reverse_psi, segments=linear, squared=False, spread_features=True,
            features_from="kl_reverse",
        ),
        Score(
            name="jeffreys",
            summary="Symmetrised KL between the fuzzy query and the item's posterior.",
            formula=r"\mathrm{KL}(p \,\|\, q) + \mathrm{KL}(q \,\|\, p) = \sum_{j=1}^{d} \left[ \frac{s_j^2 + (z_j"
            r" - \mu_j)^2}{2\sigma_j^2} + \frac{\sigma_j^2 + (z_j - \mu_j)^2}{2 s_j^2} - 1 \right]",
            higher_is_nearer=False, needs_spread=True,
            term=_jeffreys_term, finish=_plain_sum, item_term=None, item_term_uses_spread=False,
            psi=_jeffreys_psi, segments=quadratic, squared=False, spread_features=True,
            features_from="jeffreys",
        ),
        Score(
            name="bhattacharyya",
            summary="Minus the log overlap of the fuzzy query and the item's posterior; symmetric, 0 only for "
            "equal Gaussians.",
            formula=r"\sum_{j=1}^{d} \left[ \frac{(z_j - \mu_j)^2}{4(s_j^2 + \sigma_j^2)}"
            r" + \frac{1}{2}\log\frac{s_j^2 + \sigma_j^2}{2 s_j \sigma_j} \right]",
            higher_is_nearer=False, needs_spread=True,
            term=_bhattacharyya_term, finish=_plain_sum,
            item_term=_bhattacharyya_item_term, item_term_uses_spread=True,
            psi=_bhattacharyya_psi, segments=quadratic, squared=False, spread_features=True,
            features_from="bhattacharyya",
        ),
        Score(
            name="wasserstein2",
            summary="Optimal-transport distance between the fuzzy query and the item's posterior; a true metric.",
            formula=r"W_2 = \sqrt{\lVert z - \mu \rVert_2^2 + \sum_{j=1}^{d} (s_j - \sigma_j)^2}",
            higher_is_nearer=False, needs_spread=True,
            term=_wasserstein2_term, finish=_square_root, item_term=None, item_term_uses_spread=False,
            psi=_wasserstein2_psi, segments=linear, squared=True, spread_features=True,
            features_from="wasserstein2",
        ),
    ]


# --------------------------------------------------------------------------------------------------
# The registry, and what is derived from each record.


def _kernel(score: Score) -> Callable[..., np.ndarray]:
    # The compiled helpers' Python functions, run on numpy arrays.
    term, finish, item_term = score.term.py_func, score.finish.py_func, score.item_term

    def kernel(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s: np.ndarray, terms: np.ndarray | None = None):
        # Elementwise, then one sum over the last axis: an item's value never depends on which other
        # items are in the batch, which the search index relies on to agree with brute force.
        t: np.ndarray | float
        if terms is None:
            t = 0.0 if item_term is None else item_term(sigma, s)
        else:
            t = terms
        return finish(np.add.reduce(term(z - mu, sigma, s, t), axis=-1), mu.shape[-1])

    kernel.__name__ = kernel.__qualname__ = f"{score.name}_kernel"
    return kernel


def _public(score: Score, kernel: Callable[..., np.ndarray]) -> ScoreFn:
    needs_spread = score.needs_spread

    def fn(z: ArrayLike, mu: ArrayLike, sigma: ArrayLike, s: ArrayLike | float | None = None) -> np.ndarray:
        mu_array, sigma_array = check_catalog(mu, sigma)
        z_array = check_query(z, mu_array.shape[1])
        s_array: np.ndarray | np.float64
        if needs_spread:
            s_array = _resolve_spread(s, sigma_array)
        else:
            s_array = np.float64(1.0) if s is None else check_spread(s, mu_array.shape[1])
        return kernel(z_array, mu_array, sigma_array, s_array)

    fn.__name__ = fn.__qualname__ = score.name
    fn.__doc__ = (
        f"{score.summary}\n\nFormula (LaTeX): {score.formula}\n\nShapes: z (d,), mu and sigma (N, d), s a "
        "positive scalar or (d,)"
        + (" (None: :func:`default_spread` of sigma)" if needs_spread else " (ignored; checked if given)")
        + "; returns float64 (N,) in natural units."
    )
    return fn


def _build_registry() -> dict[str, Score]:
    registry = {}
    for code, record in enumerate(_records()):
        kernel = _kernel(record)
        registry[record.name] = Score(
            **{**record.__dict__, "code": code, "kernel": kernel, "fn": _public(record, kernel)}
        )
    return registry


#: Every score by name, in display order. Building it only defines functions; it computes nothing.
SCORES: Mapping[str, Score] = MappingProxyType(_build_registry())

#: The numpy kernel of each score, by name (``SCORES[name].kernel``): no validation, broadcasting shapes.
KERNELS: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType({n: s.kernel for n, s in SCORES.items()})


def get_score(name: str) -> Score:
    """Return the registered :class:`Score` called ``name``; raise ValueError listing valid names otherwise."""
    if not isinstance(name, str) or name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choose one of: {', '.join(SCORES)}")
    return SCORES[name]


# --------------------------------------------------------------------------------------------------
# Compiled dispatch by code, for latent.search's kernels. Static branches on module constants (numba
# freezes them), one per score; the constants come from the registry.

_LIKELIHOOD, _EUCLIDEAN, _MAHALANOBIS, _KL, _KL_REVERSE, _JEFFREYS, _BHATTACHARYYA, _WASSERSTEIN2 = (
    SCORES[name].code
    for name in ("likelihood", "euclidean", "mahalanobis", "kl", "kl_reverse", "jeffreys", "bhattacharyya",
                 "wasserstein2")
)


@_inline
def term_of(code: int, diff: float, sigma: float, s: float, t: float) -> float:
    """``SCORES[...].term`` of the score with this code, on scalars."""
    if code == _LIKELIHOOD:
        return _likelihood_term(diff, sigma, s, t)
    if code == _EUCLIDEAN:
        return _euclidean_term(diff, sigma, s, t)
    if code == _MAHALANOBIS:
        return _mahalanobis_term(diff, sigma, s, t)
    if code == _KL:
        return _kl_term(diff, sigma, s, t)
    if code == _KL_REVERSE:
        return _kl_reverse_term(diff, sigma, s, t)
    if code == _JEFFREYS:
        return _jeffreys_term(diff, sigma, s, t)
    if code == _BHATTACHARYYA:
        return _bhattacharyya_term(diff, sigma, s, t)
    return _wasserstein2_term(diff, sigma, s, t)


@_inline
def finish_of(code: int, total: float, d: int) -> float:
    """``SCORES[...].finish`` of the score with this code, on a scalar sum."""
    if code == _LIKELIHOOD:
        return _likelihood_finish(total, d)
    # Three scalar compares: numba would compile `in` on a tuple through its generic containment.
    if code == _EUCLIDEAN or code == _MAHALANOBIS or code == _WASSERSTEIN2:  # noqa: SIM109
        return _square_root(total, d)
    return total


@_inline
def query_of(
    code: int, y: np.ndarray, arrays: np.ndarray, scalars: np.ndarray
) -> tuple[np.ndarray, float, float, np.ndarray]:
    """The query features of the score with this code, for a centred query y = z - c (d,) and a spread's
    constants (:func:`spread_constants`): phi (m,), const (value = const + key, const - key or
    sqrt(const - key)), a bound on the sum of |parts| of const, and bounds on the 2-norms of phi's
    segments."""
    if code == _LIKELIHOOD:
        return _likelihood_query(y, arrays, scalars)
    if code == _EUCLIDEAN:
        return _euclidean_query(y, arrays, scalars)
    if code == _MAHALANOBIS:
        return _mahalanobis_query(y, arrays, scalars)
    if code == _KL:
        return _kl_query(y, arrays, scalars)
    if code == _KL_REVERSE:
        return _kl_reverse_query(y, arrays, scalars)
    if code == _JEFFREYS:
        return _jeffreys_query(y, arrays, scalars)
    if code == _BHATTACHARYYA:
        return _bhattacharyya_query(y, arrays, scalars)
    return _wasserstein2_query(y, arrays, scalars)
