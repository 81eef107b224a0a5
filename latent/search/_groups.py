r"""Candidate selection through group maxima, compiled, after the "blas" backend's matrix-vector product.

The float32 keys of all N_pad items are viewed as (R, W), R = :data:`SUBGROUP_ROWS` rows: item i is in
subgroup i mod W, and subgroup j in group j mod G (G = W / r_g, r_g = group size / R), so group g holds
the group-size items i with i mod G = g. kappa is the (kept + 1)-th largest group maximum; every key
outside the ``kept`` groups whose maxima exceed kappa is at most kappa, so the candidates are the keys
above kappa, all inside those groups (docs/search.md, "Candidates").
"""

from __future__ import annotations

import numpy as np
from numba import njit

from latent.search._jit import JIT

#: Rows of the (R, W) view of the keys: items per subgroup.
SUBGROUP_ROWS = 16


@njit(**JIT)
def _larger(a: float, b: float) -> float:
    return a if a > b else b  # a select, which compiles to a vector max


@njit(**JIT)
def _column_maxima(rows: np.ndarray) -> np.ndarray:
    """out[j] = max_r rows[r, j] for rows (R, W) float32: (W,)."""
    out = rows[0].copy()
    for r in range(1, rows.shape[0]):
        row = rows[r]
        for j in range(out.shape[0]):
            a = out[j]
            b = row[j]
            out[j] = a if a > b else b  # a select, as in _larger
    return out


@njit(**JIT)
def _column_maxima_16(rows: np.ndarray) -> np.ndarray:
    """:func:`_column_maxima` for exactly 16 rows: one pass over the columns, the 16 rows reduced as a
    tree of maxima in registers rather than 16 passes over the running maxima."""
    out = np.empty(rows.shape[1], rows.dtype)
    r0, r1, r2, r3, r4, r5, r6, r7 = rows[0], rows[1], rows[2], rows[3], rows[4], rows[5], rows[6], rows[7]
    r8, r9, r10, r11, r12, r13, r14, r15 = rows[8], rows[9], rows[10], rows[11], rows[12], rows[13], rows[14], rows[15]
    for j in range(out.shape[0]):
        low = _larger(
            _larger(_larger(r0[j], r1[j]), _larger(r2[j], r3[j])),
            _larger(_larger(r4[j], r5[j]), _larger(r6[j], r7[j])),
        )
        high = _larger(
            _larger(_larger(r8[j], r9[j]), _larger(r10[j], r11[j])),
            _larger(_larger(r12[j], r13[j]), _larger(r14[j], r15[j])),
        )
        out[j] = _larger(low, high)
    return out


@njit(**JIT)
def _quickselect(values: np.ndarray, index: int) -> np.floating:
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


@njit(**JIT)
def kth_largest(values: np.ndarray, rank: int) -> np.floating:
    """The rank-th largest of values (n,), 1 <= rank <= n (no NaN).

    A lower bound first, in one vectorised pass: the smallest of the maxima of rank interleaved bins
    (bin b holds values b, b + rank, b + 2 rank, ...) is reached by rank values, one per bin, so it is
    at most the rank-th largest. Only the values that reach it, about rank (1 + ln(n / rank)) of them
    for values in random order, are then partitioned (quickselect)."""
    n = values.shape[0]
    bins = values[:rank].copy()
    whole = n - n % rank
    for row in range(1, whole // rank):  # element-wise maxima of rows: vector code
        start = row * rank
        for b in range(rank):
            a, c = bins[b], values[start + b]
            bins[b] = a if a > c else c  # a select, as in _larger
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


@njit(**JIT)
def top_groups(keys: np.ndarray, group_rows: int, kept: int) -> tuple[np.ndarray, float]:
    """Candidates among the float32 keys, viewed as (R, W) with W divisible by group_rows, and kappa.

    Returns the ids (M,) int64, ascending, of every key above kappa, and kappa: the (kept + 1)-th largest
    of the G = W / group_rows group maxima (group g: the items r W + j with j mod G = g). Every key
    left out is at most kappa. Needs kept < G. M can be less than kept when keys tie at kappa.
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


@njit(**JIT)
def at_least(keys: np.ndarray, kappa: float, n_items: int) -> np.ndarray:
    """The ids (ascending) of the keys (N_pad,) >= kappa among the first n_items: the candidates when
    keys tie at kappa (every key left out is then below kappa)."""
    ids = np.empty(n_items, np.int64)
    count = 0
    for i in range(n_items):
        if keys[i] >= kappa:
            ids[count] = i
            count += 1
    return ids[:count]
