"""The fused tile scan (latent.search._tiles) and the int16 feature codes it reads, against brute force.

The scan computes float32 keys; the float64 reference differs from them by at most about m u sum_j
|phi_j psi_ij| (u = 2^-24), which the tolerance 1e-5 times the largest such sum covers for m <= 21."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latent.search import _tiles
from latent.search._features import _quantize


def top_keys(tiles: np.ndarray, phi: np.ndarray, n_items: int, n_keep: int) -> tuple[np.ndarray, float]:
    """What a query asks of the scan: candidate ids (ascending) and kappa, split over numba's threads from
    PARALLEL_MIN_ITEMS items; every item (kappa = -inf) when the scan would keep every tile."""
    if n_keep >= (n_items + _tiles.TILE - 1) // _tiles.TILE:
        return np.arange(n_items), -np.inf
    heap_maxima, heap_tiles = _tiles.scan(tiles, phi, n_items, n_keep, _tiles.n_parts(tiles, n_items))
    return _tiles.select(tiles, phi, n_items, heap_maxima, heap_tiles, n_keep)


def brute_force_check(features: np.ndarray, phi: np.ndarray, n_items: int, n_keep: int) -> None:
    """ids must hold the n_keep largest float64 keys (up to float32 rounding), kappa bound the rest."""
    ids, kappa = top_keys(_tiles.to_tiles(features), phi, n_items, n_keep)
    keys = phi.astype(np.float64) @ features[:, :n_items].astype(np.float64)  # (n_items,)
    tolerance = 1e-5 * (np.abs(phi).astype(np.float64) @ np.abs(features[:, :n_items]).astype(np.float64)).max()
    assert ids.dtype == np.int64 and ids.shape[0] >= min(n_keep, n_items)
    assert np.all(np.diff(ids) > 0), "ids must be unique and ascending"
    assert ids.min() >= 0 and ids.max() < n_items, "padding or unfilled slots leaked into the ids"
    left_out = np.setdiff1d(np.arange(n_items), ids)
    if left_out.size:
        assert keys[left_out].max() <= kappa + tolerance
        # The kept keys are the largest: none is below a left-out one (beyond rounding).
        assert keys[ids].min() >= keys[left_out].max() - 2 * tolerance
    # kappa is -inf (nothing left out) or at most every kept key: it separates kept from left out.
    assert kappa == -np.inf or keys[ids].min() >= kappa - tolerance


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
@pytest.mark.parametrize("m", [1, 3, 11, 21])
@pytest.mark.parametrize("n_items", [1, 7, 1023, 1024, 1025, 4097, 20_000, 200_001])
def test_top_keys_equal_brute_force(threads: int, dtype: type, m: int, n_items: int) -> None:
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("one core only")
    rng = np.random.default_rng(n_items * 31 + m)
    features = np.zeros((m, n_items + 5), dtype=dtype)  # padding columns must never be read
    if dtype == np.int16:
        features[:, :n_items] = rng.integers(-32767, 32768, size=(m, n_items))
        features[:, n_items:] = 32767
    else:
        features[:, :n_items] = rng.normal(size=(m, n_items))
        features[:, n_items:] = 1e30
    phi = rng.normal(size=m).astype(np.float32)
    numba.set_num_threads(threads)
    try:
        for n_keep in (1, 20, 44, n_items + 3):
            brute_force_check(features, phi, n_items, n_keep)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_top_keys_with_all_keys_tied() -> None:
    features = np.ones((3, 10_000), dtype=np.float32)
    ids, kappa = top_keys(_tiles.to_tiles(features), np.ones(3, dtype=np.float32), 10_000, 20)
    assert ids.shape == (20,) and np.unique(ids).shape == (20,)
    assert kappa == 3.0  # every left-out key equals the kept ones


@pytest.mark.parametrize("layout", ["descending", "ascending", "tied_top", "one_spike_first", "one_spike_last"])
@pytest.mark.parametrize("n_keep", [1, 44, 140, 141, 312])  # 9,000 tied keys fill 140.6 tiles of 64
def test_top_keys_when_the_top_is_packed_into_few_tiles(layout: str, n_keep: int) -> None:
    """Sorted keys pack the whole top into the first or last few tiles: every kept tile then holds many
    top keys, and kappa, the (n_keep + 1)-th tile maximum, lies far below the n_keep-th key. With ties at
    kappa, keys equal to it fill the candidates up to n_keep."""
    n_items = 20_000
    keys = np.arange(n_items, dtype=np.float32)
    if layout == "descending":
        keys = keys[::-1].copy()
    elif layout == "tied_top":
        keys[:9000] = 50_000.0  # 140 whole tiles and part of the next, tied at the top
    elif layout == "one_spike_first":
        keys[0] = 1e6
    elif layout == "one_spike_last":
        keys[-1] = 1e6
    features = np.zeros((3, n_items), dtype=np.float32)
    features[1] = keys  # only this row counts: phi is zero elsewhere
    phi = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    brute_force_check(features, phi, n_items, n_keep)
    ids, kappa = top_keys(_tiles.to_tiles(features), phi, n_items, n_keep)
    if layout == "tied_top" and n_keep <= 140:  # kappa is the tied key: exactly n_keep tied candidates
        assert kappa == 50_000.0 and ids.shape == (n_keep,) and np.all(keys[ids] == 50_000.0)
    else:
        top = np.argsort(-keys, kind="stable")[:n_keep]
        assert np.isin(top, ids).all()
        assert np.all(keys[ids] > kappa)


@pytest.mark.parametrize("m", [5, 21])
@pytest.mark.parametrize("threads", [1, 2])
def test_top_keys_finds_a_single_spike_anywhere(m: int, threads: int) -> None:
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("one core only")
    n_items = 230_000  # from 200,000 items the parts run in parallel
    rng = np.random.default_rng(3)
    features = rng.normal(size=(m, n_items)).astype(np.float32)
    phi = np.ones(m, dtype=np.float32)
    numba.set_num_threads(threads)
    try:
        for position in (0, 1023, 1024, 4095, 4096, 8191, 8192, 17_000, 114_687, 114_688, 229_375, n_items - 1):
            spiked = features.copy()
            spiked[:, position] = 100.0
            ids, kappa = top_keys(_tiles.to_tiles(spiked), phi, n_items, 1)
            assert position in ids.tolist() and ids.shape[0] <= _tiles.TILE  # one tile kept
            others = np.delete(phi @ spiked, position)
            assert others.max() <= kappa + 1e-4 and kappa < 100.0 * m  # a bound on the rest, below the spike
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    m=st.integers(1, 21),
    log_scale=st.floats(-6, 8),
    constant_column=st.booleans(),
)
def test_int16_codes_bound_the_key_error(seed: int, n: int, m: int, log_scale: float, constant_column: bool) -> None:
    """For any query, offset + the float32 sum over the codes is within the stated bound of the exact key,
    whatever the summation order; and the bound is tight enough to be useful (about 1e-4 of the terms)."""
    rng = np.random.default_rng(seed)
    psi = rng.normal(size=(n, m)) * 10.0**log_scale * rng.uniform(0.1, 10.0, size=m) + rng.normal(size=m)
    if constant_column:
        psi[:, 0] = 3.25
    quantized = _quantize(psi)
    rows = quantized.tiles.transpose(1, 0, 2).reshape(m, -1)  # back from the tile layout to (m, N_pad)
    codes = rows[:, :n]
    assert np.all(rows[:, n:] == 0)
    assert np.abs(codes.astype(np.int64)).max() <= 32767
    phi = rng.normal(size=m) * rng.uniform(0.01, 100.0)
    exact = psi @ phi  # float64 reference, (n,)
    offset = phi @ quantized.mid
    bound = np.abs(phi) @ quantized.error_weights
    scaled = (phi * quantized.scale).astype(np.float32)
    forward = scaled @ codes.astype(np.float32)  # BLAS order
    sequential = np.zeros(n, dtype=np.float32)  # one term at a time, reversed
    for j in reversed(range(m)):
        sequential = sequential + scaled[j] * codes[j].astype(np.float32)
    for approx in (forward, sequential):
        assert np.all(np.abs(exact - (offset + approx.astype(np.float64))) <= bound)
    magnitude = np.abs(phi) @ (np.abs(psi).max(axis=0) + np.abs(quantized.mid))
    assert bound <= 2e-4 * magnitude + 1e-300
