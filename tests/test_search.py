"""Tests for latent.search (the SearchIndex): exactness against float64 brute force, the numpy-rescoring
fallback, the spread cache and prepare(), threads, and bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import latent.search._query
from latent.scores import SCORES
from latent.search import BACKENDS, FUSED_MIN_ITEMS, NotFittedError, SearchIndex
from latent.search._index import SPREAD_CACHE_SIZE

NAMES = list(SCORES)
SPREAD_NAMES = [name for name, score in SCORES.items() if score.needs_spread]
BACKEND_PARAMS = ["fused", "blas"]


def catalog(seed: int, n: int, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic posteriors: active dimensions with varied sigma and a collapsed one (mu ~ 0, sigma ~ 1)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, d))
    sigma = np.exp(rng.uniform(np.log(0.02), np.log(1.0), size=(n, d)))
    mu[:, -1] *= 0.05
    sigma[:, -1] = rng.uniform(0.9, 1.0, size=n)
    return mu, sigma


def brute_force(
    name: str, z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The float64 brute-force ranking: every score from SCORES[name].fn, nearest first, ties by index."""
    values = SCORES[name].fn(z, mu, sigma, s)
    nearness = -values if SCORES[name].higher_is_nearer else values
    order = np.lexsort((np.arange(len(values)), nearness))[:k]
    return order, values[order]


def assert_exact(index: SearchIndex, name: str, z: np.ndarray, mu, sigma, s, k: int) -> None:
    """The index's ids equal brute force's exactly (the certificate guarantees the exact float64 top k,
    ties by the lower index), and its values agree to float64 rounding: the same formula, summed over
    d <= 10 terms, differs between summation orders by at most about 2 d u sum|terms| <= 1e-14 of the
    terms' scale, far inside rtol = atol = 1e-12."""
    ids, values = index.search(z, name, k=k, s=s)
    expected_ids, expected_values = brute_force(name, z, mu, sigma, s, k)
    np.testing.assert_array_equal(ids, expected_ids, err_msg=f"{name}, k={k}")
    np.testing.assert_allclose(values, expected_values, rtol=1e-12, atol=1e-12, err_msg=f"{name}, k={k}")
    assert ids.dtype == np.int64 and values.dtype == np.float64


# ------------------------------------------------------------------------------------------------
# Exactness


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("name", NAMES)
def test_search_equals_float64_brute_force(backend: str, name: str) -> None:
    mu, sigma = catalog(3, 3000)
    index = SearchIndex(backend=backend, group_size=16).fit(mu, sigma)  # groups, ragged tail (3000 % 16 = 8)
    rng = np.random.default_rng(4)
    for z in rng.normal(size=(6, 4)):
        for s in (None, 0.3):
            for k in (1, 7, 40):
                assert_exact(index, name, z, mu, sigma, s, k)


@pytest.mark.parametrize("name", NAMES)
def test_k_edge_cases(name: str) -> None:
    mu, sigma = catalog(5, 30)
    index = SearchIndex().fit(mu, sigma)
    z = np.zeros(4)
    for k in (0, 29, 30, 31, 1000):
        assert_exact(index, name, z, mu, sigma, None, k)
    ids, values = index.search(z, name, k=0)
    assert ids.shape == (0,) and values.shape == (0,)
    assert index.search(z, name, k=1000)[0].shape == (30,)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("name", NAMES)
