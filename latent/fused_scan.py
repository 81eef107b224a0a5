r"""A fused scan: keys = phi . psi(x) for every item and their top candidates, in one pass.

This is the hot loop of :class:`latent.search.SearchIndex`'s "fused" backend (the default from 200,000
items), which passes int16 codes of the features (float32 works too). Instead of writing all N keys to
memory with a BLAS matrix-vector product and then selecting from them in several numpy passes, a
compiled loop (numba) computes the keys of a chunk of items at a time (1,024, or 8,192 for more than 16
feature rows), in float32, into a buffer that stays in the L1 cache, and keeps the ``n_keep`` largest in
a binary min-heap. Each run of ``_RUN`` keys costs one vectorised count against the heap's minimum;
only runs with keys above it are visited one key at a time. The heap starts just below a threshold
taken from the first chunk's keys (``_seed``), so that only about n_keep (1 + ln(N / chunk)) keys ever
enter it, instead of n_keep (1 + ln(N / n_keep)).

:func:`search_one` runs a whole query of the search index in one compiled call: the scan, then the
float64 rescoring of its candidates (:mod:`latent.rescore`), which saves the per-call overhead of about
ten numpy operations per query.

With P threads the items are split into P contiguous parts, each with its own heap; the heaps are
merged at the end. What the search needs from the scan, for its exactness certificate, is:

* ``ids`` (M,), ascending: the items whose keys are the M = min(n_keep, N) largest found;
* ``kappa``: an upper bound on the key of every item left out. Each part's heap minimum bounds the keys
  that part left out (an item is refused only when its key is at most the current minimum, and the
  minimum never decreases; an evicted item was the minimum), and the merge adds the best key it drops.

The keys are float32 sums of float32 products in some order; :mod:`latent.search` bounds their error
for any summation order, with or without fused multiply-add.

The kernels compile on first use and are cached on disk next to this module, where it is writable. On
the 2-core development machine the first search through :func:`search_one` took 16.6 s from an empty
cache (it compiles the serial and the parallel scan and the rescoring) and 0.47 s from the cache. The
parallel kernel, used from 200,000 items, needs a thread-safe numba threading layer (OpenMP or TBB),
since the dashboard searches from several threads at once; where only numba's "workqueue" layer is
available the serial kernel is used instead.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import get_num_threads, njit, prange, threading_layer

from latent.rescore import nearest

BLOCK = 64  # items per block of the codes' layout (n_blocks, m, BLOCK): 4 zmm registers of float32 keys
_CHUNK = 1024  # items per keys buffer (16 blocks): 4 KB, in the L1 cache
_RUN = 64  # keys per vectorised count against the heap's minimum
_SEED_GROUPS = 128  # interleaved groups of the first chunk whose maxima seed the heap (see _seed)

_JIT = {"nogil": True, "cache": True, "boundscheck": False, "error_model": "numpy", "fastmath": {"contract"}}


@njit(**_JIT)
def _heap_replace_min(heap_keys: np.ndarray, heap_ids: np.ndarray, key: np.float32, item: int) -> None:
    """Replace the minimum of the binary min-heap (heap_keys (n,), heap_ids (n,)) by (key, item)."""
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


@njit(inline="always", **_JIT)  # inlined at numba's level, so that LLVM sees `keys` is a private buffer
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
def _push_above(
    buffer: np.ndarray, first: int, stop: int, base: int, heap_keys: np.ndarray, heap_ids: np.ndarray
) -> None:
    """Push buffer[first:stop] (the keys of items base + first, ...) where they beat the heap's minimum."""
    for i in range(first, stop):
        if buffer[i] > heap_keys[0]:
            _heap_replace_min(heap_keys, heap_ids, buffer[i], base + i)


