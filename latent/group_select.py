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
through the cache). :func:`latent.single_query.blas_query` runs it between the matrix-vector product and
the float64 rescoring, in one compiled call. It compiles on first use (2.7 s on that machine, once) and is cached on disk next to this module where it is writable (then about 10 ms).
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
def _larger(a: float, b: float) -> float:
    return a if a > b else b  # noqa: FURB136 (the select that compiles to a vector max)


@njit(**_JIT)
def _column_maxima_16(rows: np.ndarray) -> np.ndarray:
    """:func:`_column_maxima` for exactly 16 rows (R, W): one pass over the columns with the 16 rows as
    a tree of maxima in registers, instead of 16 passes that load and store the running maxima (3.0
    against 4.6 us for 70,016 keys in the L2 cache, on the 2-core development machine)."""
    out = np.empty(rows.shape[1], rows.dtype)
    r0, r1, r2, r3, r4, r5, r6, r7 = rows[0], rows[1], rows[2], rows[3], rows[4], rows[5], rows[6], rows[7]
    r8, r9, r10, r11, r12, r13, r14, r15 = rows[8], rows[9], rows[10], rows[11], rows[12], rows[13], rows[14], rows[15]
    for j in range(out.shape[0]):
        low = _larger(_larger(_larger(r0[j], r1[j]), _larger(r2[j], r3[j])), _larger(_larger(r4[j], r5[j]), _larger(r6[j], r7[j])))
        high = _larger(
            _larger(_larger(r8[j], r9[j]), _larger(r10[j], r11[j])), _larger(_larger(r12[j], r13[j]), _larger(r14[j], r15[j]))
        )
        out[j] = _larger(low, high)
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
    sub_maxima = _column_maxima_16(keys) if n_rows == 16 else _column_maxima(keys)  # (W,)
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
