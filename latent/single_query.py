r"""One single query of :class:`latent.search.SearchIndex`, from z to the certified top k, compiled.

The single query is the dashboard's hot path: every slider move asks for the k nearest items under a
few scores. Its heavy parts were compiled already (the keys and the candidate selection, then the
float64 rescoring), but the Python around them, about ten small numpy operations and a few dozen
attribute lookups (the query's feature map, the float32 error bound, the key threshold and the
certificate), cost about 16 us of 72 per query at 70,000 items on the 2-core development machine, as
much as the selection itself. Here all of it is compiled (numba), in the order of ``latent.search``'s
module docstring, in one call for the "blas" backend (:func:`blas_query`) and in two around the scan
for the "fused" one (:func:`fused_start`, :func:`latent.fused_scan.scan`, :func:`fused_finish`: the
scan's parallel kernel must be called from Python, see :func:`latent.fused_scan.scan`):

1. the query features phi(z, s) (:func:`query_map`, the compiled twin of ``latent.search._query_one``:
   the same formulas, so the same float64 rounding analysis applies);
2. the bounds: ``key_bound`` >= sum_j |psi_ij phi_j| for every item (Cauchy-Schwarz per feature
   block), the float32 underflow term, and whether float32 is safe for this query at all;
3. the keys and the candidates, either through BLAS, :func:`blas_query` (numba's ``np.dot``, which
   calls the sgemv of scipy's OpenBLAS, then :func:`latent.group_select.top_groups`), or through the
   fused scan of int16 codes (:mod:`latent.fused_scan`);
4. the float64 rescoring of the candidates (:func:`latent.rescore.nearest`), bit for bit ``fn``'s values;
5. the key threshold t from the k-th value and the certificate kappa + max_error < t.

Rare outcomes go back to the Python code of the index by ``status``: :data:`UNSAFE` (features or keys
could overflow float32: float64 brute force), :data:`TIES` (fewer than k keys above kappa: the
selection in numpy takes the tied groups whole; "blas" only) and :data:`WIDEN` (the certificate failed: the index
widens the candidates, from the kernel's keys, phi32, norms, underflow and threshold).

These kernels call the rescoring, so they compile with the fast-math flags "nnan" and "nsz" only (see
:mod:`latent.rescore`: numba gives a callee the flags of its first caller). They compile on first use
and are cached on disk next to this module where it is writable.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from latent.fused_scan import select
from latent.group_select import top_groups
from latent.rescore import KINDS, nearest
from latent.search import _FLOAT32_SAFE, _SUBGROUP

_JIT = {"nogil": True, "cache": True, "boundscheck": False, "error_model": "numpy", "fastmath": {"nnan", "nsz"}}

#: ``status`` codes of :func:`blas_query` and :func:`fused_finish`.
OK, UNSAFE, TIES, WIDEN = 0, 1, 2, 3

# The score codes that ``kind`` takes (latent.rescore.KINDS).
_LIKELIHOOD, _EUCLIDEAN, _KL, _KL_REVERSE = KINDS["likelihood"], KINDS["euclidean"], KINDS["kl"], KINDS["kl_reverse"]
_JEFFREYS, _BHATTACHARYYA, _WASSERSTEIN2 = KINDS["jeffreys"], KINDS["bhattacharyya"], KINDS["wasserstein2"]

_LOG_2PI = math.log(2.0 * math.pi)


@njit(**_JIT)
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum_j a_j b_j over equal-length float64 vectors."""
    total = 0.0
    for j in range(a.shape[0]):
        total += a[j] * b[j]
    return total


