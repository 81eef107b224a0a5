"""Posterior-aware scores between a query and every catalog item, and their registry.

Each catalog item x is encoded as a diagonal Gaussian q(z|x) = N(mu(x), diag(sigma(x)^2)), so "nearest"
can mean more than one thing. A score compares the query with every item at once:

- the query is the point ``z`` (shape ``(d,)``), or, for the scores with ``needs_spread``, the Gaussian
  N(z, diag(s^2)) whose spread ``s`` is a positive scalar or an array of shape ``(d,)``;
- the catalog is ``mu`` and ``sigma``, both of shape ``(N, d)``, with every sigma > 0;
- every score function has the signature ``fn(z, mu, sigma, s) -> (N,)`` and returns float64 values in
  the score's natural units (a log-likelihood, a distance or a divergence, never negated). Whether a
  higher value means nearer is :attr:`Score.higher_is_nearer`.

All sums run over the d dimensions. The scores and their formulas are in :data:`SCORES`; look one up
by name with :func:`get_score`. When ``s`` is ``None`` it defaults to :func:`default_spread` of the
``sigma`` given, the catalog's per-dimension median sigma, floored at :data:`MIN_SPREAD`. Scores that do
not need a spread ignore ``s``, but a spread that is given is still checked.

Bad input raises :class:`ValueError` with what was wrong and what is allowed; caller arrays are never
modified. Nothing here imports streamlit, and importing the module does no work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

#: The smallest default query spread; it keeps log(s) and 1/s^2 finite for a collapsed catalog.
MIN_SPREAD = 1e-3

_LOG_2PI = math.log(2.0 * math.pi)

ScoreFn = Callable[[ArrayLike, ArrayLike, ArrayLike, "ArrayLike | float | None"], np.ndarray]


@dataclass(frozen=True)
class Score:
    """One way to compare a query with the catalog.

    ``fn(z, mu, sigma, s)`` takes z of shape (d,), mu and sigma of shape (N, d), and s a positive scalar,
    an array of shape (d,) or None (see :func:`default_spread`); it returns shape (N,) in natural units.
    """

    name: str  # registry key, also shown in the UI
    fn: ScoreFn  # fn(z, mu, sigma, s) -> (N,) float64, natural units
    higher_is_nearer: bool  # True for likelihoods, False for distances and divergences
    needs_spread: bool  # whether the query is the Gaussian N(z, diag(s^2)) rather than the point z
    formula: str  # LaTeX, for the UI
    summary: str  # one line, for the UI


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


def check_queries(z: ArrayLike, d: int) -> np.ndarray:
    """Validate a batch of query points and return it as a float64 array of shape (B, d), B >= 0."""
    z_array = _as_float_array(z, "Z")
    if z_array.ndim != 2 or z_array.shape[1] != d:
        raise ValueError(f"Z must have shape (B, d) = (B, {d}) to match the catalog; got shape {z_array.shape}")
    _require_finite(z_array, "Z")
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
# Kernels. They broadcast: z of shape (..., d) against mu and sigma of shape (..., N, d), and s of shape
# () or (d,). They do no validation, so the search index can rescore candidates without the overhead.
# Every kernel is elementwise followed by one sum over the last axis, so an item's value never depends
# on which other items are in the batch; the index relies on that to agree bit for bit with brute force.


def _sum_dims(terms: np.ndarray) -> np.ndarray:
    return np.add.reduce(terms, axis=-1)


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


# Each kernel splits into per-item terms that depend only on (sigma, s), elementwise, and the part that
# depends on z. ``terms`` (shape (..., N, d), or a tuple of such arrays) may be passed in precomputed by
# ``KERNEL_TERMS[name](sigma, s)``, for example gathered for a few candidates from a cached (N, d) array:
# the arithmetic is the same either way, so the values are identical bit for bit.

Terms = np.ndarray | tuple[np.ndarray, ...] | None


def _likelihood_terms(sigma: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.log(sigma)


def _likelihood(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s: np.ndarray, terms: Terms = None) -> np.ndarray:
    log_sigma = _likelihood_terms(sigma, s) if terms is None else terms
    u = (z - mu) / sigma  # (..., N, d) standardised offsets
    return _sum_dims(-0.5 * (u * u) - log_sigma) - 0.5 * mu.shape[-1] * _LOG_2PI


def _euclidean(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s: np.ndarray, terms: Terms = None) -> np.ndarray:
    diff = z - mu  # (..., N, d)
    return np.sqrt(_sum_dims(diff * diff))


def _mahalanobis(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s: np.ndarray, terms: Terms = None) -> np.ndarray:
    u = (z - mu) / sigma  # (..., N, d)
    return np.sqrt(_sum_dims(u * u))


def _kl_terms(sigma: np.ndarray, s: np.ndarray) -> np.ndarray:
    return _half_r2_minus_1_minus_log_r(s / sigma)


def _kl(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s: np.ndarray, terms: Terms = None) -> np.ndarray:
    # log(sigma/s) + (s^2 + (z-mu)^2)/(2 sigma^2) - 1/2 = g(s/sigma) + u^2/2
    ratio_term = _kl_terms(sigma, s) if terms is None else terms
    u = (z - mu) / sigma  # (..., N, d)
    return _sum_dims(ratio_term + 0.5 * (u * u))


def _kl_reverse_terms(sigma: np.ndarray, s: np.ndarray) -> np.ndarray:
    return _half_r2_minus_1_minus_log_r(sigma / s)


def _kl_reverse(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s: np.ndarray, terms: Terms = None) -> np.ndarray:
    # log(s/sigma) + (sigma^2 + (mu-z)^2)/(2 s^2) - 1/2 = g(sigma/s) + v^2/2
    ratio_term = _kl_reverse_terms(sigma, s) if terms is None else terms
    v = (z - mu) / s  # (..., N, d)
    return _sum_dims(ratio_term + 0.5 * (v * v))


def _jeffreys_terms(sigma: np.ndarray, s: np.ndarray) -> np.ndarray:
    r_gap = s / sigma - sigma / s
    return 0.5 * (r_gap * r_gap)


def _jeffreys(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s: np.ndarray, terms: Terms = None) -> np.ndarray:
    # kl + kl_reverse: the log terms cancel, leaving (r - 1/r)^2/2 + (z-mu)^2 (1/sigma^2 + 1/s^2)/2,
    # r = s/sigma, which is >= 0 and exactly symmetric in floating point.
    gap_term = _jeffreys_terms(sigma, s) if terms is None else terms
    diff = z - mu  # (..., N, d)
    u = diff / sigma
    v = diff / s
    return _sum_dims(gap_term + 0.5 * (u * u + v * v))


def _bhattacharyya_terms(sigma: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # 4 (s^2+sigma^2), and log((s^2+sigma^2)/(2 s sigma))/2 with the log's argument written as
    # 1 + (s-sigma)^2/(2 s sigma) so that it is >= 0 without cancellation.
    gap = s - sigma
    return 4.0 * (s * s + sigma * sigma), 0.5 * np.log1p(gap * gap / (2.0 * s * sigma))


def _bhattacharyya(
    z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s: np.ndarray, terms: Terms = None
) -> np.ndarray:
    # (z-mu)^2 / (4 (s^2+sigma^2)) + log((s^2+sigma^2)/(2 s sigma))/2
    four_var_sum, log_term = _bhattacharyya_terms(sigma, s) if terms is None else terms
    diff = z - mu  # (..., N, d)
    return _sum_dims(diff * diff / four_var_sum + log_term)


def _wasserstein2_terms(sigma: np.ndarray, s: np.ndarray) -> np.ndarray:
    gap = s - sigma
    return gap * gap


def _wasserstein2(
    z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s: np.ndarray, terms: Terms = None
) -> np.ndarray:
    gap2 = _wasserstein2_terms(sigma, s) if terms is None else terms
    diff = z - mu  # (..., N, d)
    return np.sqrt(_sum_dims(diff * diff + gap2))


#: Per-item terms of each kernel that depend only on (sigma, s): ``KERNEL_TERMS[name](sigma, s)`` gives
#: an array (or a tuple of arrays) shaped like sigma, which ``KERNELS[name](..., terms=...)`` accepts
#: for the same items. None: the kernel has no such terms.
KERNEL_TERMS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray | tuple[np.ndarray, ...]] | None] = {
    "likelihood": _likelihood_terms,
    "euclidean": None,
    "mahalanobis": None,
    "kl": _kl_terms,
    "kl_reverse": _kl_reverse_terms,
    "jeffreys": _jeffreys_terms,
    "bhattacharyya": _bhattacharyya_terms,
    "wasserstein2": _wasserstein2_terms,
}


#: Kernels by name, for the search index (no validation; broadcasting shapes as described above).
KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "likelihood": _likelihood,
    "euclidean": _euclidean,
    "mahalanobis": _mahalanobis,
    "kl": _kl,
    "kl_reverse": _kl_reverse,
    "jeffreys": _jeffreys,
    "bhattacharyya": _bhattacharyya,
    "wasserstein2": _wasserstein2,
}


def _public(name: str, needs_spread: bool, doc: str) -> ScoreFn:
    kernel = KERNELS[name]

    def fn(z: ArrayLike, mu: ArrayLike, sigma: ArrayLike, s: ArrayLike | float | None = None) -> np.ndarray:
        mu_array, sigma_array = check_catalog(mu, sigma)
        z_array = check_query(z, mu_array.shape[1])
        if needs_spread:
            s_array = _resolve_spread(s, sigma_array)
        else:
            s_array = np.float64(1.0) if s is None else check_spread(s, mu_array.shape[1])
        return kernel(z_array, mu_array, sigma_array, s_array)

    fn.__name__ = name
    fn.__qualname__ = name
    fn.__doc__ = doc + (
        "\n\nShapes: z (d,), mu and sigma (N, d), s a positive scalar or (d,)"
        + (" (None: :func:`default_spread` of sigma)" if needs_spread else " (ignored; checked if given)")
        + "; returns float64 (N,) in natural units."
    )
    return fn


def _build_registry() -> dict[str, Score]:
    entries = [
        (
            "likelihood",
            True,
            False,
            r"\log q(z \mid x) = \sum_{j=1}^{d} \left[ -\frac{(z_j - \mu_j)^2}{2\sigma_j^2} - \log\sigma_j \right]"
            r" - \frac{d}{2}\log 2\pi",
            "Log-density of z under the item's posterior: the principled 'nearest', no sampling needed.",
        ),
        (
            "euclidean",
            False,
            False,
            r"\lVert z - \mu \rVert_2 = \sqrt{\sum_{j=1}^{d} (z_j - \mu_j)^2}",
            "Straight-line distance from z to the item's mean; ignores the item's uncertainty.",
        ),
        (
            "mahalanobis",
            False,
            False,
            r"\sqrt{\sum_{j=1}^{d} \frac{(z_j - \mu_j)^2}{\sigma_j^2}}",
            "Distance from z to the item's mean in units of the item's own sigma.",
        ),
        (
            "kl",
            False,
            True,
            r"\mathrm{KL}\left(\mathcal{N}(z, s^2) \,\|\, q(z \mid x)\right)"
            r" = \sum_{j=1}^{d} \left[ \log\frac{\sigma_j}{s_j}"
            r" + \frac{s_j^2 + (z_j - \mu_j)^2}{2\sigma_j^2} - \frac{1}{2} \right]",
            "How badly the item's posterior explains a fuzzy query N(z, s^2); tends to likelihood as s -> 0.",
        ),
        (
            "kl_reverse",
            False,
            True,
            r"\mathrm{KL}\left(q(z \mid x) \,\|\, \mathcal{N}(z, s^2)\right)"
            r" = \sum_{j=1}^{d} \left[ \log\frac{s_j}{\sigma_j}"
            r" + \frac{\sigma_j^2 + (\mu_j - z_j)^2}{2 s_j^2} - \frac{1}{2} \right]",
            "How badly a fuzzy query N(z, s^2) explains the item's posterior; penalises broad items.",
        ),
        (
            "jeffreys",
            False,
            True,
            r"\mathrm{KL}(p \,\|\, q) + \mathrm{KL}(q \,\|\, p) = \sum_{j=1}^{d} \left[ \frac{s_j^2 + (z_j - \mu_j)^2}"
            r"{2\sigma_j^2} + \frac{\sigma_j^2 + (z_j - \mu_j)^2}{2 s_j^2} - 1 \right]",
            "Symmetrised KL between the fuzzy query and the item's posterior.",
        ),
        (
            "bhattacharyya",
            False,
            True,
            r"\sum_{j=1}^{d} \left[ \frac{(z_j - \mu_j)^2}{4(s_j^2 + \sigma_j^2)}"
            r" + \frac{1}{2}\log\frac{s_j^2 + \sigma_j^2}{2 s_j \sigma_j} \right]",
            "Minus the log overlap of the fuzzy query and the item's posterior; symmetric, 0 only for equal Gaussians.",
        ),
        (
            "wasserstein2",
            False,
            True,
            r"W_2 = \sqrt{\lVert z - \mu \rVert_2^2 + \sum_{j=1}^{d} (s_j - \sigma_j)^2}",
            "Optimal-transport distance between the fuzzy query and the item's posterior; a true metric.",
        ),
    ]
    registry = {}
    for name, higher_is_nearer, needs_spread, formula, summary in entries:
        doc = f"{summary}\n\nFormula (LaTeX): {formula}"
        registry[name] = Score(
            name=name,
            fn=_public(name, needs_spread, doc),
            higher_is_nearer=higher_is_nearer,
            needs_spread=needs_spread,
            formula=formula,
            summary=summary,
        )
    return registry


#: Every score by name. Building it only defines functions; it computes nothing.
SCORES: dict[str, Score] = _build_registry()


def get_score(name: str) -> Score:
    """Return the registered :class:`Score` called ``name``; raise ValueError listing valid names otherwise."""
    if not isinstance(name, str) or name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choose one of: {', '.join(SCORES)}")
    return SCORES[name]
