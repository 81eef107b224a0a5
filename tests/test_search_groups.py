"""Tests for latent/search/_groups.py against brute-force references: numpy sorts and flatnonzero.

Comparisons and maxima only (no arithmetic), so the results are exact and compared exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from latent.search._groups import _column_maxima_16, at_least, kth_largest, top_groups


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.integers(-3, 3) | st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=80
    ),
    data=st.data(),
)
def test_kth_largest_equals_a_full_sort(values: list, data) -> None:
    array = np.array(values, dtype=np.float32)
    rank = data.draw(st.integers(1, array.shape[0]))
    assert kth_largest(array, rank) == np.sort(array)[-rank]


def reference(keys: np.ndarray, group_rows: int, kept: int) -> tuple[np.ndarray, float]:
    """Group g holds the items i with i mod G = g; kappa is the (kept + 1)-th largest group maximum."""
    n_groups = keys.shape[1] // group_rows
    maxima = keys.reshape(-1, n_groups).max(axis=0)
    kappa = float(np.sort(maxima)[-(kept + 1)])
    return np.flatnonzero(keys.reshape(-1) > kappa), kappa


@st.composite
def grouped_keys(draw) -> tuple[np.ndarray, int, int]:
    n_rows = draw(st.sampled_from([1, 2, 16]))
    group_rows = draw(st.sampled_from([1, 2, 8]))
    n_groups = draw(st.integers(2, 40))
    kept = draw(st.integers(0, n_groups - 1))
    shape = (n_rows, group_rows * n_groups)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):  # few distinct values: ties everywhere, at kappa too
        keys = rng.integers(-2, 3, size=shape).astype(np.float32)
    else:
        keys = (rng.normal(size=shape) * 10.0 ** rng.uniform(-30, 30)).astype(np.float32)
    return keys, group_rows, kept


@settings(max_examples=300, deadline=None)
@given(case=grouped_keys())
def test_top_groups_returns_every_key_above_the_group_bound(case) -> None:
    keys, group_rows, kept = case
    ids, kappa = top_groups(keys, group_rows, kept)
    expected_ids, expected_kappa = reference(keys, group_rows, kept)
    assert kappa == expected_kappa
    np.testing.assert_array_equal(ids, expected_ids)  # ascending, as the reference
    assert ids.dtype == np.int64


def test_top_groups_on_the_search_index_layout() -> None:
    # 70,016 keys as the index lays them out for 70,000 items (group size 128: 16 rows, 8 per group).
    rng = np.random.default_rng(0)
    keys = rng.normal(size=70_016).astype(np.float32)
    keys[-16:] = -1e38  # padding
    keys[[5, 40_000, 70_000 - 1]] = 9.0  # spikes far apart land in different groups
    ids, kappa = top_groups(keys.reshape(16, -1), 8, 28)
    expected_ids, expected_kappa = reference(keys.reshape(16, -1), 8, 28)
    assert kappa == expected_kappa and np.array_equal(ids, expected_ids)
    assert {5, 40_000, 69_999} <= set(ids.tolist()) and 29 <= ids.shape[0] < 200


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    specials=st.lists(st.sampled_from([-np.inf, np.inf, 0.0, -0.0, 3.4e38, -3.4e38, 1e-45]), max_size=6),
)
def test_the_unrolled_maxima_of_16_rows_equal_numpy(width: int, seed: int, specials: list) -> None:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(16, width)).astype(np.float32)
    for value in specials:  # extreme values at random places
        rows[rng.integers(16), rng.integers(width)] = value
    np.testing.assert_array_equal(_column_maxima_16(rows), rows.max(axis=0))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(-3, 3), min_size=1, max_size=60), data=st.data())
def test_at_least_returns_every_key_reaching_kappa(values: list, data) -> None:
    keys = np.array(values, dtype=np.float32)
    n_items = data.draw(st.integers(1, keys.shape[0]))
    kappa = float(data.draw(st.integers(-3, 3)))
    np.testing.assert_array_equal(at_least(keys, kappa, n_items), np.flatnonzero(keys[:n_items] >= kappa))
