"""Tests for latent/search/_query.py and _features.py: the compiled query maps against the item feature
maps and the score functions, the float64 rescoring against numpy's kernels, the key threshold, and the
compiler flags of every kernel that rescores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import latent.search._query
from latent.scores import SCORES, spread_constants
from latent.search import SearchIndex, _query
from latent.search._features import Catalog, build

NAMES = list(SCORES)


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64).view(np.int64)


def prepared(name: str, mu: np.ndarray, sigma: np.ndarray, spread: np.ndarray):
    """One score's prepared features at the spread (d,), as the index builds them."""
    index = SearchIndex(backend="blas").fit(mu, sigma)
    return index._prepared(SCORES[name], np.ascontiguousarray(spread, dtype=np.float64))


def random_catalog(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    mu = rng.normal(size=(n, d)) * np.exp(rng.uniform(-3, 3, size=d))
    sigma = np.exp(rng.uniform(np.log(1e-3), np.log(5.0), size=(n, d)))
    return mu, sigma


# ------------------------------------------------------------------------------------------------
# Feature maps: psi (numpy) and phi (compiled) reproduce the score


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(NAMES), d=st.integers(1, 12), seed=st.integers(0, 2**32 - 1), centred=st.booleans())
def test_feature_maps_reproduce_the_score_and_bound_their_norms(name: str, d: int, seed: int, centred: bool) -> None:
    rng = np.random.default_rng(seed)
    mu, sigma = rng.normal(size=(40, d)), np.exp(rng.uniform(np.log(0.05), np.log(2.0), size=(40, d)))
    z, s = rng.normal(size=d), np.exp(rng.uniform(np.log(0.05), np.log(2.0), size=d))
    score = SCORES[name]
    centre = mu.mean(axis=0) if centred else np.zeros(d)
    psi, magnitude = score.psi(mu - centre, sigma, np.log(sigma), s if score.spread_features else None)
    arrays, scalars = spread_constants(s)
    phi, const, const_magnitude, norms = _query_map(score.code, z - centre, arrays, scalars)
    assert psi.shape == (40, score.width(d)) and phi.shape == (score.width(d),)
    # psi . phi sums about 2d + 1 float64 products of size at most P = max |psi_ij phi_j| + |const|; the
    # map rounds each feature once or twice: the value error is a few (2d + 8) u P, far below 1e-10 P.
    scale = (np.abs(psi) * np.abs(phi)).sum(axis=1).max() + abs(const) + const_magnitude
    values = score.value_from_key(psi @ phi, const)
    expected = score.fn(z, mu, sigma, s)
    if score.squared:  # sqrt(x): an error e in x is at most sqrt(e) in the value
        np.testing.assert_allclose(values, expected, rtol=0, atol=math.sqrt(1e-10 * scale) + 1e-10 * scale)
    else:
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-10 * scale)
    # Each norm bounds the 2-norm of its segment of phi, and the magnitudes bound the constants' parts.
    widths = [d if segment == "d" else 1 for segment in score.segments]
    starts = np.cumsum([0, *widths[:-1]])
    assert norms.shape == (len(widths),)
    for start, width, norm in zip(starts, widths, norms, strict=True):
        assert np.linalg.norm(phi[start : start + width]) <= norm * (1.0 + 1e-12)
    assert abs(const) <= const_magnitude * (1.0 + 1e-12)
    assert np.all(np.abs(psi[:, -1]) <= magnitude * (1.0 + 1e-12))


def _query_map(code: int, y: np.ndarray, arrays: np.ndarray, scalars: np.ndarray):
    """latent.scores.query_of, reached through the compiled start() with a plan whose centre is 0."""
    d = y.shape[0]
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=(3, d)), np.ones((3, d))
    plan = prepared("euclidean", mu, sigma, np.ones(d)).plan._replace(
        code=code, center=np.zeros(d), spread_arrays=arrays, spread_scalars=scalars
    )
    phi, const, magnitude, norms, *_ = _query.start(np.ascontiguousarray(y), plan)
    return phi, const, magnitude, norms


def test_kl_reads_the_likelihood_features() -> None:
    rng = np.random.default_rng(2)
    index = SearchIndex().fit(rng.normal(size=(500, 3)), rng.uniform(0.1, 1.0, size=(500, 3)))
    kl = index._prepared(SCORES["kl"], np.float64(0.3))
    likelihood = index._prepared(SCORES["likelihood"], index.default_spread_)
    assert kl.groups is likelihood.groups and kl.plan.terms is not likelihood.plan.terms


# ------------------------------------------------------------------------------------------------
# The float64 rescoring


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, _query.MAX_DIM), log_range=st.floats(0, 60))
def test_pairwise_sum_agrees_with_numpy(seed: int, n: int, log_range: float) -> None:
    """Terms of mixed signs over up to 60 orders of magnitude. Where the product's own check finds the
    compiled rescoring equal to numpy's kernels (every CPU it has met), this is bit for bit; else within
    the bound of any summation order, n u sum |terms|."""
    rng = np.random.default_rng(seed)
    terms = rng.normal(size=n) * np.exp(rng.uniform(-log_range, log_range, size=n) * np.log(10.0) / 2)
    got, expected = _query.pairwise_sum(terms), np.add.reduce(terms)
    assert abs(got - expected) <= n * 2.0**-53 * np.abs(terms).sum()
    if _rescoring_matches_numpy():
        assert bits(got) == bits(expected)


def _rescoring_matches_numpy() -> bool:
    rng = np.random.default_rng(5)
    mu, sigma = random_catalog(rng, 300, 10)
    return all(prepared(name, mu, sigma, np.full(10, 0.4)).compiled_rescore for name in NAMES)


