"""Tests for latent/search.py: feature maps, exactness against float64 brute force, batches, bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latent.scores import SCORES
from latent.search import (
    BACKENDS,
    FUSED_MIN_ITEMS,
    LINEAR_SCORES,
    SPREAD_FEATURE_SCORES,
    NotFittedError,
    SearchIndex,
    item_features,
    query_features,
    value_from_key,
)

NAMES = list(SCORES)
FEATURE_NAMES = [*LINEAR_SCORES, *SPREAD_FEATURE_SCORES]


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


BACKEND_PARAMS = [
    "fused",
    "blas",
    pytest.param("faiss", marks=pytest.mark.skipif(not have_faiss(), reason="faiss-cpu is not installed")),
]


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
    ids, values = index.search(z, name, k=k, s=s)
    expected_ids, expected_values = brute_force(name, z, mu, sigma, s, k)
    np.testing.assert_array_equal(ids, expected_ids, err_msg=f"{name}, k={k}")
    np.testing.assert_array_equal(values, expected_values, err_msg=f"{name}, k={k}")
    assert ids.dtype == np.int64 and values.dtype == np.float64


# ------------------------------------------------------------------------------------------------
# Feature maps


@pytest.mark.parametrize("name", FEATURE_NAMES)
@pytest.mark.parametrize("centred", [False, True])
def test_feature_maps_reproduce_the_direct_formulas(name: str, centred: bool) -> None:
    mu, sigma = catalog(0, 50, d=5)
    rng = np.random.default_rng(1)
    z, s = rng.normal(size=5), rng.uniform(0.05, 2.0, size=5)
    centre = mu.mean(axis=0) if centred else None
    psi = item_features(name, mu, sigma, centre, s=s)
    phi, const = query_features(name, z, s, centre)
    expected_width = 6 if name in ("euclidean", "kl_reverse", "wasserstein2") else 11  # d+1, else 2d+1
    assert psi.shape == (50, expected_width) and phi.shape == (expected_width,)
    expected = SCORES[name].fn(z, mu, sigma, s)
    np.testing.assert_allclose(value_from_key(name, psi @ phi, const), expected, rtol=1e-9, atol=1e-9)


def test_kl_and_likelihood_share_item_features() -> None:
    mu, sigma = catalog(2, 10)
    np.testing.assert_array_equal(item_features("kl", mu, sigma), item_features("likelihood", mu, sigma))


# ------------------------------------------------------------------------------------------------
# Exactness


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("name", NAMES)
def test_search_equals_float64_brute_force(backend: str, name: str) -> None:
    mu, sigma = catalog(3, 3000)
    index = SearchIndex(backend=backend, block_size=16).fit(mu, sigma)  # blocks, ragged tail (3000 % 16 = 8)
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
    for block_size in (8, 32):  # one-level and two-level selection of group maxima
        index = SearchIndex(backend=backend, block_size=block_size).fit(mu, sigma)
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
    index = SearchIndex(backend=backend, block_size=32).fit(mu, sigma)
    z = np.array([0.41, 0.1, -0.3, 0.0])
    for k in (3, 25):
        assert_exact(index, name, z, mu, sigma, None, k)
    assert calls, "the near-tie case never exercised the widening path"


@pytest.mark.parametrize("backend", ["blas", "fused"])
@pytest.mark.parametrize("ties", [False, True])
def test_single_queries_run_in_one_compiled_call(backend: str, ties: bool, monkeypatch) -> None:
    # Single queries run start to finish in latent.single_query; when keys tie at kappa the "blas"
    # kernel reports it and the index takes the tied groups whole (the fused scan fills ties itself).
    # Both come out exact.
    import latent.single_query

    mu, sigma = catalog(17, 5000)
    if ties:  # 200 identical items: their keys tie at the top
        mu[::25], sigma[::25] = [0.2, 0.1, -0.1, 0.0], [0.05, 0.05, 0.05, 0.95]
    kernel_name = {"blas": "blas_query", "fused": "fused_finish"}[backend]  # the one that reports the status
    statuses = []
    original = getattr(latent.single_query, kernel_name)

    def spy(*args):
        result = original(*args)
        statuses.append(result[-1])
        return result

    monkeypatch.setattr(latent.single_query, kernel_name, spy)
    index = SearchIndex(backend=backend, block_size=32).fit(mu, sigma)
    z = np.array([0.2, 0.1, -0.1, 0.0])
    for name in NAMES:
        assert_exact(index, name, z, mu, sigma, None, 12)
        assert_exact(index, name, z + 0.5, mu, sigma, 0.3, 12)
    # Every query but kl at another spread than the default (rescored by numpy from mu and sigma).
    assert len(statuses) == 2 * len(NAMES) - 1, "the compiled query was not used"
    assert (latent.single_query.TIES in statuses) == (ties and backend == "blas")
    assert latent.single_query.UNSAFE not in statuses


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    d=st.integers(1, 4),
    k=st.integers(0, 40),
    name=st.sampled_from(NAMES),
    block_size=st.sampled_from([1, 2, 5, 64, None]),
    duplicates=st.booleans(),
    scalar_spread=st.booleans(),
    backend=st.sampled_from(["fused", "blas"]),
)
def test_search_equals_brute_force_on_random_catalogs(
    seed: int, n: int, d: int, k: int, name: str, block_size: int | None, duplicates: bool, scalar_spread: bool,
    backend: str,
) -> None:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, d)) * rng.uniform(0.01, 10.0)
    sigma = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), size=(n, d)))
    if duplicates and n > 3:
        mu[1::3], sigma[1::3] = mu[0], sigma[0]
    z = mu[rng.integers(n)] + rng.normal(size=d) * 0.1 if rng.random() < 0.5 else rng.normal(size=d)
    s = float(rng.uniform(0.01, 3.0)) if scalar_spread else rng.uniform(0.01, 3.0, size=d)
    index = SearchIndex(backend=backend, block_size=block_size).fit(mu, sigma)
    assert_exact(index, name, z, mu, sigma, s, k)


def test_auto_backend_picks_the_fused_scan_for_large_catalogs() -> None:
    small, large = (np.zeros((n, 1)) for n in (FUSED_MIN_ITEMS - 1, FUSED_MIN_ITEMS))
    assert SearchIndex().fit(small, small + 1.0).backend_ == "blas"
    assert SearchIndex().fit(large, large + 1.0).backend_ == "fused"
    assert SearchIndex(backend="fused").fit(small[:5], small[:5] + 1.0).backend_ == "fused"


@pytest.mark.parametrize("name", NAMES)
def test_float32_overflow_falls_back_to_exact_float64(name: str) -> None:
    mu, sigma = catalog(10, 500)
    sigma[7] = 1e-25  # 1/sigma^2 = 1e50 does not fit in float32
    index = SearchIndex(block_size=4).fit(mu, sigma)
    z = np.zeros(4)
    assert_exact(index, name, z, mu, sigma, None, 5)
    huge = np.full(4, 1e20)  # z^2 = 1e40 overflows float32 in the query features
    assert_exact(index, name, huge, mu, sigma, None, 5)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single_queries(backend: str, name: str) -> None:
    mu, sigma = catalog(11, 2500)
    index = SearchIndex(backend=backend, block_size=16).fit(mu, sigma)
    queries = np.random.default_rng(12).normal(size=(9, 4))
    queries[3] = mu[100]  # a query sitting exactly on an item
    ids, values = index.search_batch(queries, name, k=12, s=0.5)
    assert ids.shape == (9, 12) and values.shape == (9, 12)
    for row, z in enumerate(queries):
        single_ids, single_values = index.search(z, name, k=12, s=0.5)
        np.testing.assert_array_equal(ids[row], single_ids)
        np.testing.assert_array_equal(values[row], single_values)
    empty_ids, empty_values = index.search_batch(np.empty((0, 4)), name, k=3)
    assert empty_ids.shape == (0, 3) and empty_values.shape == (0, 3)


@pytest.mark.parametrize("name", NAMES)
def test_scores_all_equals_the_score_function(name: str) -> None:
    mu, sigma = catalog(13, 400)
    index = SearchIndex().fit(mu, sigma)
    z = np.array([0.2, -1.0, 0.5, 0.0])
    np.testing.assert_array_equal(index.scores_all(z, name), SCORES[name].fn(z, mu, sigma, None))
    np.testing.assert_array_equal(index.scores_all(z, name, s=0.7), SCORES[name].fn(z, mu, sigma, 0.7))


@pytest.mark.parametrize("backend", BACKEND_PARAMS[1:])
def test_backends_agree(backend: str) -> None:
    mu, sigma = catalog(14, 3000)
    fused_index = SearchIndex(backend="fused").fit(mu, sigma)
    other_index = SearchIndex(backend=backend).fit(mu, sigma)
    z = np.array([0.3, 0.3, -0.2, 0.0])
    for name in NAMES:
        for a, b in zip(fused_index.search(z, name, 15), other_index.search(z, name, 15), strict=True):
            np.testing.assert_array_equal(a, b)


def test_concurrent_searches_agree_with_sequential_ones() -> None:
    mu, sigma = catalog(15, 3000)
    index = SearchIndex().fit(mu, sigma)
    rng = np.random.default_rng(16)
    spreads = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2]  # more than the cache holds
    jobs = [(rng.normal(size=4), name, float(rng.choice(spreads))) for name in NAMES for _ in range(6)]
    expected = [index.search(z, name, 10, s) for z, name, s in jobs]
    fresh = SearchIndex().fit(mu, sigma)  # so that threads race to fill the bhattacharyya cache
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda job: fresh.search(job[0], job[1], 10, job[2]), jobs))
    for (ids, values), (expected_ids, expected_values) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(values, expected_values)


# ------------------------------------------------------------------------------------------------
# Estimator contract, copies, bad input


def test_estimator_contract() -> None:
    index = SearchIndex(backend="blas", block_size=32)
    assert vars(index) == {"backend": "blas", "block_size": 32}  # __init__ stores parameters only
    mu, sigma = catalog(17, 50)
    assert index.fit(mu, sigma) is index
    fitted = [name for name in vars(index) if name not in ("backend", "block_size")]
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
        np.testing.assert_array_equal(a, b)


def test_unfitted_index_says_to_fit_first() -> None:
    with pytest.raises(NotFittedError, match=r"not fitted yet; call fit\(mu, sigma\) first"):
        SearchIndex().search(np.zeros(4))
    with pytest.raises(ValueError):  # NotFittedError is a ValueError, as in scikit-learn
        SearchIndex().scores_all(np.zeros(4))


@pytest.fixture(scope="module")
def fitted() -> SearchIndex:
    mu, sigma = catalog(19, 100)
    return SearchIndex().fit(mu, sigma)


BAD_QUERIES = [
    ("unknown score", dict(score="kll"), r"unknown score 'kll'; choose one of: likelihood, euclidean"),
    ("negative k", dict(k=-1), r"k must be a non-negative integer"),
    ("float k", dict(k=2.5), r"k must be a non-negative integer"),
    ("bool k", dict(k=True), r"k must be a non-negative integer"),
    ("z too short", dict(z=np.zeros(3)), r"z must have shape \(d,\) = \(4,\)"),
    ("z NaN", dict(z=np.array([0.0, np.nan, 0.0, 0.0])), r"z contains 1 NaN or inf"),
    ("s zero", dict(s=0.0), r"s must be > 0"),
    ("s wrong shape", dict(s=np.ones(3)), r"s must be a positive scalar or an array of shape \(d,\) = \(4,\)"),
    ("s NaN", dict(s=np.nan), r"s contains 1 NaN or inf"),
]


@pytest.mark.parametrize(("case", "kwargs", "message"), BAD_QUERIES, ids=[c for c, _, _ in BAD_QUERIES])
def test_bad_queries_raise_value_errors(fitted: SearchIndex, case: str, kwargs: dict, message: str) -> None:
    call = {"z": np.zeros(4), "score": "kl", "k": 3, "s": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        fitted.search(call["z"], call["score"], call["k"], call["s"])
    if "z" not in kwargs:
        with pytest.raises(ValueError, match=message):
            fitted.search_batch(np.zeros((2, 4)), call["score"], call["k"], call["s"])
    if case.startswith(("unknown", "z", "s")):
        with pytest.raises(ValueError, match=message):
            fitted.scores_all(call["z"], call["score"], call["s"])


def test_bad_batches_and_bad_fits_raise_value_errors(fitted: SearchIndex) -> None:
    with pytest.raises(ValueError, match=r"Z must have shape \(B, d\) = \(B, 4\)"):
        fitted.search_batch(np.zeros(4))
    with pytest.raises(ValueError, match=r"Z contains 1 NaN or inf"):
        fitted.search_batch(np.array([[0.0, 0.0, np.inf, 0.0]]))
    mu, sigma = catalog(20, 10)
    with pytest.raises(ValueError, match=r"unknown backend 'annoy'; choose one of: auto, fused, blas, faiss"):
        SearchIndex(backend="annoy").fit(mu, sigma)
    with pytest.raises(ValueError, match=r"block_size must be a positive integer"):
        SearchIndex(block_size=0).fit(mu, sigma)
    with pytest.raises(ValueError, match=r"sigma must be > 0"):
        SearchIndex().fit(mu, -sigma)
    with pytest.raises(ValueError, match=r"sigma must have the same shape as mu"):
        SearchIndex().fit(mu, sigma[:, :2])
    bad_mu = mu.copy()
    bad_mu[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"mu contains 1 NaN or inf"):
        SearchIndex().fit(bad_mu, sigma)


def test_backend_list_and_feature_widths() -> None:
    assert BACKENDS == ("auto", "fused", "blas", "faiss")
    mu, sigma = catalog(21, 20, d=10)
    index = SearchIndex().fit(mu, sigma)
    widths = {name: index.feature_matrix(name).shape[0] for name in (*LINEAR_SCORES, *SPREAD_FEATURE_SCORES)}
    assert widths == {
        "likelihood": 21, "kl": 21, "mahalanobis": 21, "euclidean": 11,
        "kl_reverse": 11, "jeffreys": 21, "wasserstein2": 11, "bhattacharyya": 21,
    }
    assert index.features_["kl"].features is index.features_["likelihood"].features  # shared, not copied


def test_features_are_built_on_first_use_once_even_from_many_threads() -> None:
    mu, sigma = catalog(22, 3000)
    index = SearchIndex().fit(mu, sigma)
    assert index.features_ == {}  # fit only validates and copies
    z = np.zeros(4)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: index.search(z, "kl", 5), range(16)))
    assert set(index.features_) == {"likelihood", "kl"}  # kl built likelihood's features, once
    assert all(np.array_equal(ids, results[0][0]) for ids, _ in results)


def test_spread_features_are_cached_per_score_and_spread_and_stay_bounded() -> None:
    # kl_reverse, jeffreys, wasserstein2 and bhattacharyya build features for each new spread; cycling
    # through many spreads and scores keeps results exact and the cache small.
    from latent.search import _SPREAD_CACHE_SIZE

    mu, sigma = catalog(30, 1500)
    index = SearchIndex(block_size=16).fit(mu, sigma)
    rng = np.random.default_rng(31)
    z = rng.normal(size=4)
    for s in (0.2, 0.5, 0.2, 1.3, np.array([0.1, 0.2, 0.3, 0.9])):
        for name in SPREAD_FEATURE_SCORES:
            assert_exact(index, name, z, mu, sigma, s, 9)
            assert (name, np.broadcast_to(np.asarray(s, dtype=float), (4,)).tobytes()) in index._spread_cache_
    assert len(index._spread_cache_) <= _SPREAD_CACHE_SIZE * len(SPREAD_FEATURE_SCORES)
    for name in SPREAD_FEATURE_SCORES:  # the default spread's features are never evicted
        assert_exact(index, name, z, mu, sigma, None, 9)
