"""The compiled rescoring (latent.rescore) against numpy's kernels, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import latent.scores
import latent.search
from latent import rescore, single_query
from latent.scores import KERNELS, SCORES
from latent.search import SearchIndex, _rescore_table

NAMES = list(SCORES)


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64).view(np.int64)


def random_table(name: str, rng: np.random.Generator, n: int, d: int, spread) -> np.ndarray:
    mu = rng.normal(size=(n, d)) * np.exp(rng.uniform(-3, 3, size=d))
    sigma = np.exp(rng.uniform(np.log(1e-3), np.log(5.0), size=(n, d)))
    return _rescore_table(name, np.stack([mu, sigma], axis=1), spread)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, rescore.MAX_DIM), log_range=st.floats(0, 60))
def test_pairwise_sum_rounds_as_numpy(seed: int, n: int, log_range: float) -> None:
    """Terms of mixed signs over up to 60 orders of magnitude: any other summation order would differ."""
    rng = np.random.default_rng(seed)
    terms = rng.normal(size=n) * np.exp(rng.uniform(-log_range, log_range, size=n) * np.log(10.0) / 2)
    assert bits(rescore.pairwise_sum(terms)) == bits(np.add.reduce(terms))


def test_pairwise_sum_rejects_more_terms_than_it_reproduces() -> None:
    with pytest.raises(ValueError, match="at most 128"):
        rescore.pairwise_sum(np.ones(rescore.MAX_DIM + 1))


def test_kinds_and_term_counts_cover_every_score() -> None:
    assert set(rescore.KINDS) == set(SCORES) == set(rescore.N_TERMS)
    # latent.search keeps copies, so that importing it does not import numba.
    assert latent.search._KINDS == rescore.KINDS and latent.search._COMPILED_MAX_DIM == rescore.MAX_DIM
    rng = np.random.default_rng(0)
    for name in NAMES:  # the table layout the kernels read: mu, sigma and the kernel's own terms
        assert random_table(name, rng, 3, 2, np.float64(0.5)).shape == (3, 2 + rescore.N_TERMS[name], 2)


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    name=st.sampled_from(NAMES),
    n=st.integers(1, 60),
    d=st.sampled_from([1, 2, 7, 8, 9, 10, 17, 64, 128]),
    scalar_spread=st.booleans(),
)
def test_rescore_rows_equals_numpy_kernels_bit_for_bit(
    seed: int, name: str, n: int, d: int, scalar_spread: bool
) -> None:
    rng = np.random.default_rng(seed)
    spread = np.float64(rng.uniform(1e-3, 3.0)) if scalar_spread else rng.uniform(1e-3, 3.0, size=d)
    table = random_table(name, rng, n, d, spread)
    ids = rng.permutation(n)[: max(1, n // 2)].astype(np.int64)  # any subset, in any order
    z = rng.normal(size=d) * 2.0
    spread_d = np.ascontiguousarray(np.broadcast_to(spread, (d,)))
    out = np.empty(ids.shape[0])
    rescore.rescore_rows(table, ids, z, spread_d, rescore.KINDS[name], out)
    rows = table[ids]
    t = rows.shape[1] - 2
    terms = None if t == 0 else rows[:, 2] if t == 1 else tuple(rows[:, 2 + i] for i in range(t))
    expected = KERNELS[name](z, rows[:, 0], rows[:, 1], spread, terms)
    np.testing.assert_array_equal(bits(out), bits(expected))
    # ... and so equal to the public score function on those items.
    np.testing.assert_array_equal(bits(out), bits(SCORES[name].fn(z, rows[:, 0], rows[:, 1], spread)))


@pytest.mark.parametrize("name", NAMES)
def test_nearest_orders_ties_by_the_lower_id(name: str) -> None:
    rng = np.random.default_rng(1)
    d = 3
    base = random_table(name, rng, 4, d, np.float64(0.4))
    table = np.concatenate([base, base, base[:2]])  # items i, i + 4 and i + 8 are identical
    candidates = rng.permutation(10).astype(np.int64)  # unordered, as FAISS returns them
    z = rng.normal(size=d)
    ids, values = rescore.nearest(table, candidates, z, np.full(d, 0.4), rescore.KINDS[name],
                                  SCORES[name].higher_is_nearer, 7)
    nearness = -values if SCORES[name].higher_is_nearer else values
    assert np.all(np.diff(nearness) >= 0), "nearest first"
    all_values = KERNELS[name](z, table[:, 0], table[:, 1], np.float64(0.4))
    key = -all_values if SCORES[name].higher_is_nearer else all_values
    expected = np.lexsort((np.arange(10), key))[:7]  # by value, then by the lower id
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(bits(values), bits(all_values[expected]))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spread", [np.float64(0.2), np.linspace(0.01, 1.0, 10)])
def test_matches_numpy_on_a_catalog(name: str, spread: np.ndarray) -> None:
    table = random_table(name, np.random.default_rng(2), 500, 10, spread)
    assert rescore.matches_numpy(name, table, spread)


def test_a_kernel_that_sums_differently_is_detected_and_the_index_falls_back(monkeypatch) -> None:
    """If numpy ever summed in another order, the index must notice and rescore with numpy instead."""

    def reversed_euclidean(z, mu, sigma, s, terms=None):
        diff = z - mu
        squares = diff * diff
        total = squares[..., -1]
        for j in range(squares.shape[-1] - 2, -1, -1):
            total = total + squares[..., j]
        return np.sqrt(total)

    rng = np.random.default_rng(3)
    mu = rng.normal(size=(2000, 10)) * np.exp(rng.uniform(-8, 8, size=10))
    sigma = np.full((2000, 10), 0.5)
    spread = np.full(10, 0.5)
    table = _rescore_table("euclidean", np.stack([mu, sigma], axis=1), spread)
    assert rescore.matches_numpy("euclidean", table, spread)
    monkeypatch.setitem(latent.scores.KERNELS, "euclidean", reversed_euclidean)
    assert not rescore.matches_numpy("euclidean", table, spread)
    index = SearchIndex(backend="blas").fit(mu, sigma)
    ids, values = index.search(mu[5] + 1e-3, "euclidean", 10)
    assert not index.features_["euclidean"].compiled_rescore
    np.testing.assert_array_equal(bits(values), bits(reversed_euclidean(mu[5] + 1e-3, mu[ids], sigma[ids], spread)))


def test_the_index_uses_the_compiled_rescoring_where_it_matches() -> None:
    rng = np.random.default_rng(4)
    mu, sigma = rng.normal(size=(3000, 10)), np.exp(rng.uniform(-3, 0, size=(3000, 10)))
    index = SearchIndex(backend="fused").fit(mu, sigma)
    for name in NAMES:
        index.search(np.zeros(10), name, 5)
        assert index.features_[name].compiled_rescore, name


def test_no_kernel_that_calls_the_rescoring_compiles_with_value_changing_fast_math() -> None:
    """numba compiles (and caches) a callee with the fast-math flags of its first jitted caller: a caller
    with "contract" once made the rescoring use fused multiply-adds, 1 ulp off numpy (see latent.rescore).
    Only flags that cannot change a finite, nonzero result are allowed on the callers."""
    for caller in (single_query.blas_query, single_query.fused_finish, single_query._rescore_and_certify):
        flags = caller.targetoptions.get("fastmath", set())
        assert flags is not True and set(flags) <= {"nnan", "nsz"}, (caller, flags)
