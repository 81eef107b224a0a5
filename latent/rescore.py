r"""Compiled float64 rescoring of candidate items, equal bit for bit to the kernels of :mod:`latent.scores`.

:class:`latent.search.SearchIndex` rescores its few candidates per query in float64, with values that
must equal ``SCORES[name].fn`` exactly (a 1-ulp difference could reorder two tied items). Through numpy
that is a gather and four to six ufunc calls on a (M, d) array, about 20 us for M = 28 candidates,
mostly per-call overhead. The compiled loop here does the same arithmetic in a few microseconds, and
:mod:`latent.single_query` runs it right after the selection, in the same compiled call.

Bit-for-bit equality needs the same operations in the same order:

* the elementwise part of each kernel is written with the same operations, left to right (IEEE
  addition, subtraction, multiplication, division and square root are correctly rounded, so numpy's
  vector loops and this scalar loop agree), compiled without fast-math, so no multiply-add is fused;
* the sum over the d dimensions follows numpy's ``np.add.reduce`` along a contiguous last axis, its
  pairwise summation (numpy/_core/src/umath/loops_utils.h.src): fewer than 8 terms are added left to
  right onto 0.0; up to 128 terms go into 8 interleaved partial sums r_0..r_7 (r_j = t_j + t_{j+8} + ...),
  combined as ((r_0 + r_1) + (r_2 + r_3)) + ((r_4 + r_5) + (r_6 + r_7)), then the remaining d mod 8
  terms are added one at a time. (numpy splits more than 128 terms in halves; this module handles
  d <= :data:`MAX_DIM` = 128 only, and the index uses numpy beyond.)

The per-item terms that need a logarithm (``latent.scores.KERNEL_TERMS``) are not recomputed here: they
come precomputed by numpy in the rescore table, so no transcendental function has to match numpy's.
Callers must not compile with fast-math flags that change finite results ("contract", "reassoc",
"afn", "arcp"): numba compiles a callee with the fast-math flags of the jitted function that first
calls it, and caches that code. When :func:`latent.fused_scan` compiled its query kernel with
"contract", a cache built through it rescored jeffreys 1 ulp off numpy (FMA), so the index returned
8.681493373634984 where ``fn`` gives ...986. "nnan" and "nsz" are harmless here (no NaN reaches this
code, and they change nothing but the sign of a zero). ``tests/test_rescore.py`` checks the callers.

It compiles on first use (about 4 s on the 2-core development machine, once: the result is cached
on disk next to this module where it is writable). Because numpy could change its summation one day, the index checks this module against the numpy
kernels on its own catalog before it uses it (:func:`matches_numpy`), and falls back to numpy if not.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Kernel codes, by score name: the ``kind`` argument of :func:`rescore_rows`.
KINDS: dict[str, int] = {
    "likelihood": 0,
    "euclidean": 1,
    "mahalanobis": 2,
    "kl": 3,
    "kl_reverse": 4,
    "jeffreys": 5,
    "bhattacharyya": 6,
    "wasserstein2": 7,
}

#: Per-item terms in the rescore table after mu and sigma, by score (latent.scores.KERNEL_TERMS).
N_TERMS: dict[str, int] = {
    "likelihood": 1,
    "euclidean": 0,
    "mahalanobis": 0,
    "kl": 1,
    "kl_reverse": 1,
    "jeffreys": 1,
    "bhattacharyya": 2,
    "wasserstein2": 1,
}

#: The largest d that the compiled rescoring handles: numpy's PW_BLOCKSIZE, the longest run it sums
#: without splitting in halves.
MAX_DIM = 128

# No fastmath: every operation must round exactly as numpy's does.
_JIT = {"nogil": True, "cache": True, "boundscheck": False}


@njit(**_JIT)
def _pairwise_block(terms: np.ndarray, start: int, n: int) -> float:
    """numpy's pairwise sum of terms[start:start + n] for n <= 128 (see the module docstring)."""
    if n < 8:
        total = 0.0
        for i in range(start, start + n):
            total += terms[i]
        return total
    r0, r1, r2, r3 = terms[start], terms[start + 1], terms[start + 2], terms[start + 3]
    r4, r5, r6, r7 = terms[start + 4], terms[start + 5], terms[start + 6], terms[start + 7]
    i = 8
    whole = n - n % 8
    while i < whole:
        at = start + i
        r0 += terms[at]
        r1 += terms[at + 1]
        r2 += terms[at + 2]
        r3 += terms[at + 3]
        r4 += terms[at + 4]
        r5 += terms[at + 5]
        r6 += terms[at + 6]
        r7 += terms[at + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += terms[start + i]
        i += 1
    return total


@njit(**_JIT)
def pairwise_sum(terms: np.ndarray) -> float:
    """The sum of terms (n,), n <= 128, float64, rounded exactly as ``np.add.reduce`` over a contiguous
    axis. (Above 128 terms numpy recurses on halves; the index does not compile for such d.)"""
    if terms.shape[0] > MAX_DIM:
        raise ValueError("pairwise_sum: at most 128 terms")
    return _pairwise_block(terms, 0, terms.shape[0])


@njit(**_JIT)
def rescore_rows(
    table: np.ndarray, ids: np.ndarray, z: np.ndarray, spread: np.ndarray, kind: int, out: np.ndarray
) -> None:
    """out[c] = the score ``kind`` of item ids[c] for the query z, for every candidate c.

    table (N, 2 + t, d) float64: mu, sigma and the kernel's t precomputed per-item terms
    (``latent.search._rescore_table``); ids (M,) int64; z (d,) and spread (d,) float64; out (M,) float64.
    The formulas are those of :mod:`latent.scores`, with u = (z - mu) / sigma and v = (z - mu) / s:
    likelihood sum(-u^2/2 - log sigma) - (d/2) log 2pi, euclidean sqrt(sum (z - mu)^2), mahalanobis
    sqrt(sum u^2), kl sum(g(s/sigma) + u^2/2), kl_reverse sum(g(sigma/s) + v^2/2), jeffreys
    sum((s/sigma - sigma/s)^2/2 + (u^2 + v^2)/2), bhattacharyya sum((z - mu)^2 / (4 (s^2 + sigma^2))
    + log(...)/2) and wasserstein2 sqrt(sum((z - mu)^2 + (s - sigma)^2)).
    """
    d = z.shape[0]
    terms = np.empty(d)
    offset = 0.5 * d * math.log(2.0 * math.pi)  # the same expression as latent.scores._likelihood
    for c in range(ids.shape[0]):
        row = table[ids[c]]  # (2 + t, d)
        for j in range(d):
            diff = z[j] - row[0, j]
            if kind == 0:  # likelihood
                u = diff / row[1, j]
                terms[j] = -0.5 * (u * u) - row[2, j]
            elif kind == 1:  # euclidean
                terms[j] = diff * diff
            elif kind == 2:  # mahalanobis
                u = diff / row[1, j]
                terms[j] = u * u
            elif kind == 3:  # kl
                u = diff / row[1, j]
                terms[j] = row[2, j] + 0.5 * (u * u)
            elif kind == 4:  # kl_reverse
                v = diff / spread[j]
                terms[j] = row[2, j] + 0.5 * (v * v)
            elif kind == 5:  # jeffreys
                u = diff / row[1, j]
                v = diff / spread[j]
                terms[j] = row[2, j] + 0.5 * (u * u + v * v)
            elif kind == 6:  # bhattacharyya
                terms[j] = diff * diff / row[2, j] + row[3, j]
            else:  # wasserstein2
                terms[j] = diff * diff + row[2, j]
        total = pairwise_sum(terms)
        if kind == 0:
            total = total - offset
        elif kind == 1 or kind == 2 or kind == 7:
            total = math.sqrt(total)
        out[c] = total


def matches_numpy(name: str, table: np.ndarray, spread: np.ndarray, n_checks: int = 256, seed: int = 0) -> bool:
    """Whether :func:`rescore_rows` equals ``latent.scores.KERNELS[name]`` bit for bit on this table.

    Checks up to n_checks items of the table (N, 2 + t, d), spread evenly, for random queries around
    their means and far from them; the index calls it once per score before it relies on the
    compiled path."""
    from latent.scores import KERNELS

    n, _, d = table.shape
    ids = np.unique(np.linspace(0, n - 1, min(n, n_checks)).astype(np.int64))
    rng = np.random.default_rng(seed)
    mu, sigma = table[ids, 0], table[ids, 1]
    t = table.shape[1] - 2
    terms = None if t == 0 else table[ids, 2] if t == 1 else tuple(table[ids, 2 + i] for i in range(t))
    spread_d = np.ascontiguousarray(np.broadcast_to(spread, (d,)), dtype=np.float64)
    out = np.empty(ids.shape[0])
    for z in (mu[0], mu[-1] + sigma[-1], rng.normal(size=d) * mu.std(axis=0) * 3.0 + mu.mean(axis=0)):
        z = np.ascontiguousarray(z, dtype=np.float64)
        rescore_rows(table, ids, z, spread_d, KINDS[name], out)
        expected = KERNELS[name](z, mu, sigma, spread, terms)
        if not np.array_equal(out.view(np.int64), np.asarray(expected, dtype=np.float64).view(np.int64)):
            return False
    return True


@njit(**_JIT)
def nearest(
    table: np.ndarray,
    candidates: np.ndarray,
    z: np.ndarray,
    spread: np.ndarray,
    kind: int,
    higher_is_nearer: bool,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of the candidates (M,) int64 (distinct, any order), rescored by :func:`rescore_rows`:
    ids (k,) int64 and values (k,) float64, nearest first, ties broken by the lower id; k <= M."""
    ids = np.sort(candidates)
    values = np.empty(ids.shape[0])
    rescore_rows(table, ids, z, spread, kind, values)
    nearness = -values if higher_is_nearer else values
    order = np.argsort(nearness, kind="mergesort")[:k]  # stable: ties keep the ascending ids' order
    return ids[order], values[order]
