r"""One query, compiled from z to the certified top k (docs/search.md, "Exactness").

The steps, in order: the query features phi (``latent.scores.query_of``) and the float32 error bounds
(:func:`start`); the keys and the candidates, through BLAS and group maxima (:func:`blas_query`) or
through the int16 tile scan (:func:`fused_start`, :func:`latent.search._tiles.scan` from Python,
:func:`fused_finish`); the float64 rescoring of the candidates (:func:`rescore_rows`), equal to numpy's
kernels bit for bit; and the certificate: the key threshold from the k-th value
(:func:`key_threshold`), against the bound kappa + max_error on every item left out.

What a query reads is grouped in three named tuples: :class:`ScorePlan` (one score at one spread),
:class:`Groups` (the "blas" layout) and :class:`Codes` (the "fused" layout). ``status`` reports the
outcome: :data:`OK` (final), :data:`UNSAFE` (float32 could overflow: the index answers by float64
brute force) or :data:`WIDEN` (the certificate failed: the index widens the candidates).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit

import latent.scores
from latent.scores import KERNELS, finish_of, query_of, term_of
from latent.search._groups import SUBGROUP_ROWS, at_least, top_groups
from latent.search._jit import JIT
from latent.search._tiles import select

#: ``status`` of a compiled query.
OK, UNSAFE, WIDEN = 0, 1, 2

#: Features, or bounds on keys, beyond this could overflow float32: such queries use float64 brute force.
FLOAT32_SAFE = 1e30

#: The largest d that the compiled rescoring reproduces: numpy's pairwise summation adds up to this many
#: terms in one run before it splits them in halves.
MAX_DIM = 128


class ScorePlan(NamedTuple):
    """Everything a query of one score at one spread reads besides z; arrays read-only, float64."""

    code: int  # latent.scores.Score.code
    squared: bool  # value = sqrt(const - key)
    higher_is_nearer: bool
    center: np.ndarray  # (d,) the centre c of the feature maps
    spread_arrays: np.ndarray  # (3, d) and
    spread_scalars: np.ndarray  # (5,): latent.scores.spread_constants of the spread
    spread: np.ndarray  # (d,)
    norm_bounds: np.ndarray  # (n_segments, 2): [max_i ||psi_i,b||_2, sqrt(width_b)] per segment b
    error_factor: float  # key error <= error_factor * sum_b ||psi_i,b|| ||phi_b|| + underflow
    max_l1: float  # bound on sum_j |psi_ij| over the catalog, for the underflow term
    slack: float  # relative float64 slack of the key threshold
    mu_sigma: np.ndarray  # (N, 2, d) mu and sigma
    terms: np.ndarray  # (N, d) the score's item_term at this spread, or (1, d) unused
    has_terms: bool


class Groups(NamedTuple):
    """The "blas" layout: float32 features and the groups of items for the candidate selection."""

    features: np.ndarray  # (m, N_pad) float32, C-contiguous; padding items have key -1e38
    group_size: int  # items per group; item i is in group i mod (N_pad / group_size)
    extra_groups: int  # groups kept beyond k
    n_items: int  # N


class Codes(NamedTuple):
    """The "fused" layout: psi_ij = mid_j + scale_j q_ij + e_ij with int16 codes q (docs/search.md)."""

    tiles: np.ndarray  # (n_tiles, m, TILE) int16: latent.search._tiles.to_tiles of the (m, N) codes
    scale: np.ndarray  # (m,) float64
    mid: np.ndarray  # (m,) float64
    error_weights: np.ndarray  # (m,) float64: key error <= error_weights @ |phi| + underflow
    extra_tiles: int  # tiles kept beyond k
    n_items: int


@njit(**JIT)
def start(z: np.ndarray, plan: ScorePlan) -> tuple[np.ndarray, float, float, np.ndarray, bool, float, float]:
    """phi (m,), const, its magnitude and the norms of phi's segments for the query z (d,); then
    whether float32 is safe, the underflow term, and max_error, a bound on every item's key error.

    key_bound >= sum_j |psi_ij| |phi_j| for every item (per segment b: max_i ||psi_i,b|| ||phi_b||) and
    phi_l1 >= sum_j |phi_j| (L1 <= sqrt(width) L2)."""
    phi, const, magnitude, norms = query_of(plan.code, z - plan.center, plan.spread_arrays, plan.spread_scalars)
    key_bound = 0.0
    phi_l1 = 0.0
    for b in range(norms.shape[0]):
        key_bound += plan.norm_bounds[b, 0] * norms[b]
        phi_l1 += plan.norm_bounds[b, 1] * norms[b]
    safe = key_bound < FLOAT32_SAFE and phi_l1 < FLOAT32_SAFE  # False for NaN too
    # Each float32 rounding into the subnormal range errs by at most 2^-150, times a factor of phi
    # (rounding psi), of psi (rounding phi) or 1 (the products).
    underflow = 2.0**-148 * (phi.shape[0] + phi_l1 + plan.max_l1)
    return phi, const, magnitude, norms, safe, underflow, plan.error_factor * key_bound + underflow


@njit(**JIT)
def pairwise_sum(terms: np.ndarray) -> float:
    """The sum of terms (n,), n <= 128, rounded exactly as numpy's ``np.add.reduce`` over a contiguous
    axis: fewer than 8 terms left to right; else 8 interleaved partial sums r_0..r_7, combined as
    ((r_0 + r_1) + (r_2 + r_3)) + ((r_4 + r_5) + (r_6 + r_7)), then the remaining n mod 8 terms one at a
    time (numpy/_core/src/umath/loops_utils.h.src)."""
    n = terms.shape[0]
    if n > MAX_DIM:
        raise ValueError("pairwise_sum: at most 128 terms")
    if n < 8:
        total = 0.0
        for i in range(n):
            total += terms[i]
        return total
    r0, r1, r2, r3 = terms[0], terms[1], terms[2], terms[3]
    r4, r5, r6, r7 = terms[4], terms[5], terms[6], terms[7]
    i = 8
    whole = n - n % 8
    while i < whole:
        r0 += terms[i]
        r1 += terms[i + 1]
        r2 += terms[i + 2]
        r3 += terms[i + 3]
        r4 += terms[i + 4]
        r5 += terms[i + 5]
        r6 += terms[i + 6]
        r7 += terms[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += terms[i]
        i += 1
    return total


@njit(**JIT)
def rescore_rows(plan: ScorePlan, ids: np.ndarray, z: np.ndarray, out: np.ndarray) -> None:
    """out[c] = the float64 value of item ids[c] for the query z (d,), for every candidate c: the score's
    ``term`` per dimension, :func:`pairwise_sum`, then its ``finish`` (latent.scores), the operations of
    numpy's kernel in the same order."""
    d = z.shape[0]
    terms = np.empty(d)
    code = plan.code
    for c in range(ids.shape[0]):
        item = ids[c]
        row = plan.mu_sigma[item]  # (2, d)
        for j in range(d):
            t = plan.terms[item, j] if plan.has_terms else 0.0
            terms[j] = term_of(code, z[j] - row[0, j], row[1, j], plan.spread[j], t)
        out[c] = finish_of(code, pairwise_sum(terms), d)