@njit(**_JIT)
def query_map(
    kind: int, y: np.ndarray, s2: np.ndarray, w: np.ndarray, two_w: np.ndarray, scalars: np.ndarray
) -> tuple[np.ndarray, float, float, np.ndarray]:
    """The query features of score ``kind`` for one centred query y = z - c (d,) and a spread's constants.

    s2 = s^2, w = 1 / (2 s^2) and two_w = 1 / s^2, each (d,); scalars = [||s^2||_2, sum log s,
    sum |log s|, sum log(2 s) / 2, sum |log(2 s)| / 2] (``latent.search._SpreadConstants.scalars``).

    Returns phi (m,) float64 with m = d + 1 (euclidean, kl_reverse, wasserstein2: [y or 2 y or 2 w y, 1])
    or 2d + 1 (the others: [y^2 (+ s^2 for kl), y, 1]); const, the value's offset (value = const + key,
    const - key, or sqrt(const - key)); its magnitude, a bound on the sum of |parts| of const; and upper
    bounds on the 2-norm of each feature block of phi (``||y^2||_2 <= ||y||_2^2``). The derivations are in
    ``latent.search``'s module docstring; ``latent.search._query_one`` is the same map in numpy.
    """
    d = y.shape[0]
    norms = np.ones(3)
    if kind == _EUCLIDEAN or kind == _WASSERSTEIN2 or kind == _KL_REVERSE:
        phi = np.empty(d + 1)
        phi[d] = 1.0
        if kind == _KL_REVERSE:
            for j in range(d):
                phi[j] = two_w[j] * y[j]
            head = phi[:d]
            wy2 = _dot(head, y) * 0.5  # sum w y^2, since head = 2 w y
            norms[0] = math.sqrt(_dot(head, head))
            return phi, wy2 + (scalars[1] - 0.5 * d), wy2 + scalars[2] + 0.5 * d, norms[:2]
        y2 = _dot(y, y)
        factor = 1.0 if kind == _EUCLIDEAN else 2.0
        for j in range(d):
            phi[j] = factor * y[j]
        norms[0] = factor * math.sqrt(y2)
        return phi, y2, y2, norms[:2]
    phi = np.empty(2 * d + 1)
    phi[2 * d] = 1.0
    for j in range(d):
        phi[j] = y[j] * y[j]
        phi[d + j] = y[j]
    y2 = _dot(y, y)
    norms[0] = y2
    norms[1] = math.sqrt(y2)
    const = magnitude = 0.0  # mahalanobis
    if kind == _LIKELIHOOD:
        const, magnitude = -0.5 * d * _LOG_2PI, 0.5 * d * _LOG_2PI
    elif kind == _KL:
        for j in range(d):
            phi[j] += s2[j]
        norms[0] = scalars[0] + y2  # ||s^2 + y^2|| <= ||s^2|| + ||y||^2
        const, magnitude = -scalars[1] - 0.5 * d, scalars[2] + 0.5 * d
    elif kind == _JEFFREYS:
        wy2 = _dot(phi[:d], w)
        const, magnitude = wy2 - d, wy2 + d
    elif kind == _BHATTACHARYYA:
        const, magnitude = -scalars[3], scalars[4]
    return phi, const, magnitude, norms


@njit(**_JIT)
def key_threshold(
    squared: bool, higher_is_nearer: bool, tau: float, const: float, magnitude: float, slack: float
) -> float:
    """A key t such that an item whose exact key is below t is strictly worse than the value tau (the
    k-th best); the scalar form of ``latent.search.SearchIndex._key_threshold``."""
    if squared:  # value = sqrt(const - key) must stay above tau
        tau2 = tau * tau
        return const - tau2 * (1.0 + slack) - slack * (tau2 + magnitude)
    margin = slack * (abs(tau) + magnitude + abs(const))
    if higher_is_nearer:  # value = const + key must stay below tau
        return tau - const - margin
    return const - tau - margin  # value = const - key must stay above tau


@njit(**_JIT)
def _bounds(
    phi: np.ndarray, norms: np.ndarray, norm_bounds: np.ndarray, error_factor: float, max_l1: float
) -> tuple[bool, float, float]:
    """Whether float32 is safe for this query, the underflow term and the bound on every item's key error.

    key_bound >= sum_j |psi_ij| |phi_j| for every item (per feature block b: max_i ||psi_i,b|| ||phi_b||)
    and phi_l1 >= sum_j |phi_j| (L1 <= sqrt(width) L2); norm_bounds (n_feature_blocks, 2) holds
    [max_i ||psi_i,b||, sqrt(width_b)]."""
    key_bound = 0.0
    phi_l1 = 0.0
    for b in range(norms.shape[0]):
        key_bound += norm_bounds[b, 0] * norms[b]
        phi_l1 += norm_bounds[b, 1] * norms[b]
    safe = key_bound < _FLOAT32_SAFE and phi_l1 < _FLOAT32_SAFE  # False for NaN too
    underflow = 2.0**-148 * (phi.shape[0] + phi_l1 + max_l1)
    return safe, underflow, error_factor * key_bound + underflow