def test_exact_ties_are_broken_by_the_lower_index(backend: str, name: str) -> None:
    # 100 copies of the same posterior (more than the over-fetch) at scattered indices, then noise.
    mu, sigma = catalog(6, 2000)
    rng = np.random.default_rng(7)
    copies = rng.choice(2000, size=100, replace=False)
    mu[copies], sigma[copies] = [0.1, -0.2, 0.3, 0.0], [0.01, 0.01, 0.01, 0.9]
    z = np.array([0.1, -0.2, 0.3, 0.0])
    for group_size in (8, 32):  # one-level and two-level selection of group maxima
        index = SearchIndex(backend=backend, group_size=group_size).fit(mu, sigma)
        for k in (5, 60, 150):
            assert_exact(index, name, z, mu, sigma, None, k)
    ids, _ = index.search(z, name, k=60)
    if name in ("likelihood", "euclidean", "mahalanobis"):  # the copies sit on z with the smallest sigma
        np.testing.assert_array_equal(ids, np.sort(copies)[:60])


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("name", NAMES)
def test_near_ties_below_float32_resolution_come_out_right(backend: str, name: str, monkeypatch) -> None:
    # Items differ from each other by about 1e-11, far below float32 resolution, so the float32 keys
    # cannot order them: the certified widening must rescore all of them in float64.
    mu, sigma = catalog(8, 4000)
    rng = np.random.default_rng(9)
    close = rng.choice(4000, size=300, replace=False)
    mu[close] = np.array([0.4, 0.1, -0.3, 0.0]) + rng.normal(scale=1e-11, size=(300, 4))
    sigma[close] = np.array([0.3, 0.2, 0.4, 0.97]) * (1.0 + rng.normal(scale=1e-11, size=(300, 4)))
    calls = []
    original = SearchIndex._widen

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SearchIndex, "_widen", spy)
    index = SearchIndex(backend=backend, group_size=32).fit(mu, sigma)
    z = np.array([0.41, 0.1, -0.3, 0.0])
    for k in (3, 25):
        ids, values = index.search(z, name, k=k)
        expected_ids, expected_values = brute_force(name, z, mu, sigma, None, k)
        # The 300 items' values differ by about 1e-11 relative, 1e5 ulps: the order is exact in float64.
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(values, expected_values, rtol=1e-13, atol=1e-13)
    assert calls, "the near-tie case never exercised the widening path"


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    d=st.integers(1, 4),
    k=st.integers(0, 40),
    name=st.sampled_from(NAMES),
    group_size=st.sampled_from([1, 2, 5, 16, 64, None]),
    duplicates=st.booleans(),
    scalar_spread=st.booleans(),
    backend=st.sampled_from(BACKEND_PARAMS),
)
def test_search_equals_brute_force_on_random_catalogs(
    seed: int, n: int, d: int, k: int, name: str, group_size: int | None, duplicates: bool, scalar_spread: bool,
    backend: str,
) -> None:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, d)) * rng.uniform(0.01, 10.0)
    sigma = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), size=(n, d)))
    if duplicates and n > 3:
        mu[1::3], sigma[1::3] = mu[0], sigma[0]
    z = mu[rng.integers(n)] + rng.normal(size=d) * 0.1 if rng.random() < 0.5 else rng.normal(size=d)
    s = float(rng.uniform(0.01, 3.0)) if scalar_spread else rng.uniform(0.01, 3.0, size=d)
    index = SearchIndex(backend=backend, group_size=group_size).fit(mu, sigma)
    assert_exact(index, name, z, mu, sigma, s, k)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_the_numpy_rescoring_fallback_is_used_and_exact(backend: str, monkeypatch) -> None:
    # Where the compiled rescoring does not reproduce numpy's kernel (another numpy, another CPU), the
    # index must notice (matches_numpy) and rescore with numpy: force that and check the results.
    monkeypatch.setattr(latent.search._query, "matches_numpy", lambda name, plan: False)
    used = []
    original = SearchIndex._search_numpy_rescoring

    def spy(self, *args, **kwargs):
        used.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SearchIndex, "_search_numpy_rescoring", spy)
    mu, sigma = catalog(23, 5000)
    index = SearchIndex(backend=backend, group_size=32).fit(mu, sigma)
    rng = np.random.default_rng(24)
    for name in NAMES:
        for z in rng.normal(size=(3, 4)):
            assert_exact(index, name, z, mu, sigma, None, 12)
            assert_exact(index, name, z, mu, sigma, 0.4, 12)
    assert len(used) == 2 * 3 * len(NAMES)
    assert not any(prepared.compiled_rescore for prepared in index._pinned_.values())


def test_the_compiled_rescoring_is_used_where_it_matches() -> None:
    rng = np.random.default_rng(4)
    mu, sigma = rng.normal(size=(3000, 10)), np.exp(rng.uniform(-3, 0, size=(3000, 10)))
    index = SearchIndex().fit(mu, sigma).prepare([None, 0.5])
    compiled = {name: prepared.compiled_rescore for (name, _), prepared in index._pinned_.items()}
    # numpy's pairwise sum is what the compiled rescoring reproduces; if it ever changes, the index
    # falls back (test above) and this test says so.
    assert all(compiled.values()), compiled