def test_pairwise_sum_rejects_more_terms_than_it_reproduces() -> None:
    with pytest.raises(ValueError, match="at most 128"):
        _query.pairwise_sum(np.ones(_query.MAX_DIM + 1))


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    name=st.sampled_from(NAMES),
    n=st.integers(2, 60),
    d=st.sampled_from([1, 2, 7, 8, 9, 10, 17, 64, 128]),
)
def test_rescore_rows_equals_the_numpy_kernel_where_the_check_passes(seed: int, name: str, n: int, d: int) -> None:
    # The product's promise: once matches_numpy has found the compiled rescoring equal to numpy's kernel
    # on a catalog, it is equal on every item of it, so search values equal fn's exactly. Without that
    # check passing, the product rescores with numpy (tests/test_search.py forces it); here the values
    # then agree to float64 rounding of d terms.
    rng = np.random.default_rng(seed)
    mu, sigma = random_catalog(rng, n, d)
    spread = rng.uniform(1e-3, 3.0, size=d)
    ready = prepared(name, mu, sigma, spread)
    ids = rng.permutation(n)[: max(1, n // 2)].astype(np.int64)  # any subset, in any order
    z = rng.normal(size=d) * 2.0
    out = np.empty(ids.shape[0])
    _query.rescore_rows(ready.plan, ids, z, out)
    expected = SCORES[name].fn(z, mu[ids], sigma[ids], spread)
    if ready.compiled_rescore:
        np.testing.assert_array_equal(bits(out), bits(expected))
    else:
        np.testing.assert_allclose(out, expected, rtol=4 * d * 2.0**-53, atol=1e-300)


def test_a_kernel_that_sums_differently_is_detected(monkeypatch) -> None:
    """If numpy ever summed in another order, matches_numpy must notice (and the index fall back)."""

    def reversed_euclidean(z, mu, sigma, s, terms=None):
        squares = (z - mu) * (z - mu)
        total = squares[..., -1]
        for j in range(squares.shape[-1] - 2, -1, -1):
            total = total + squares[..., j]
        return np.sqrt(total)

    rng = np.random.default_rng(3)
    mu = rng.normal(size=(2000, 10)) * np.exp(rng.uniform(-8, 8, size=10))
    sigma = np.full((2000, 10), 0.5)
    ready = prepared("euclidean", mu, sigma, np.full(10, 0.5))
    assert _query.matches_numpy("euclidean", ready.plan) == ready.compiled_rescore
    monkeypatch.setattr(latent.search._query, "KERNELS", {"euclidean": reversed_euclidean})
    assert not _query.matches_numpy("euclidean", ready.plan)


@pytest.mark.parametrize("name", NAMES)
def test_nearest_orders_ties_by_the_lower_id(name: str) -> None:
    rng = np.random.default_rng(1)
    d = 3
    mu, sigma = random_catalog(rng, 4, d)
    mu, sigma = np.concatenate([mu, mu, mu[:2]]), np.concatenate([sigma, sigma, sigma[:2]])  # i, i+4, i+8 equal
    ready = prepared(name, mu, sigma, np.full(d, 0.4))
    candidates = rng.permutation(10).astype(np.int64)  # unordered
    z = rng.normal(size=d)
    ids, values = _query.nearest(ready.plan, candidates, z, 7)
    all_values = SCORES[name].fn(z, mu, sigma, 0.4)
    key = -all_values if SCORES[name].higher_is_nearer else all_values
    # Copies have equal values (the same arithmetic on equal inputs), so the order is by value, then id.
    np.testing.assert_array_equal(ids, np.lexsort((np.arange(10), key))[:7])
    np.testing.assert_allclose(values, all_values[ids], rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------------------------------------
# The certificate's threshold


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
    score = SCORES[name]
    if score.squared:
        const = abs(const) + tau * tau  # some key reaches the value tau
    threshold = _query.key_threshold(score.squared, score.higher_is_nearer, tau, const, abs(const), 1e-12)
    key = threshold - below * (1.0 + abs(threshold)) * 1e-6
    if score.squared:
        assert math.sqrt(const - key) > tau
    elif score.higher_is_nearer:
        assert const + key < tau
    else:
        assert const - key > tau


def test_no_kernel_that_rescores_compiles_with_value_changing_fast_math() -> None:
    """Flags such as "contract" would fuse multiply-adds in the inlined rescoring, 1 ulp off numpy;
    only flags that cannot change a finite, nonzero result are allowed."""
    for kernel in (_query.blas_query, _query.fused_finish, _query.rescore_rows, _query.nearest, _query.start):
        flags = kernel.targetoptions.get("fastmath", set())
        assert flags is not True and set(flags) <= {"nnan", "nsz"}, (kernel, flags)


def test_build_keeps_features_none_where_float32_cannot_hold_them() -> None:
    rng = np.random.default_rng(6)
    mu, sigma = rng.normal(size=(50, 2)), rng.uniform(0.5, 1.0, size=(50, 2))
    sigma[3, 0] = 1e-25  # 1/sigma^2 = 1e50
    catalog = Catalog(centered_mu=mu, sigma=sigma, log_sigma=np.log(sigma),
                      mu_sigma=np.stack([mu, sigma], axis=1), center=np.zeros(2), group_size=16, fused=True)
    ready = build(SCORES["mahalanobis"], np.ones(2), catalog, None)
    assert ready.groups is None and ready.codes is None and not ready.compiled_rescore