@njit(**_JIT)
def _start(
    z: np.ndarray,
    kind: int,
    center: np.ndarray,
    spread_arrays: np.ndarray,
    scalars: np.ndarray,
    norm_bounds: np.ndarray,
    error_factor: float,
    max_l1: float,
) -> tuple[np.ndarray, float, float, np.ndarray, bool, float, float]:
    """Steps 1 and 2 for a query z (d,): phi (m,), const, magnitude and norms (:func:`query_map`), then
    whether float32 is safe, the underflow term and the bound on every item's key error (:func:`_bounds`)."""
    phi, const, magnitude, norms = query_map(
        kind, z - center, spread_arrays[0], spread_arrays[1], spread_arrays[2], scalars
    )
    safe, underflow, max_error = _bounds(phi, norms, norm_bounds, error_factor, max_l1)
    return phi, const, magnitude, norms, safe, underflow, max_error


@njit(**_JIT)
def _rescore_and_certify(
    candidates: np.ndarray,
    kappa: float,
    max_error: float,
    z: np.ndarray,
    k: int,
    kind: int,
    const: float,
    magnitude: float,
    slack: float,
    squared: bool,
    higher_is_nearer: bool,
    table: np.ndarray,
    spread: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Steps 4 and 5: the k nearest candidates rescored in float64 (ids, values), the key threshold from
    the k-th value, and OK if no item left out (key at most kappa + max_error) can reach it, else WIDEN."""
    ids, values = nearest(table, candidates, z, spread, kind, higher_is_nearer, k)
    threshold = key_threshold(squared, higher_is_nearer, values[k - 1], const, magnitude, slack)
    return ids, values, threshold, OK if kappa + max_error < threshold else WIDEN


@njit(**_JIT)
def blas_query(
    keys: np.ndarray,
    z: np.ndarray,
    k: int,
    features: np.ndarray,
    group_rows: int,
    extra_groups: int,
    kind: int,
    center: np.ndarray,
    spread_arrays: np.ndarray,
    scalars: np.ndarray,
    norm_bounds: np.ndarray,
    error_factor: float,
    max_l1: float,
    slack: float,
    squared: bool,
    higher_is_nearer: bool,
    table: np.ndarray,
    spread: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray, np.ndarray, float, float, int]:
    """One query z (d,) for its k nearest through the "blas" backend: the keys by one sgemv, the selection
    through group maxima.

    keys (N_pad,) float32, overwritten with the keys; features (m, N_pad) float32 (``_Prepared.features``);
    group_rows as in :func:`latent.group_select.top_groups` (on the (16, N_pad / 16) view of the keys),
    which keeps k + extra_groups groups; kind a score code; center (d,); spread_arrays (3, d) =
    [s^2, w, 2 w] and scalars (5,) as in :func:`query_map`; norm_bounds, error_factor, max_l1 and slack
    from ``_Prepared``; squared and higher_is_nearer from the score's form; table (N, 2 + t, d) and
    spread (d,) as in :func:`latent.rescore.nearest`.

    Returns ids (k,) and values (k,), nearest first (final when status is OK); the candidates (M,),
    ascending; kappa; phi32 (m,); the norms of phi's feature blocks; the underflow term; the key
    threshold; and the status (module docstring).
    """
    phi, const, magnitude, norms, safe, underflow, max_error = _start(
        z, kind, center, spread_arrays, scalars, norm_bounds, error_factor, max_l1
    )
    phi32 = phi.astype(np.float32)
    no_ids = np.empty(0, np.int64)
    if not safe:
        return no_ids, np.empty(0), no_ids, 0.0, phi32, norms, underflow, 0.0, UNSAFE
    np.dot(phi32, features, keys)  # BLAS sgemv (scipy's OpenBLAS, through numba)
    candidates, kappa = top_groups(keys.reshape(_SUBGROUP, -1), group_rows, k + extra_groups)
    if candidates.shape[0] < k:  # keys tie at kappa
        return no_ids, np.empty(0), candidates, kappa, phi32, norms, underflow, 0.0, TIES
    ids, values, threshold, status = _rescore_and_certify(
        candidates, kappa, max_error, z, k, kind, const, magnitude, slack, squared, higher_is_nearer, table, spread
    )
    return ids, values, candidates, kappa, phi32, norms, underflow, threshold, status


@njit(**_JIT)
def fused_start(
    z: np.ndarray,
    scale: np.ndarray,
    kind: int,
    center: np.ndarray,
    spread_arrays: np.ndarray,
    scalars: np.ndarray,
    norm_bounds: np.ndarray,
    error_factor: float,
    max_l1: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, np.ndarray, float, bool]:
    """The first part of a query z (d,) through the "fused" backend, before the scan: phi (m,) float64,
    phi32 (m,), the scan's query phi_j scale_j in float32 (m,), const, its magnitude, the norms of phi's
    feature blocks, the underflow term, and whether float32 is safe for this query. Arguments as in
    :func:`blas_query`; scale (m,) from ``latent.search._Quantized``.

    The scan runs between :func:`fused_start` and :func:`fused_finish`, called from Python
    (:func:`latent.fused_scan.scan`), because its parallel kernel must not be called from a cached
    compiled function (numba issue #8578)."""
    phi, const, magnitude, norms, safe, underflow, _ = _start(
        z, kind, center, spread_arrays, scalars, norm_bounds, error_factor, max_l1
    )
    return phi, phi.astype(np.float32), (phi * scale).astype(np.float32), const, magnitude, norms, underflow, safe


@njit(**_JIT)
def fused_finish(
    z: np.ndarray,
    k: int,
    phi: np.ndarray,
    phi_codes: np.ndarray,
    const: float,
    magnitude: float,
    heap_maxima: np.ndarray,
    heap_blocks: np.ndarray,
    codes: np.ndarray,
    mid: np.ndarray,
    error_weights: np.ndarray,
    n_items: int,
    n_keep: int,
    kind: int,
    slack: float,
    squared: bool,
    higher_is_nearer: bool,
    table: np.ndarray,
    spread: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, int]:
    """The rest of a query through the "fused" backend, after the scan's heaps (``latent.fused_scan.scan``):
    the candidates (``latent.fused_scan.select``), their float64 rescoring and the certificate.

    phi, phi_codes (the scan's query), const and magnitude from :func:`fused_start`; codes, mid and
    error_weights from ``latent.search._Quantized``; n_keep (k <= n_keep < number of blocks) the heaps'
    size less one; the other arguments as in :func:`blas_query`. kappa bounds the exact key of every
    item left out up to sum_j |phi_j| error_weights_j, which the certificate adds (with the underflow of
    the scaled codes).

    Returns ids (k,) and values (k,), nearest first, the candidates (M,), ascending, kappa, the key
    threshold, and the status, OK or WIDEN (the scan resolves ties at kappa itself).
    """
    candidates, kappa_codes = select(codes, phi_codes, n_items, heap_maxima, heap_blocks, n_keep)
    offset = 0.0
    max_error = 2.0**-148 * (phi.shape[0] + 1) * 32768.0  # underflow of the scaled codes' products
    for j in range(phi.shape[0]):
        offset += phi[j] * mid[j]
        max_error += abs(phi[j]) * error_weights[j]
    kappa = offset + kappa_codes
    ids, values, threshold, status = _rescore_and_certify(
        candidates, kappa, max_error, z, k, kind, const, magnitude, slack, squared, higher_is_nearer, table, spread
    )
    return ids, values, candidates, kappa, threshold, status