@njit(**JIT)
def nearest(plan: ScorePlan, candidates: np.ndarray, z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of the candidates (M,) int64 (distinct, any order), rescored by :func:`rescore_rows`:
    ids (k,) int64 and values (k,) float64, nearest first, ties broken by the lower id; k <= M."""
    ids = np.sort(candidates)
    values = np.empty(ids.shape[0])
    rescore_rows(plan, ids, z, values)
    nearness = -values if plan.higher_is_nearer else values
    order = np.argsort(nearness, kind="mergesort")[:k]  # stable: ties keep the ascending ids' order
    return ids[order], values[order]


@njit(**JIT)
def key_threshold(
    squared: bool, higher_is_nearer: bool, tau: float, const: float, magnitude: float, slack: float
) -> float:
    """A key t such that an item whose exact key is below t is strictly worse than the value tau (the
    k-th best); the relative slack covers the float64 rounding of const, of tau and of the kernel."""
    if squared:  # value = sqrt(const - key) must stay above tau
        tau2 = tau * tau
        return const - tau2 * (1.0 + slack) - slack * (tau2 + magnitude)
    margin = slack * (abs(tau) + magnitude + abs(const))
    if higher_is_nearer:  # value = const + key must stay below tau
        return tau - const - margin
    return const - tau - margin  # value = const - key must stay above tau


@njit(**JIT)
def _certify(
    candidates: np.ndarray, kappa: float, max_error: float, z: np.ndarray, k: int, const: float,
    magnitude: float, plan: ScorePlan,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The k nearest candidates rescored (ids, values), the key threshold from the k-th value, and OK if
    no item left out (key at most kappa + max_error) can reach it, else WIDEN."""
    ids, values = nearest(plan, candidates, z, k)
    threshold = key_threshold(plan.squared, plan.higher_is_nearer, values[k - 1], const, magnitude, plan.slack)
    return ids, values, threshold, OK if kappa + max_error < threshold else WIDEN


@njit(**JIT)
def blas_candidates(keys: np.ndarray, phi32: np.ndarray, k: int, groups: Groups) -> tuple[np.ndarray, float]:
    """Write the float32 keys (N_pad,) by one sgemv (numba's np.dot calls BLAS), then return the
    candidates (ascending) and kappa >= every key left out: the keys above the (k + extra + 1)-th largest
    group maximum (:func:`latent.search._groups.top_groups`), every key >= kappa if they tie, or every
    item (kappa = -inf) where the groups would keep most of the catalog."""
    np.dot(phi32, groups.features, keys)
    n_pad = keys.shape[0]
    kept = k + groups.extra_groups
    size = groups.group_size
    n_groups = n_pad // size
    if kept >= n_groups or 2 * kept * size > n_pad:
        return np.arange(groups.n_items), -np.inf
    if size % SUBGROUP_ROWS == 0:  # two levels: subgroups of 16 items, then groups
        candidates, kappa = top_groups(keys.reshape(SUBGROUP_ROWS, -1), size // SUBGROUP_ROWS, kept)
    else:
        candidates, kappa = top_groups(keys.reshape(size, -1), 1, kept)
    if candidates.shape[0] < k:  # keys tie at kappa
        candidates = at_least(keys, kappa, groups.n_items)
    return candidates, kappa


@njit(**JIT)
def blas_query(
    keys: np.ndarray, z: np.ndarray, k: int, plan: ScorePlan, groups: Groups
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float, int]:
    """One query z (d,) for its k nearest (0 < k < N) through the "blas" layout; keys (N_pad,) float32 is
    overwritten with the keys.

    Returns ids (k,) and values (k,), nearest first (final when status is OK); the candidates (M,); phi32
    (m,); the norms of phi's segments; the underflow term; the key threshold; and the status."""
    phi, const, magnitude, norms, safe, underflow, max_error = start(z, plan)
    phi32 = phi.astype(np.float32)
    if not safe:
        no_ids = np.empty(0, np.int64)
        return no_ids, np.empty(0), no_ids, phi32, norms, underflow, 0.0, UNSAFE
    candidates, kappa = blas_candidates(keys, phi32, k, groups)
    ids, values, threshold, status = _certify(candidates, kappa, max_error, z, k, const, magnitude, plan)
    return ids, values, candidates, phi32, norms, underflow, threshold, status


@njit(**JIT)
def fused_start(
    z: np.ndarray, plan: ScorePlan, codes: Codes
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, np.ndarray, float, bool]:
    """The part of a "fused" query before the scan: phi (m,) float64, phi32 (m,), the scan's query
    phi_j scale_j in float32 (m,), const, its magnitude, the norms of phi's segments, the underflow term,
    and whether float32 is safe."""
    phi, const, magnitude, norms, safe, underflow, _ = start(z, plan)
    return phi, phi.astype(np.float32), (phi * codes.scale).astype(np.float32), const, magnitude, norms, underflow, safe


@njit(**JIT)
def fused_candidates(
    phi: np.ndarray, phi_codes: np.ndarray, heap_maxima: np.ndarray, heap_tiles: np.ndarray, n_keep: int,
    codes: Codes,
) -> tuple[np.ndarray, float, float]:
    """The candidates after the scan's heaps (:func:`latent.search._tiles.select`), kappa in key units,
    and max_error: the exact key of every item left out is at most kappa + max_error."""
    candidates, kappa_codes = select(codes.tiles, phi_codes, codes.n_items, heap_maxima, heap_tiles, n_keep)
    offset = 0.0
    max_error = 2.0**-148 * (phi.shape[0] + 1) * 32768.0  # underflow of the scaled codes' products
    for j in range(phi.shape[0]):
        offset += phi[j] * codes.mid[j]
        max_error += abs(phi[j]) * codes.error_weights[j]
    return candidates, offset + kappa_codes, max_error


@njit(**JIT)
def fused_finish(
    z: np.ndarray, k: int, phi: np.ndarray, phi_codes: np.ndarray, const: float, magnitude: float,
    heap_maxima: np.ndarray, heap_tiles: np.ndarray, plan: ScorePlan, codes: Codes,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """The part of a "fused" query after the scan: ids (k,), values (k,), the candidates, the key
    threshold and the status (OK or WIDEN)."""
    candidates, kappa, max_error = fused_candidates(
        phi, phi_codes, heap_maxima, heap_tiles, k + codes.extra_tiles, codes
    )
    ids, values, threshold, status = _certify(candidates, kappa, max_error, z, k, const, magnitude, plan)
    return ids, values, candidates, threshold, status


def matches_numpy(name: str, plan: ScorePlan, n_checks: int = 256, seed: int = 0) -> bool:
    """Whether :func:`rescore_rows` equals ``latent.scores.KERNELS[name]`` bit for bit on this plan's
    catalog and spread: up to n_checks items spread evenly, for queries on, near and far from them.
    The index checks this once per score and spread before it relies on the compiled rescoring."""
    mu_sigma = plan.mu_sigma
    n, _, d = mu_sigma.shape
    if d > MAX_DIM:
        return False
    ids = np.unique(np.linspace(0, n - 1, min(n, n_checks)).astype(np.int64))
    rng = np.random.default_rng(seed)
    mu, sigma = mu_sigma[ids, 0], mu_sigma[ids, 1]
    terms = plan.terms[ids] if plan.has_terms else None
    out = np.empty(ids.shape[0])
    for z in (mu[0], mu[-1] + sigma[-1], rng.normal(size=d) * mu.std(axis=0) * 3.0 + mu.mean(axis=0)):
        z = np.ascontiguousarray(z, dtype=np.float64)
        rescore_rows(plan, ids, z, out)
        expected = KERNELS[name](z, mu, sigma, plan.spread, terms)
        if not np.array_equal(out.view(np.int64), np.asarray(expected, dtype=np.float64).view(np.int64)):
            return False
    return True


_refresh_lock = threading.Lock()
_refreshed = False


def refresh_cache() -> None:
    """Drop this module's kernels from numba's disk cache when ``latent/scores.py`` has changed since
    they were cached. numba checks only the file that defines a kernel, but these kernels inline each
    score's compiled code from latent/scores.py; a stamp of that file's hash, next to the cache, tells
    them apart. Cheap after the first call in a process; call it before the first kernel call."""
    global _refreshed
    if _refreshed:
        return
    with _refresh_lock:
        if _refreshed:
            return
        cache_path = getattr(getattr(blas_query, "_cache", None), "_cache_path", None)  # numba's cache folder
        if cache_path is None:
            _refreshed = True
            return
        digest = hashlib.sha256(Path(latent.scores.__file__).read_bytes()).hexdigest()
        cache_dir = Path(cache_path)
        stamp = cache_dir / "_query.scores-stamp"
        try:
            current = stamp.read_text() if stamp.exists() else ""
            if current != digest:
                for path in cache_dir.glob("_query.*.nb[ic]"):
                    path.unlink(missing_ok=True)
                cache_dir.mkdir(parents=True, exist_ok=True)
                stamp.write_text(digest)
        except OSError:  # a read-only cache: numba then does not write there either
            pass
        _refreshed = True