def test_auto_backend_picks_the_fused_scan_for_large_catalogs() -> None:
    small, large = (np.zeros((n, 1)) for n in (FUSED_MIN_ITEMS - 1, FUSED_MIN_ITEMS))
    assert SearchIndex().fit(small, small + 1.0).backend_ == "blas"
    assert SearchIndex().fit(large, large + 1.0).backend_ == "fused"
    assert SearchIndex(backend="fused").fit(small[:5], small[:5] + 1.0).backend_ == "fused"
    assert BACKENDS == ("auto", "fused", "blas")


@pytest.mark.parametrize("name", NAMES)
def test_float32_overflow_falls_back_to_exact_float64(name: str) -> None:
    mu, sigma = catalog(10, 500)
    sigma[7] = 1e-25  # 1/sigma^2 = 1e50 does not fit in float32
    index = SearchIndex(group_size=4).fit(mu, sigma)
    z = np.zeros(4)
    assert_exact(index, name, z, mu, sigma, None, 5)
    huge = np.full(4, 1e20)  # z^2 = 1e40 overflows float32 in the query features
    assert_exact(index, name, huge, mu, sigma, None, 5)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_a_query_that_float32_cannot_hold_is_answered_by_brute_force(backend: str, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    mu, sigma = rng.normal(size=(3000, 3)), rng.uniform(0.1, 1.0, size=(3000, 3))
    calls = []
    original = SearchIndex._brute_force

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SearchIndex, "_brute_force", spy)
    index = SearchIndex(backend=backend, group_size=32).fit(mu, sigma)
    z = np.array([3e16, -1e16, 2e16])  # squared features near 1e33: beyond float32's safe range
    names = ("likelihood", "mahalanobis", "kl", "jeffreys")  # features [y^2, y, 1]
    for name in names:
        assert_exact(index, name, z, mu, sigma, None, 5)
    assert len(calls) == len(names)


@pytest.mark.parametrize("name", NAMES)
def test_scores_all_equals_the_score_function(name: str) -> None:
    # The same numpy kernel on the same arrays: equal.
    mu, sigma = catalog(13, 400)
    index = SearchIndex().fit(mu, sigma)
    z = np.array([0.2, -1.0, 0.5, 0.0])
    np.testing.assert_array_equal(index.scores_all(z, name), SCORES[name].fn(z, mu, sigma, None))
    np.testing.assert_array_equal(index.scores_all(z, name, s=0.7), SCORES[name].fn(z, mu, sigma, 0.7))


def test_backends_agree_on_the_ranking() -> None:
    mu, sigma = catalog(14, 3000)
    fused = SearchIndex(backend="fused").fit(mu, sigma)
    blas = SearchIndex(backend="blas").fit(mu, sigma)
    z = np.array([0.3, 0.3, -0.2, 0.0])
    for name in NAMES:
        (fused_ids, fused_values), (blas_ids, blas_values) = fused.search(z, name, 15), blas.search(z, name, 15)
        np.testing.assert_array_equal(fused_ids, blas_ids)
        np.testing.assert_allclose(fused_values, blas_values, rtol=1e-12, atol=1e-12)


def test_concurrent_searches_agree_with_sequential_ones() -> None:
    mu, sigma = catalog(15, 3000)
    index = SearchIndex().fit(mu, sigma)
    rng = np.random.default_rng(16)
    spreads = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6]  # more than the cache keeps
    jobs = [(rng.normal(size=4), name, float(rng.choice(spreads))) for name in NAMES for _ in range(6)]
    expected = [index.search(z, name, 10, s) for z, name, s in jobs]
    fresh = SearchIndex().fit(mu, sigma)  # so that threads race to fill the cache
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda job: fresh.search(job[0], job[1], 10, job[2]), jobs))
    for (ids, values), (expected_ids, expected_values) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(values, expected_values, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Features on first use, the spread cache, prepare()


def test_features_are_built_on_first_use_once_even_from_many_threads() -> None:
    mu, sigma = catalog(22, 3000)
    index = SearchIndex().fit(mu, sigma)
    assert index._pinned_ == {} and not index._recent_  # fit only validates and copies
    z = np.zeros(4)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: index.search(z, "kl", 5), range(16)))
    assert {name for name, _ in index._pinned_} == {"likelihood", "kl"}  # kl built likelihood's features
    kl = next(p for (name, _), p in index._pinned_.items() if name == "kl")
    likelihood = next(p for (name, _), p in index._pinned_.items() if name == "likelihood")
    assert kl.groups.features is likelihood.groups.features  # shared, not copied
    assert all(np.array_equal(ids, results[0][0]) for ids, _ in results)


