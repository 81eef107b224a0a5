"""Tests for latent/single_query.py: the compiled twin of the query feature map against the numpy one and
against the direct block norms, the scalar key threshold against the index's vectorised one, and the
status the kernels report for queries that float32 cannot hold (the index then answers by brute force)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import latent.single_query
from latent.rescore import KINDS
from latent.scores import SCORES
from latent.search import _FORMS, SearchIndex, _query_one, _SpreadConstants
from latent.single_query import key_threshold, query_map

NAMES = list(SCORES)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    d=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-3, 1e3),
)
def test_query_map_equals_the_numpy_feature_map_and_bounds_the_block_norms(
    name: str, d: int, seed: int, scale: float
) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=d) * scale
    constants = _SpreadConstants.of(np.exp(rng.uniform(np.log(1e-3), np.log(10.0), size=d)))
    phi, const, magnitude, norms = query_map(
        KINDS[name], y, constants.arrays[0], constants.arrays[1], constants.arrays[2], constants.scalars
    )
    expected_phi, expected_const, expected_magnitude, expected_norms = _query_one(name, y, constants)
    # The same formulas; only the order of a few float64 sums may differ (numpy's dot against a loop).
    np.testing.assert_allclose(phi, expected_phi, rtol=1e-13, atol=0.0)
    tolerance = 1e-13 * (abs(expected_magnitude) + abs(expected_const))
    assert abs(const - expected_const) <= tolerance and abs(magnitude - expected_magnitude) <= tolerance
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-13)
    # Independently of _query_one: each norm bounds the 2-norm of its feature block of phi, and the
    # magnitude bounds |const|.
    widths = [d if width == "d" else 1 for width in _FORMS[name].blocks]
    assert len(widths) == norms.shape[0]
    starts = np.cumsum([0, *widths[:-1]])
    for start, width, norm in zip(starts, widths, norms, strict=True):
        assert np.linalg.norm(phi[start : start + width]) <= norm * (1.0 + 1e-12)
    assert abs(const) <= magnitude * (1.0 + 1e-12)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    tau=st.floats(-1e6, 1e6),
    const=st.floats(-1e6, 1e6),
    magnitude=st.floats(0.0, 1e6),
    slack=st.floats(0.0, 1e-10),
)
def test_key_threshold_equals_the_index_threshold(
    name: str, tau: float, const: float, magnitude: float, slack: float
) -> None:
    form = _FORMS[name]
    tau = abs(tau) if form.squared else tau  # a distance is never negative
    expected = SearchIndex._key_threshold(form, tau, const, magnitude, slack)
    assert key_threshold(form.squared, form.higher_is_nearer, tau, const, magnitude, slack) == expected


@pytest.mark.parametrize("backend", ["blas", "fused"])
def test_a_query_that_float32_cannot_hold_is_reported_and_answered_by_brute_force(backend: str, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    mu, sigma = rng.normal(size=(3000, 3)), rng.uniform(0.1, 1.0, size=(3000, 3))
    # The kernel that decides, and how its result says "not safe".
    kernel_name, unsafe = {
        "blas": ("blas_query", lambda result: result[-1] == latent.single_query.UNSAFE),
        "fused": ("fused_start", lambda result: not result[-1]),
    }[backend]
    reports = []
    original = getattr(latent.single_query, kernel_name)

    def spy(*args):
        result = original(*args)
        reports.append(unsafe(result))
        return result

    monkeypatch.setattr(latent.single_query, kernel_name, spy)
    index = SearchIndex(backend=backend, block_size=32).fit(mu, sigma)
    z = np.array([3e16, -1e16, 2e16])  # squared features near 1e33: beyond float32's safe range
    names = ("likelihood", "mahalanobis", "kl", "jeffreys")  # features [y^2, y, 1]
    for name in names:
        ids, values = index.search(z, name, 5)
        expected = SCORES[name].fn(z, mu, sigma, index.default_spread_)
        nearness = -expected if SCORES[name].higher_is_nearer else expected
        order = np.lexsort((np.arange(mu.shape[0]), nearness))[:5]
        np.testing.assert_array_equal(ids, order)
        np.testing.assert_array_equal(values, expected[order])
    assert reports == [True] * len(names)


@settings(max_examples=500, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    tau=st.floats(0.0, 1e4),
    const=st.floats(-1e4, 1e4),
    below=st.floats(1e-9, 1e4),
)
def test_a_key_below_the_threshold_has_a_value_strictly_worse_than_tau(
    name: str, tau: float, const: float, below: float
) -> None:
    # The promise behind the certificate: value = sqrt(const - key), const + key or const - key.
    form = _FORMS[name]
    if form.squared:
        const = abs(const) + tau * tau  # some key reaches the value tau
    threshold = key_threshold(form.squared, form.higher_is_nearer, tau, const, abs(const), 1e-12)
    key = threshold - below * (1.0 + abs(threshold)) * 1e-6
    if form.squared:
        assert math.sqrt(const - key) > tau
    elif form.higher_is_nearer:
        assert const + key < tau
    else:
        assert const - key > tau
