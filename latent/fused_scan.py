r"""A fused scan: keys = phi . psi(x) for every item, and the candidates for the top, in one compiled pass.

This is the hot loop of :class:`latent.search.SearchIndex`'s "fused" backend (the default from 200,000
items), which passes int16 codes of the features (float32 works too), half the bytes of the float32
features that a BLAS matrix-vector product would read. The codes are stored in blocks of ``BLOCK`` = 64
items, (n_blocks, m, BLOCK), so that the scan reads them as one contiguous stream, which the hardware
prefetchers follow at close to the memory's bandwidth (with one run per feature row, (m, N), 21 rows
streamed at about half of it). For each block a compiled loop (numba) computes the 64 float32 keys in
a private buffer that stays in the L1 cache, counts those above the minimum of a min-heap of the
n_keep + 1 largest block maxima seen so far (one vectorised compare), and only for the rare blocks with
some, about (n_keep + 1)(1 + ln(n_blocks / (n_keep + 1))) of them, takes the block's maximum into the
heap. No keys array goes to memory. Then, as in :mod:`latent.group_select`:

* kappa is the heap's minimum, the (n_keep + 1)-th largest block maximum: a block left out had its
  maximum at most the heap's minimum at the time, which never decreases (an evicted block was the
  minimum), so every key outside the n_keep blocks whose maxima exceed kappa is at most kappa;
* those blocks' keys are computed again, and the candidates are the keys above kappa: at least one per
  block, so at least n_keep. (If keys tie at kappa, keys equal to kappa fill up to n_keep.)

What the search needs from the scan, for its exactness certificate, is the candidate ids (ascending)
and kappa, an upper bound on the float32 key of every item left out. Both passes compute a block's keys
with the same inlined code, compiled without fast-math reassociation or contraction, so each key comes
out the same both times; :mod:`latent.search` bounds the error of the float32 keys for any summation
order anyway.

:mod:`latent.single_query` runs a whole query of the search index around this scan, compiled before
and after it (the query features; then the selection, the float64 rescoring and the certificate), with
:func:`scan` called from Python in between. With P threads the blocks are split into P contiguous parts, each with its own heap; kappa is then the largest of the heaps' minima and of the
(n_keep + 1)-th largest maximum among all their blocks, and the selection after them is serial and small.

Measured on the 2-core development machine, one thread, 1,000,000 items of the benchmark's catalog
(d = 10), a whole query (``SearchIndex.search``): Mahalanobis (21 rows) 1.53 ms against 2.34 ms with
the earlier layout (m, N) and a heap of items, Euclidean (11 rows) 0.85 against 1.38 ms. At 70,000
items (in cache) the scan costs about as much as numpy's sgemv over float32 features.

The kernels compile on first use and are cached on disk next to this module, where it is writable. The
parallel kernel, used from 200,000 items, needs a thread-safe numba threading layer (OpenMP or TBB),
since the dashboard searches from several threads at once; where only numba's "workqueue" layer is
available the serial kernel is used instead.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import get_num_threads, njit, prange, threading_layer

from latent.group_select import kth_largest

BLOCK = 64  # items per block of the codes' layout (n_blocks, m, BLOCK): 4 zmm registers of float32 keys

# No contraction into fused multiply-adds and no reassociation: a block's keys must come out the same
# in the scan and in the selection. Keys are never NaN (the index answers such queries by brute
# force), so "no NaN" lets the maxima vectorise.
_JIT = {"nogil": True, "cache": True, "boundscheck": False, "error_model": "numpy", "fastmath": {"nnan", "nsz"}}


@njit(inline="always", **_JIT)  # inlined by numba: called as a function, the scan took 1.7 instead of 1.2 ms at 1M
def _block_keys(blocks: np.ndarray, phi: np.ndarray, block: int, keys: np.ndarray) -> None:
    """keys[:BLOCK] = the float32 keys phi . psi of the BLOCK items of ``block``
    (blocks (n_blocks, m, BLOCK), phi (m,) float32, keys (BLOCK,) float32)."""
    m = blocks.shape[1]
    for i in range(BLOCK):
        keys[i] = np.float32(0.0)
    j = 0
    while j + 4 <= m:  # four feature rows per pass over the block's keys: a quarter of their traffic
        p0, p1, p2, p3 = phi[j], phi[j + 1], phi[j + 2], phi[j + 3]
        r0, r1, r2, r3 = blocks[block, j], blocks[block, j + 1], blocks[block, j + 2], blocks[block, j + 3]
        for i in range(BLOCK):
            keys[i] += (p0 * np.float32(r0[i]) + p1 * np.float32(r1[i])) + (
                p2 * np.float32(r2[i]) + p3 * np.float32(r3[i])
            )
        j += 4
    while j < m:
        pj = phi[j]
        row = blocks[block, j]
        for i in range(BLOCK):
            keys[i] += pj * np.float32(row[i])
        j += 1


@njit(**_JIT)
def _heap_replace_min(heap_keys: np.ndarray, heap_ids: np.ndarray, key: float, item: int) -> None:
    """Replace the minimum of the binary min-heap (heap_keys (r,), heap_ids (r,)) by (key, item)."""
    n = heap_keys.shape[0]
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and heap_keys[child + 1] < heap_keys[child]:
            child += 1
        if heap_keys[child] >= key:
            break
        heap_keys[pos] = heap_keys[child]
        heap_ids[pos] = heap_ids[child]
        pos = child
    heap_keys[pos] = key
    heap_ids[pos] = item


@njit(**_JIT)
def _scan_part(
    blocks: np.ndarray, phi: np.ndarray, first: int, stop: int, n_items: int, heap_maxima: np.ndarray, heap_blocks: np.ndarray
) -> None:
    """Scan blocks first..stop-1, keeping the r largest block maxima in the min-heap (heap_maxima (r,)
    float32, heap_blocks (r,) int64, filled with -inf and -1). Items from n_items on are excluded.

    Each block costs its keys and a vectorised count of those above the heap's minimum; only blocks with
    some (about r (1 + ln(n_blocks / r)) of them) take their maximum and enter the heap. A block left out
    has its maximum at most the heap's minimum at that time, and the minimum never decreases; an evicted
    block was the minimum."""
    keys = np.empty(BLOCK, dtype=np.float32)
    threshold = heap_maxima[0]
    for block in range(first, stop):
        _block_keys(blocks, phi, block, keys)
        if (block + 1) * BLOCK > n_items:  # the last block holds padding
            for i in range(n_items - block * BLOCK, BLOCK):
                keys[i] = -np.inf
        above = 0
        for i in range(BLOCK):
            above += keys[i] > threshold
        if above:
            best = keys[0]
            for i in range(1, BLOCK):
                key = keys[i]
                best = best if best > key else key  # noqa: FURB136 (a select, which vectorises)
            _heap_replace_min(heap_maxima, heap_blocks, best, block)
            threshold = heap_maxima[0]


@njit(parallel=True, **_JIT)
def _scan_parallel(
    blocks: np.ndarray, phi: np.ndarray, n_items: int, heap_maxima: np.ndarray, heap_blocks: np.ndarray
) -> None:
    """_scan_part over all blocks in P contiguous parts, one per thread, each with its own heap (P, r)."""
    n_parts = heap_maxima.shape[0]
    n_blocks = (n_items + BLOCK - 1) // BLOCK
    for part in prange(n_parts):
        first, stop = part * n_blocks // n_parts, (part + 1) * n_blocks // n_parts
        _scan_part(blocks, phi, first, stop, n_items, heap_maxima[part], heap_blocks[part])


@njit(**_JIT)
def select(
    blocks: np.ndarray, phi: np.ndarray, n_items: int, heap_maxima: np.ndarray, heap_blocks: np.ndarray, n_keep: int
) -> tuple[np.ndarray, float]:
    """The candidates (ascending) and kappa from the parts' heaps (P, n_keep + 1) of :func:`scan`; see
    :func:`top_keys`."""
    kappa = np.float32(-np.inf)
    for part in range(heap_maxima.shape[0]):  # each heap's minimum bounds the blocks its part left out
        kappa = max(kappa, heap_maxima[part, 0])
    maxima = heap_maxima.ravel()
    if maxima.shape[0] > n_keep + 1:  # several parts: the (n_keep + 1)-th largest of their blocks
        kappa = max(kappa, kth_largest(maxima, n_keep + 1))
    open_blocks = np.sort(heap_blocks.ravel()[maxima > kappa])  # at most n_keep
    keys = np.empty(BLOCK, dtype=np.float32)
    ids = np.empty(n_keep * BLOCK, dtype=np.int64)
    count = 0
    for block in open_blocks:
        _block_keys(blocks, phi, block, keys)
        base = block * BLOCK
        for i in range(min(BLOCK, n_items - base)):
            if keys[i] > kappa:
                ids[count] = base + i
                count += 1
    if count >= n_keep:
        return ids[:count], float(kappa)
    # Keys tie at kappa (rare: equal keys in several blocks): add keys equal to kappa, in id order, up to
    # n_keep; every key left out is still at most kappa.
    ties = np.empty(n_keep - count, dtype=np.int64)
    n_ties = 0
    n_blocks = (n_items + BLOCK - 1) // BLOCK
    for block in range(n_blocks):
        _block_keys(blocks, phi, block, keys)
        base = block * BLOCK
        for i in range(min(BLOCK, n_items - base)):
            if keys[i] == kappa and n_ties < ties.shape[0]:
                ties[n_ties] = base + i
                n_ties += 1
        if n_ties == ties.shape[0]:
            break
    return np.sort(np.concatenate((ids[:count], ties[:n_ties]))), float(kappa)


def scan(blocks: np.ndarray, phi: np.ndarray, n_items: int, n_keep: int, n_parts: int) -> tuple[np.ndarray, np.ndarray]:
    """The parts' heaps of block maxima, (n_parts, n_keep + 1) float32 and int64 (block ids), for
    :func:`select`; needs n_keep < ceil(n_items / BLOCK), the number of blocks. Arguments as in :func:`top_keys`.

    This is Python on purpose: the parallel kernel is only ever called from Python, never from another
    cached compiled function. A cached function that calls a ``parallel=True`` one can crash when it is
    loaded from numba's disk cache (numba issue #8578, still open; it did here, after the single-query
    kernel had once embedded this scan)."""
    heap_maxima = np.full((n_parts, n_keep + 1), -np.inf, dtype=np.float32)
    heap_blocks = np.full((n_parts, n_keep + 1), -1, dtype=np.int64)
    if n_parts > 1:
        _scan_parallel(blocks, phi, n_items, heap_maxima, heap_blocks)
    else:
        _scan_part(blocks, phi, 0, (n_items + BLOCK - 1) // BLOCK, n_items, heap_maxima[0], heap_blocks[0])
    return heap_maxima, heap_blocks


_PARALLEL_MIN_ITEMS = 200_000  # below this one thread is as fast (measured at 70,000), and compiles faster

_lock = threading.Lock()
_parallel_ok: bool | None = None  # None: not decided yet (the first parallel call decides, under the lock)


def n_parts(blocks: np.ndarray, n_items: int) -> int:
    """How many parts to split n_items into: numba's thread count from _PARALLEL_MIN_ITEMS items, if the
    threading layer is thread-safe (the first call that would go parallel checks, and compiles)."""
    global _parallel_ok
    n_parts = min(get_num_threads(), n_items // (16 * BLOCK)) if n_items >= _PARALLEL_MIN_ITEMS else 1
    if n_parts <= 1:
        return 1
    if _parallel_ok is None:
        with _lock:
            if _parallel_ok is None:
                _scan_parallel(blocks, np.zeros(blocks.shape[1], np.float32), 1, np.full((1, 1), -np.inf, np.float32), np.full((1, 1), -1))
                _parallel_ok = threading_layer() in ("omp", "tbb")
    return n_parts if _parallel_ok else 1


def to_blocks(features: np.ndarray) -> np.ndarray:
    """The layout that the scan reads: features (m, N) as (ceil(N / BLOCK), m, BLOCK), C-contiguous, where
    block b holds items b * BLOCK ... b * BLOCK + BLOCK - 1, row by row; the last block is padded with 0."""
    m, n = features.shape
    n_blocks = -(-n // BLOCK)
    blocks = np.zeros((n_blocks, m, BLOCK), dtype=features.dtype)
    whole = n // BLOCK
    blocks[:whole] = features[:, : whole * BLOCK].reshape(m, whole, BLOCK).transpose(1, 0, 2)
    if whole < n_blocks:
        blocks[whole, :, : n - whole * BLOCK] = features[:, whole * BLOCK :]
    return blocks


def top_keys(blocks: np.ndarray, phi: np.ndarray, n_items: int, n_keep: int) -> tuple[np.ndarray, float]:
    """Candidate ids (M,) int64, ascending, M >= min(n_keep, n_items), whose keys
    ``phi @ features[:, :n_items]`` (float32) are the largest, and kappa, a float that is at least the key
    of every item left out and at most every candidate's key. kappa is the (n_keep + 1)-th largest
    maximum over the blocks of BLOCK items, and the candidates are the keys above it (about n_keep plus
    a few; with ties at kappa, keys equal to it up to n_keep), or every item (kappa = -inf) when there
    are at most n_keep blocks.

    ``blocks`` are the features (m, N_pad) in the layout of :func:`to_blocks` (float32 or int16), with
    N_pad >= n_items; ``phi`` (m,) float32; n_keep >= 1. Catalogs of at least 200,000 items are split over numba's current thread count
    (``numba.set_num_threads``).
    """
    if n_keep >= (n_items + BLOCK - 1) // BLOCK:  # every block would be kept: every item is a candidate
        return np.arange(n_items), -np.inf
    heap_maxima, heap_blocks = scan(blocks, phi, n_items, n_keep, n_parts(blocks, n_items))
    return select(blocks, phi, n_items, heap_maxima, heap_blocks, n_keep)