def test_spread_features_are_cached_and_the_cache_stays_bounded() -> None:
    mu, sigma = catalog(30, 1500)
    index = SearchIndex(group_size=16).fit(mu, sigma)
    rng = np.random.default_rng(31)
    z = rng.normal(size=4)
    for s in (0.2, 0.5, 0.2, 1.3, 0.7, 0.9, np.array([0.1, 0.2, 0.3, 0.9])):
        for name in SPREAD_NAMES:
            assert_exact(index, name, z, mu, sigma, s, 9)
    assert len(index._recent_) <= SPREAD_CACHE_SIZE
    for name in SPREAD_NAMES:  # the default spread's features are never evicted
        assert_exact(index, name, z, mu, sigma, None, 9)


def test_prepare_builds_every_offered_spread_once_with_progress(monkeypatch) -> None:
    mu, sigma = catalog(32, 2000)
    spreads = (None, 0.001, 0.01, 0.1, 0.3, 1.0, 2.0)
    calls = []
    index = SearchIndex().fit(mu, sigma).prepare(spreads, progress=lambda done, total, message: calls.append(
        (done, total, message)))
    free = [n for n, score in SCORES.items() if not score.needs_spread]
    total = len(free) + len(SPREAD_NAMES) * len(spreads)
    assert [c[0] for c in calls] == list(range(total + 1)) and {c[1] for c in calls} == {total}
    assert all(isinstance(c[2], str) and c[2] for c in calls)
    assert len(index._pinned_) == total
    # Searching at any prepared spread builds nothing more.
    import latent.search._index

    def no_build(*args, **kwargs):
        raise AssertionError("a prepared spread was built again")

    monkeypatch.setattr(latent.search._index, "build", no_build)
    z = np.array([0.1, 0.2, -0.3, 0.0])
    for s in spreads:
        for name in NAMES:
            assert_exact(index, name, z, mu, sigma, s, 7)


def test_is_prepared_is_true_exactly_when_no_query_at_that_spread_builds(monkeypatch) -> None:
    import latent.search._index

    mu, sigma = catalog(34, 2000)
    index = SearchIndex().fit(mu, sigma)
    builds = []
    real_build = latent.search._index.build

    def counting_build(*args, **kwargs):
        builds.append(args[0].name)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(latent.search._index, "build", counting_build)
    z = np.array([0.2, -0.1, 0.4, 0.0])

    def builds_when_searched(s) -> bool:
        """The reference: whether searching every score at s builds any features."""
        before = len(builds)
        for name in NAMES:
            index.search(z, name, 5, s)
        return len(builds) > before

    assert not index.is_prepared() and not index.is_prepared(0.3)  # fit builds nothing
    index.prepare([0.3])
    assert not builds_when_searched(0.3)
    assert index.is_prepared(0.3) and index.is_prepared(np.full(4, 0.3))  # a scalar and its (d,) form
    # prepare([0.3]) built the spread-free scores, not the spread scores at the default spread.
    assert not index.is_prepared() and builds_when_searched(None)
    assert index.is_prepared() and index.is_prepared(index.default_spread_.copy())  # equal, another array
    index.prepare()
    assert index.is_prepared() and not builds_when_searched(None)
    assert not index.is_prepared(0.7) and builds_when_searched(0.7)
    assert index.is_prepared(0.7) and not builds_when_searched(0.7)  # built on demand, kept in the cache
    builds_before = len(builds)
    for s in (None, 0.3, 0.7, 1.5):
        index.is_prepared(s)
    assert len(builds) == builds_before  # asking builds nothing


def test_is_prepared_after_fit_and_prepare_for_every_backend() -> None:
    mu, sigma = catalog(35, 5000)
    for backend in BACKEND_PARAMS:
        index = SearchIndex(backend=backend).fit(mu, sigma)
        assert not index.is_prepared()
        assert index.prepare().is_prepared() and not index.is_prepared(0.5)


# ------------------------------------------------------------------------------------------------
# Estimator contract, copies, bad input


def test_estimator_contract() -> None:
    index = SearchIndex(backend="blas", group_size=32)
    assert vars(index) == {"backend": "blas", "group_size": 32}  # __init__ stores parameters only
    mu, sigma = catalog(17, 50)
    assert index.fit(mu, sigma) is index
    fitted = [name for name in vars(index) if name not in ("backend", "group_size")]
    assert fitted and all(name.endswith("_") for name in fitted)
    assert index.n_items_ == 50 and index.dim_ == 4
    np.testing.assert_array_equal(index.default_spread_, np.maximum(np.median(sigma, axis=0), 1e-3))