@njit(nogil=True, cache=True, boundscheck=False, fastmath={"nnan", "nsz"})  # keys are never NaN: vector max
def _seed(buffer: np.ndarray, width: int, heap_keys: np.ndarray) -> None:
    """Start an empty heap (n,), n <= 128, just below t0: the n-th largest of the maxima of 128
    interleaved groups of the first chunk's keys (buffer[:width], width >= 128; group l holds keys l,
    l + 128, l + 256, ..., up to a whole number of rows of 128).

    n groups have a key >= t0, so at least n keys of the chunk are above the seed, and they replace every
    placeholder entry (id -1) of the heap before its minimum rises above the seed. Only keys above the
    seed enter the heap: a little over n of the chunk's keys instead of about n (1 + ln(chunk / n)), and
    each entry costs a scalar visit of its run. Every item refused is still at most the heap's minimum,
    so kappa stays valid."""
    n = heap_keys.shape[0]
    if n > _SEED_GROUPS or width < _SEED_GROUPS:
        return
    maxima = np.empty(_SEED_GROUPS, dtype=np.float32)
    for lane in range(_SEED_GROUPS):
        maxima[lane] = buffer[lane]
    for row in range(1, width // _SEED_GROUPS):  # element-wise maxima of rows: vector code
        for lane in range(_SEED_GROUPS):
            maxima[lane] = max(maxima[lane], buffer[row * _SEED_GROUPS + lane])
    seed = np.nextafter(np.sort(maxima)[_SEED_GROUPS - n], np.float32(-3e38))  # the next float below
    for i in range(n):
        heap_keys[i] = seed


@njit(**_JIT)
def _push_chunk(buffer: np.ndarray, width: int, base: int, heap_keys: np.ndarray, heap_ids: np.ndarray) -> None:
    """Push a chunk's keys buffer[:width] into the heap.

    Even with the final minimum, a chunk holds one of the heap's keys about n_keep * chunk / N of the
    time, so chunks are checked in runs of _RUN keys: a vectorised count of the keys above the minimum
    (constant bounds, so that it compiles to vector compares), and a scalar visit of the runs with some.
    The last width mod _RUN keys are visited one by one."""
    threshold = heap_keys[0]
    whole = width - width % _RUN
    for run in range(whole // _RUN):
        above = 0
        for i in range(run * _RUN, run * _RUN + _RUN):
            above += buffer[i] > threshold
        if above:
            _push_above(buffer, run * _RUN, run * _RUN + _RUN, base, heap_keys, heap_ids)
            threshold = heap_keys[0]
    _push_above(buffer, whole, width, base, heap_keys, heap_ids)


@njit(**_JIT)
def _scan_part(
    blocks: np.ndarray,
    phi: np.ndarray,
    start: int,
    stop: int,
    heap_keys: np.ndarray,
    heap_ids: np.ndarray,
) -> None:
    """Push the keys of items start..stop-1 into the heap (start a multiple of BLOCK; blocks
    (n_blocks, m, BLOCK) float32 or int16, phi (m,) float32).

    The first _CHUNK items seed the heap (see _seed). After that each block's keys are computed into a
    private buffer of BLOCK floats (vector registers), counted against the heap's minimum, and visited
    one by one only when some are above it. The blocks are read in order, as one stream of memory."""
    keys = np.empty(BLOCK, dtype=np.float32)
    first = start // BLOCK
    seed_width = min(_CHUNK, stop - start)
    seed_keys = np.empty(_CHUNK, dtype=np.float32)
    for b in range(-(-seed_width // BLOCK)):
        _block_keys(blocks, phi, first + b, keys)
        seed_keys[b * BLOCK : (b + 1) * BLOCK] = keys
    _seed(seed_keys, seed_width, heap_keys)
    _push_chunk(seed_keys, seed_width, start, heap_keys, heap_ids)
    threshold = heap_keys[0]
    for block in range(first + _CHUNK // BLOCK, -(-stop // BLOCK)):
        _block_keys(blocks, phi, block, keys)
        above = 0
        for i in range(BLOCK):  # a vectorised count against the heap's minimum
            above += keys[i] > threshold
        if above:
            base = block * BLOCK
            _push_above(keys, 0, min(BLOCK, stop - base), base, heap_keys, heap_ids)
            threshold = heap_keys[0]


@njit(**_JIT)
def _merge(heap_keys: np.ndarray, heap_ids: np.ndarray, n_keep: int) -> tuple[np.ndarray, float]:
    """The best n_keep entries of the heaps (P, n_keep), ids ascending, and kappa (see the module docstring)."""
    kappa = -np.inf
    for p in range(heap_keys.shape[0]):  # each heap's minimum bounds what its part left out
        kappa = max(kappa, np.float64(heap_keys[p, 0]))
    keys = heap_keys.ravel()
    ids = heap_ids.ravel()
    valid = ids >= 0  # unfilled slots (a part with fewer than n_keep items) hold id -1 and key -inf
    keys = keys[valid]
    ids = ids[valid]
    if ids.shape[0] > n_keep:
        order = np.argsort(-keys)
        kappa = max(kappa, np.float64(keys[order[n_keep]]))  # the best key dropped here
        ids = ids[order[:n_keep]]
    return np.sort(ids), kappa


@njit(**_JIT)
def _top_keys(blocks: np.ndarray, phi: np.ndarray, n_items: int, n_keep: int, n_parts: int) -> tuple[np.ndarray, float]:
    """:func:`top_keys` over n_parts parts (1: the serial kernel)."""
    if n_parts > 1:
        return _top_keys_parallel(blocks, phi, n_items, n_keep, n_parts)
    heap_keys = np.full((1, n_keep), -np.inf, dtype=np.float32)
    heap_ids = np.full((1, n_keep), -1, dtype=np.int64)
    _scan_part(blocks, phi, 0, n_items, heap_keys[0], heap_ids[0])
    return _merge(heap_keys, heap_ids, n_keep)


@njit(parallel=True, **_JIT)
def _top_keys_parallel(
    blocks: np.ndarray, phi: np.ndarray, n_items: int, n_keep: int, n_parts: int
) -> tuple[np.ndarray, float]:
    heap_keys = np.full((n_parts, n_keep), -np.inf, dtype=np.float32)
    heap_ids = np.full((n_parts, n_keep), -1, dtype=np.int64)
    n_chunks = (n_items + _CHUNK - 1) // _CHUNK
    for part in prange(n_parts):
        start = min(n_items, part * n_chunks // n_parts * _CHUNK)  # whole chunks per part
        stop = min(n_items, (part + 1) * n_chunks // n_parts * _CHUNK)
        _scan_part(blocks, phi, start, stop, heap_keys[part], heap_ids[part])
    return _merge(heap_keys, heap_ids, n_keep)


@njit(**_JIT)
def _search(
    codes: np.ndarray,
    phi: np.ndarray,
    scale: np.ndarray,
    mid: np.ndarray,
    error_weights: np.ndarray,
    n_items: int,
    n_keep: int,
    n_parts: int,
    table: np.ndarray,
    z: np.ndarray,
    spread: np.ndarray,
    kind: int,
    higher_is_nearer: bool,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """:func:`search_one` in one compiled call."""
    candidates, kappa_codes = _top_keys(codes, (phi * scale).astype(np.float32), n_items, n_keep, n_parts)
    offset = 0.0
    error = 0.0
    for j in range(phi.shape[0]):
        offset += phi[j] * mid[j]
        error += abs(phi[j]) * error_weights[j]
    ids, values = nearest(table, candidates, z, spread, kind, higher_is_nearer, k)
    return ids, values, candidates, offset + kappa_codes, error


_PARALLEL_MIN_ITEMS = 200_000  # below this one thread is as fast (measured at 70,000), and compiles faster

_lock = threading.Lock()
_parallel_ok: bool | None = None  # None: not decided yet (the first parallel call decides, under the lock)


def _n_parts(blocks: np.ndarray, n_items: int) -> int:
    """How many parts to split n_items into: numba's thread count from _PARALLEL_MIN_ITEMS items, if the
    threading layer is thread-safe (the first call that would go parallel checks, and compiles)."""
    global _parallel_ok
    n_parts = min(get_num_threads(), n_items // (2 * _CHUNK)) if n_items >= _PARALLEL_MIN_ITEMS else 1
    if n_parts <= 1:
        return 1
    if _parallel_ok is None:
        with _lock:
            if _parallel_ok is None:
                _top_keys_parallel(blocks, np.zeros(blocks.shape[1], np.float32), 1, 1, 1)  # starts the layer
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
    """Candidate ids (M,) int64, ascending, with the M = min(n_keep, n_items) largest keys
    ``phi @ features[:, :n_items]``, and kappa, a float >= the key of every item left out.

    ``blocks`` are the features (m, N_pad) in the layout of :func:`to_blocks` (float32 or int16), with
    N_pad >= n_items; ``phi`` (m,) float32; n_keep >= 1. Catalogs of at least 200,000 items are split over numba's current thread count
    (``numba.set_num_threads``).
    """
    return _top_keys(blocks, phi, n_items, n_keep, _n_parts(blocks, n_items))


def search_one(
    codes: np.ndarray,
    phi: np.ndarray,
    scale: np.ndarray,
    mid: np.ndarray,
    error_weights: np.ndarray,
    n_items: int,
    n_keep: int,
    table: np.ndarray,
    z: np.ndarray,
    spread: np.ndarray,
    kind: int,
    higher_is_nearer: bool,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """One query of :class:`latent.search.SearchIndex`'s "fused" backend, start to finish, in one
    compiled call: the scan of the int16 codes, then the float64 rescoring of its candidates.

    codes (m, N_pad) int16 with per-column ``scale`` and ``mid`` (m,) and ``error_weights`` (m,)
    (``latent.search._Quantized``); phi (m,) float64 query features; table (N, 2 + t, d), z (d,), spread
    (d,), kind and higher_is_nearer as in :func:`latent.rescore.nearest`; k <= n_keep <= n_items.

    Returns the k nearest ids (k,) and their values (k,), nearest first; the candidates (M,), ascending;
    kappa, a bound on the exact key phi . psi of every item left out, up to ``error``; and ``error`` =
    sum_j |phi_j| error_weights_j, the bound on every item's key error (without the underflow term).
    """
    n_parts = _n_parts(codes, n_items)
    return _search(codes, phi, scale, mid, error_weights, n_items, n_keep, n_parts, table, z, spread, kind, higher_is_nearer, k)

