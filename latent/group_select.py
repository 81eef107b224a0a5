r"""Compiled candidate selection through group maxima, for the "blas" backend of the search index.

After one BLAS matrix-vector product has written the float32 keys of all N_pad items,
:class:`latent.search.SearchIndex` needs the items whose keys could be among the top k. Instead of a
partial sort of all N_pad keys it takes maxima over groups and gathers only the best groups:

* item i is in subgroup i mod W (W = N_pad / R, R = 16 rows of the (R, W) view of the keys), and
  subgroup j in group j mod G (G = W / r_g, r_g = block size / R), so group g holds the block size
  items i with i mod G = g;
* kappa is the (kept + 1)-th largest group maximum. Every key outside the ``kept`` groups whose maxima
  exceed kappa is at most kappa, so the candidates are exactly the keys above kappa, and every one of
  them lies in those groups: at least one per group, about k + 8 in all (see
  ``latent.search.SearchIndex._select_one``, which does the same in numpy and handles ties at kappa).

In numpy that is about eight array operations, 22-29 us per query at 70,000 items on the 2-core
development machine, mostly passes over the keys and per-call overhead. This compiled version makes
one pass over the keys (the subgroup maxima, vectorised), finds kappa by a quickselect over the G group
maxima, and visits only the subgroups of the kept groups: 7.5 us on keys already in the cache, about
14 us right after the matrix-vector product that wrote them (which streams megabytes of features
through the cache). :func:`search_keys` then rescores the candidates (:func:`latent.rescore.nearest`)
in the same call. It compiles on first use (2.7 s on that
machine, once) and is cached on disk next to this module where it is writable (then about 10 ms).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from latent.rescore import nearest

# Comparisons only, no arithmetic: the results are exact whatever the compiler does. The keys are never
# NaN (the index answers such queries by float64 brute force), so "no NaN" lets the maxima vectorise.
_JIT = {"nogil": True, "cache": True, "boundscheck": False, "fastmath": {"nnan", "nsz"}}


@njit(**_JIT)
def _column_maxima(rows: np.ndarray) -> np.ndarray:
    """out[j] = max_r rows[r, j] for rows (R, W) float32: (W,)."""
    out = rows[0].copy()
    for r in range(1, rows.shape[0]):
        row = rows[r]
        for j in range(out.shape[0]):
            a = out[j]
            b = row[j]
            out[j] = a if a > b else b  # noqa: FURB136 (the select that compiles to a vector max)
    return out


@njit(**_JIT)
def _quickselect(values: np.ndarray, index: int) -> float:
    """The index-th smallest (0-based) of values (n,), which it reorders: Hoare's quickselect."""
    low, high = 0, values.shape[0] - 1
    while low < high:
        a, b, c = values[low], values[(low + high) // 2], values[high]
        pivot = max(min(a, b), min(max(a, b), c))  # median of three
        i, j = low, high
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if index <= j:
            high = j
        elif index >= i:
            low = i
        else:
            break  # values[j + 1 .. i - 1] all equal the pivot
    return values[index]


@njit(**_JIT)
def kth_largest(values: np.ndarray, rank: int) -> float:
    """The rank-th largest of values (n,), 1 <= rank <= n (no NaN).

    A lower bound first, in one vectorised pass: the smallest of the maxima of rank interleaved bins
    (bin b holds values b, b + rank, b + 2 rank, ...) is reached by rank values, one per bin, so it is
    at most the rank-th largest. Only the values that reach it, about rank (1 + ln(n / rank)) of them
    for values in random order, are then partitioned (quickselect). Measured on the 2-core development
    machine, from Python: 3.9 us against 5.8 us for a min-heap of the rank largest on 1,094 maxima (rank
    29); within :func:`top_groups` at 70,000 items (547 groups) 7.5 against 7.9 us per call."""
    n = values.shape[0]
    bins = values[:rank].copy()
    whole = n - n % rank
    for row in range(1, whole // rank):  # element-wise maxima of rows: vector code
        start = row * rank
        for b in range(rank):
            a, c = bins[b], values[start + b]
            bins[b] = a if a > c else c  # noqa: FURB136 (the select that compiles to a vector max)
    for t in range(whole, n):
        bins[t - whole] = max(bins[t - whole], values[t])
    low = bins.min()
    reaching = np.empty(n, values.dtype)
    count = 0
    for t in range(n):
        if values[t] >= low:
            reaching[count] = values[t]
            count += 1
    return _quickselect(reaching[:count], count - rank)


@njit(**_JIT)
def top_groups(keys: np.ndarray, group_rows: int, kept: int) -> tuple[np.ndarray, float]:
    """Candidates among the float32 keys, viewed as (R, W) with W divisible by group_rows, and kappa.

    Returns the ids (M,) int64, ascending, of every key above kappa, and kappa: the (kept + 1)-th largest
    of the G = W / group_rows group maxima (group g: the items r W + j with j mod G = g). Every key
    left out is at most kappa. Needs kept < G. M can be less than k when keys tie at kappa.
    """
    n_rows, width = keys.shape
    sub_maxima = _column_maxima(keys)  # (W,)
    n_groups = width // group_rows
    maxima = _column_maxima(sub_maxima.reshape(group_rows, n_groups))  # (G,)
    kappa = kth_largest(maxima, kept + 1)
    groups = np.empty(n_groups, np.int64)
    n_open_groups = 0
    for g in range(n_groups):
        if maxima[g] > kappa:
            groups[n_open_groups] = g
            n_open_groups += 1
    subgroups = np.empty(n_open_groups * group_rows, np.int64)  # ascending: rows outer, groups inner
    n_open = 0
    for r in range(group_rows):
        for t in range(n_open_groups):
            j = r * n_groups + groups[t]
            if sub_maxima[j] > kappa:
                subgroups[n_open] = j
                n_open += 1
    ids = np.empty(n_open * n_rows, np.int64)  # ascending, likewise
    n_ids = 0
    for r in range(n_rows):
        row = keys[r]
        for t in range(n_open):
            if row[subgroups[t]] > kappa:
                ids[n_ids] = r * width + subgroups[t]
                n_ids += 1
    return ids[:n_ids], float(kappa)


@njit(**_JIT)
def search_keys(
    keys: np.ndarray,
    group_rows: int,
    kept: int,
    table: np.ndarray,
    z: np.ndarray,
    spread: np.ndarray,
    kind: int,
    higher_is_nearer: bool,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """:func:`top_groups`, then the k nearest candidates rescored in float64 (:func:`latent.rescore.nearest`).

    keys (R, W) float32 as in :func:`top_groups`; table, z, spread, kind and higher_is_nearer as in
    ``nearest``. Returns ids (k,) and values (k,), nearest first (both empty when fewer than k keys
    exceed kappa: ties, which the caller resolves), the candidates (M,), ascending, and kappa.
    """
    candidates, kappa = top_groups(keys, group_rows, kept)
    if candidates.shape[0] < k:
        return np.empty(0, np.int64), np.empty(0), candidates, kappa
    ids, values = nearest(table, candidates, z, spread, kind, higher_is_nearer, k)
    return ids, values, candidates, kappa