def test_fit_copies_and_never_modifies_the_catalog() -> None:
    mu, sigma = catalog(18, 200)
    mu_before, sigma_before = mu.copy(), sigma.copy()
    mu.flags.writeable = False
    sigma.flags.writeable = False
    index = SearchIndex().fit(mu, sigma)
    z = np.ones(4)
    z.flags.writeable = False
    before = index.search(z, "kl", 5)
    np.testing.assert_array_equal(mu, mu_before)
    np.testing.assert_array_equal(sigma, sigma_before)
    mutable_mu = mu_before.copy()
    index2 = SearchIndex().fit(mutable_mu, sigma_before)
    mutable_mu += 100.0  # the caller changes its array afterwards: the index must not see it
    for a, b in zip(index2.search(z, "kl", 5), before, strict=True):
        np.testing.assert_array_equal(a, b)  # the same index code on equal inputs


def test_unfitted_index_says_to_fit_first() -> None:
    with pytest.raises(NotFittedError, match=r"not fitted yet; call fit\(mu, sigma\) first"):
        SearchIndex().search(np.zeros(4))
    with pytest.raises(ValueError):  # NotFittedError is a ValueError, as in scikit-learn
        SearchIndex().scores_all(np.zeros(4))
    with pytest.raises(NotFittedError):
        SearchIndex().prepare([None])
    with pytest.raises(NotFittedError):
        SearchIndex().is_prepared()


@pytest.fixture(scope="module")
def fitted() -> SearchIndex:
    mu, sigma = catalog(19, 100)
    return SearchIndex().fit(mu, sigma)


BAD_QUERIES = [
    ("unknown score", {"score": "kll"}, r"unknown score 'kll'; choose one of: likelihood, euclidean"),
    ("negative k", {"k": -1}, r"k must be a non-negative integer"),
    ("float k", {"k": 2.5}, r"k must be a non-negative integer"),
    ("bool k", {"k": True}, r"k must be a non-negative integer"),
    ("z too short", {"z": np.zeros(3)}, r"z must have shape \(d,\) = \(4,\)"),
    ("z NaN", {"z": np.array([0.0, np.nan, 0.0, 0.0])}, r"z contains 1 NaN or inf"),
    ("s zero", {"s": 0.0}, r"s must be > 0"),
    ("s wrong shape", {"s": np.ones(3)}, r"s must be a positive scalar or an array of shape \(d,\) = \(4,\)"),
    ("s NaN", {"s": np.nan}, r"s contains 1 NaN or inf"),
]


@pytest.mark.parametrize(("case", "kwargs", "message"), BAD_QUERIES, ids=[c for c, _, _ in BAD_QUERIES])
def test_bad_queries_raise_value_errors(fitted: SearchIndex, case: str, kwargs: dict, message: str) -> None:
    call = {"z": np.zeros(4), "score": "kl", "k": 3, "s": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        fitted.search(call["z"], call["score"], call["k"], call["s"])
    if case.startswith(("unknown", "z", "s")):
        with pytest.raises(ValueError, match=message):
            fitted.scores_all(call["z"], call["score"], call["s"])
    if case.startswith("s "):
        with pytest.raises(ValueError, match=message):
            fitted.prepare([call["s"]])
        with pytest.raises(ValueError, match=message):
            fitted.is_prepared(call["s"])


def test_bad_fits_raise_value_errors() -> None:
    mu, sigma = catalog(20, 10)
    with pytest.raises(ValueError, match=r"unknown backend 'faiss'; choose one of: auto, fused, blas"):
        SearchIndex(backend="faiss").fit(mu, sigma)
    with pytest.raises(ValueError, match=r"group_size must be a positive integer"):
        SearchIndex(group_size=0).fit(mu, sigma)
    with pytest.raises(ValueError, match=r"sigma must be > 0"):
        SearchIndex().fit(mu, -sigma)
    with pytest.raises(ValueError, match=r"sigma must have the same shape as mu"):
        SearchIndex().fit(mu, sigma[:, :2])
    bad_mu = mu.copy()
    bad_mu[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"mu contains 1 NaN or inf"):
        SearchIndex().fit(bad_mu, sigma)
