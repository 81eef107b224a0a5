r"""The "fused" backend's scan: keys phi . psi for every item and the best tiles, in one compiled pass.

The item features are stored as int16 codes (half the bytes of float32) in tiles of :data:`TILE` items,
(n_tiles, m, TILE), so that the scan reads them as one contiguous stream. For each tile a compiled loop
computes the TILE float32 keys in a buffer that stays in the L1 cache and counts those above the minimum
of a min-heap of the n_keep + 1 largest tile maxima seen so far; only the rare tiles with some take
their maximum into the heap. No keys array goes to memory. Then (docs/search.md, "The fused scan"):

* kappa is the heap's minimum, the (n_keep + 1)-th largest tile maximum: a tile left out had its
  maximum at most the heap's minimum at the time, which never decreases (an evicted tile was the
  minimum), so every key outside the n_keep tiles whose maxima exceed kappa is at most kappa;
* those tiles' keys are computed again, and the candidates are the keys above kappa: at least one per
  tile. With ties at kappa, keys equal to it fill up to n_keep.

Both passes compute a tile's keys with the same inlined code, compiled without reassociation or
contraction, so each key comes out the same both times. With P threads the tiles are split into P
contiguous parts, each with its own heap; kappa is then the largest of the heaps' minima and of the
(n_keep + 1)-th largest maximum among all their tiles.

The parallel kernel is only ever called from Python (:func:`scan`), never from another cached compiled
function: a cached function that calls a ``parallel=True`` one can crash when it is loaded from numba's
disk cache (numba issue #8578). It needs a thread-safe threading layer (OpenMP or TBB), since the
dashboard searches from several threads at once; with only numba's "workqueue" layer the serial kernel
is used.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import get_num_threads, njit, prange, threading_layer

from latent.search._groups import kth_largest
from latent.search._jit import JIT

#: Items per tile of the codes' layout (n_tiles, m, TILE): 4 vector registers of float32 keys.
TILE = 64

#: From this many items the scan is split over numba's threads (below it one thread is as fast).
PARALLEL_MIN_ITEMS = 200_000


@njit(inline="always", **JIT)
def _tile_keys(tiles: np.ndarray, phi: np.ndarray, tile: int, keys: np.ndarray) -> None:
    """keys[:TILE] = the float32 keys phi . psi of the TILE items of ``tile``
    (tiles (n_tiles, m, TILE), phi (m,) float32, keys (TILE,) float32)."""
    m = tiles.shape[1]
    for i in range(TILE):
        keys[i] = np.float32(0.0)
    j = 0
    while j + 4 <= m:  # four feature rows per pass over the tile's keys: a quarter of their traffic
        p0, p1, p2, p3 = phi[j], phi[j + 1], phi[j + 2], phi[j + 3]
        r0, r1, r2, r3 = tiles[tile, j], tiles[tile, j + 1], tiles[tile, j + 2], tiles[tile, j + 3]
        for i in range(TILE):
            keys[i] += (p0 * np.float32(r0[i]) + p1 * np.float32(r1[i])) + (
                p2 * np.float32(r2[i]) + p3 * np.float32(r3[i])
            )
        j += 4
    while j < m:
        pj = phi[j]
        row = tiles[tile, j]
        for i in range(TILE):
            keys[i] += pj * np.float32(row[i])
        j += 1


@njit(**JIT)
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


@njit(**JIT)
def _scan_part(
    tiles: np.ndarray, phi: np.ndarray, first: int, stop: int, n_items: int, heap_maxima: np.ndarray,
    heap_tiles: np.ndarray,
) -> None:
    """Scan tiles first..stop-1, keeping the r largest tile maxima in the min-heap (heap_maxima (r,)
    float32, heap_tiles (r,) int64, filled with -inf and -1). Items from n_items on are excluded."""
    keys = np.empty(TILE, dtype=np.float32)
    threshold = heap_maxima[0]
    for tile in range(first, stop):
        _tile_keys(tiles, phi, tile, keys)
        if (tile + 1) * TILE > n_items:  # the last tile holds padding
            for i in range(n_items - tile * TILE, TILE):
                keys[i] = -np.inf
        above = 0
        for i in range(TILE):
            above += keys[i] > threshold
        if above:
            best = keys[0]
            for i in range(1, TILE):
                key = keys[i]
                best = best if best > key else key  # a select, which vectorises
            _heap_replace_min(heap_maxima, heap_tiles, best, tile)
            threshold = heap_maxima[0]


@njit(parallel=True, **JIT)
def _scan_parallel(
    tiles: np.ndarray, phi: np.ndarray, n_items: int, heap_maxima: np.ndarray, heap_tiles: np.ndarray
) -> None:
    """_scan_part over all tiles in P contiguous parts, one per thread, each with its own heap (P, r)."""
    n_parts = heap_maxima.shape[0]
    n_tiles = (n_items + TILE - 1) // TILE
    for part in prange(n_parts):
        first, stop = part * n_tiles // n_parts, (part + 1) * n_tiles // n_parts
        _scan_part(tiles, phi, first, stop, n_items, heap_maxima[part], heap_tiles[part])


@njit(**JIT)
def select(
    tiles: np.ndarray, phi: np.ndarray, n_items: int, heap_maxima: np.ndarray, heap_tiles: np.ndarray, n_keep: int
) -> tuple[np.ndarray, float]:
    """The candidate ids (M,) int64, ascending, and kappa from the parts' heaps (P, n_keep + 1) of
    :func:`scan`: kappa is at least the float32 key of every item left out and below every candidate's
    key (with ties at kappa, keys equal to it fill the candidates up to n_keep)."""
    kappa = np.float32(-np.inf)
    for part in range(heap_maxima.shape[0]):  # each heap's minimum bounds the tiles its part left out
        kappa = max(kappa, heap_maxima[part, 0])
    maxima = heap_maxima.ravel()
    if maxima.shape[0] > n_keep + 1:  # several parts: the (n_keep + 1)-th largest of their tiles
        kappa = max(kappa, kth_largest(maxima, n_keep + 1))
    open_tiles = np.sort(heap_tiles.ravel()[maxima > kappa])  # at most n_keep
    keys = np.empty(TILE, dtype=np.float32)
    ids = np.empty(n_keep * TILE, dtype=np.int64)
    count = 0
    for tile in open_tiles:
        _tile_keys(tiles, phi, tile, keys)
        base = tile * TILE
        for i in range(min(TILE, n_items - base)):
            if keys[i] > kappa:
                ids[count] = base + i
                count += 1
    if count >= n_keep:
        return ids[:count], float(kappa)
    # Keys tie at kappa (rare: equal keys in several tiles): add keys equal to kappa, in id order, up to
    # n_keep; every key left out is still at most kappa.
    ties = np.empty(n_keep - count, dtype=np.int64)
    n_ties = 0
    n_tiles = (n_items + TILE - 1) // TILE
    for tile in range(n_tiles):
        _tile_keys(tiles, phi, tile, keys)
        base = tile * TILE
        for i in range(min(TILE, n_items - base)):
            if keys[i] == kappa and n_ties < ties.shape[0]:
                ties[n_ties] = base + i
                n_ties += 1
        if n_ties == ties.shape[0]:
            break
    return np.sort(np.concatenate((ids[:count], ties[:n_ties]))), float(kappa)


def scan(tiles: np.ndarray, phi: np.ndarray, n_items: int, n_keep: int, n_parts: int) -> tuple[np.ndarray, np.ndarray]:
    """The parts' heaps of tile maxima, (n_parts, n_keep + 1) float32 and int64 (tile ids), for
    :func:`select`; needs n_keep < ceil(n_items / TILE). tiles (n_tiles, m, TILE) int16 or float32
    (:func:`to_tiles`), phi (m,) float32 of the same scale."""
    heap_maxima = np.full((n_parts, n_keep + 1), -np.inf, dtype=np.float32)
    heap_tiles = np.full((n_parts, n_keep + 1), -1, dtype=np.int64)
    if n_parts > 1:
        _scan_parallel(tiles, phi, n_items, heap_maxima, heap_tiles)
    else:
        _scan_part(tiles, phi, 0, (n_items + TILE - 1) // TILE, n_items, heap_maxima[0], heap_tiles[0])
    return heap_maxima, heap_tiles


_lock = threading.Lock()
_parallel_ok: bool | None = None  # None: not decided yet (the first parallel call decides, under the lock)


def n_parts(tiles: np.ndarray, n_items: int) -> int:
    """How many parts to split n_items into: numba's thread count from PARALLEL_MIN_ITEMS items, if the
    threading layer is thread-safe (the first call that would go parallel checks, and compiles)."""
    global _parallel_ok
    parts = min(get_num_threads(), n_items // (16 * TILE)) if n_items >= PARALLEL_MIN_ITEMS else 1
    if parts <= 1:
        return 1
    if _parallel_ok is None:
        with _lock:
            if _parallel_ok is None:
                scan(tiles, np.zeros(tiles.shape[1], np.float32), 1, 0, 2)
                _parallel_ok = threading_layer() in ("omp", "tbb")
    return parts if _parallel_ok else 1


def to_tiles(features: np.ndarray) -> np.ndarray:
    """The layout that the scan reads: features (m, N) as (ceil(N / TILE), m, TILE), C-contiguous, where
    tile b holds items b * TILE ... b * TILE + TILE - 1, row by row; the last tile is padded with 0."""
    m, n = features.shape
    n_tiles = -(-n // TILE)
    tiles = np.zeros((n_tiles, m, TILE), dtype=features.dtype)
    whole = n // TILE
    tiles[:whole] = features[:, : whole * TILE].reshape(m, whole, TILE).transpose(1, 0, 2)
    if whole < n_tiles:
        tiles[whole, :, : n - whole * TILE] = features[:, whole * TILE :]
    return tiles

