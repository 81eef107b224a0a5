"""Tests for latent/scores.py: every score against an independent reference, properties, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.spatial import distance
from torch.distributions import Normal, kl_divergence

from latent.scores import MIN_SPREAD, SCORES, Score, default_spread, get_score

NAMES = list(SCORES)
SYMMETRIC = ["euclidean", "jeffreys", "bhattacharyya", "wasserstein2"]
DIVERGENCES = ["kl", "kl_reverse", "jeffreys", "bhattacharyya", "wasserstein2"]


def random_catalog(seed: int, n: int = 40, d: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """z (d,), mu (n, d), sigma (n, d) with a wide range of sigmas, and a per-dimension spread s (d,)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, d)) * 1.5
    sigma = np.exp(rng.uniform(np.log(0.01), np.log(3.0), size=(n, d)))
    z = rng.normal(size=d)
    s = np.exp(rng.uniform(np.log(0.05), np.log(2.0), size=d))
    return z, mu, sigma, s


# ------------------------------------------------------------------------------------------------
# Independent references


def t64(array: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.array(array, dtype=np.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_likelihood_matches_torch_normal_log_prob(seed: int) -> None:
    z, mu, sigma, _ = random_catalog(seed)
    expected = Normal(t64(mu), t64(sigma)).log_prob(t64(z)).sum(-1).numpy()
    np.testing.assert_allclose(SCORES["likelihood"].fn(z, mu, sigma, None), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scalar_spread", [False, True])
def test_kl_scores_match_torch_kl_divergence(seed: int, scalar_spread: bool) -> None:
    z, mu, sigma, s = random_catalog(seed)
    if scalar_spread:
        s = 0.37
    query = Normal(t64(z), t64(np.broadcast_to(s, z.shape)))
    items = Normal(t64(mu), t64(sigma))
    forward = kl_divergence(query, items).sum(-1).numpy()
    reverse = kl_divergence(items, query).sum(-1).numpy()
    np.testing.assert_allclose(SCORES["kl"].fn(z, mu, sigma, s), forward, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(SCORES["kl_reverse"].fn(z, mu, sigma, s), reverse, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(SCORES["jeffreys"].fn(z, mu, sigma, s), forward + reverse, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("seed", [0, 1])
def test_euclidean_and_mahalanobis_match_scipy(seed: int) -> None:
    z, mu, sigma, _ = random_catalog(seed)
    expected = distance.cdist(z[None, :], mu, metric="euclidean")[0]
    np.testing.assert_allclose(SCORES["euclidean"].fn(z, mu, sigma, None), expected, rtol=1e-13)
    expected_m = [distance.mahalanobis(z, mu[i], np.diag(1.0 / sigma[i] ** 2)) for i in range(len(mu))]
    np.testing.assert_allclose(SCORES["mahalanobis"].fn(z, mu, sigma, None), expected_m, rtol=1e-12)


def bhattacharyya_by_integration(z: float, s: float, mu: float, sigma: float) -> float:
    """-log of the integral of sqrt(p q) for two 1-D Gaussians, by adaptive quadrature."""
    lo = min(z - 12 * s, mu - 12 * sigma)
    hi = max(z + 12 * s, mu + 12 * sigma)
    points = sorted({z, mu})

    def integrand(x: float) -> float:
        return math.sqrt(stats.norm.pdf(x, z, s) * stats.norm.pdf(x, mu, sigma))

    coefficient, _ = integrate.quad(integrand, lo, hi, points=points, limit=200, epsabs=1e-14, epsrel=1e-12)
    return -math.log(coefficient)


@pytest.mark.parametrize(
    ("z", "s", "mu", "sigma"),
    [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.4, 0.8), (1.5, 0.2, 0.0, 2.0), (-2.0, 1.3, 1.0, 0.4)],
)
def test_bhattacharyya_matches_numeric_integration_in_1d(z: float, s: float, mu: float, sigma: float) -> None:
    expected = bhattacharyya_by_integration(z, s, mu, sigma)
    got = SCORES["bhattacharyya"].fn([z], [[mu]], [[sigma]], s)[0]
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_bhattacharyya_factorises_over_dimensions() -> None:
    # The Bhattacharyya coefficient of independent dimensions is the product of the 1-D coefficients.
    rng = np.random.default_rng(3)
    z, s = rng.normal(size=3), rng.uniform(0.3, 1.5, size=3)
    mu, sigma = z + rng.normal(size=(3, 3)), rng.uniform(0.3, 1.5, size=(3, 3))
    for i in range(3):
        expected = sum(bhattacharyya_by_integration(z[j], s[j], mu[i, j], sigma[i, j]) for j in range(3))
        assert SCORES["bhattacharyya"].fn(z, mu, sigma, s)[i] == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize(("z", "s", "mu", "sigma"), [(0.0, 1.0, 0.5, 0.3), (2.0, 0.1, -1.0, 1.5)])
def test_wasserstein2_matches_quantile_integral_in_1d(z: float, s: float, mu: float, sigma: float) -> None:
    # W2^2 between 1-D distributions is the integral over u of (F^-1(u) - G^-1(u))^2.
    def integrand(u: float) -> float:
        return (stats.norm.ppf(u, z, s) - stats.norm.ppf(u, mu, sigma)) ** 2

    squared, _ = integrate.quad(integrand, 0.0, 1.0, limit=200)
    got = SCORES["wasserstein2"].fn([z], [[mu]], [[sigma]], s)[0]
    assert got == pytest.approx(math.sqrt(squared), rel=1e-6)


def brute_force(name: str, z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The issue's formulas, written out literally with explicit loops over items."""
    d = len(z)
    out = []
    for m, g in zip(mu, sigma, strict=True):
        if name == "likelihood":
            v = sum(-((z[j] - m[j]) ** 2) / (2 * g[j] ** 2) - math.log(g[j]) for j in range(d)) - d / 2 * math.log(
                2 * math.pi
            )
        elif name == "euclidean":
            v = math.sqrt(sum((z[j] - m[j]) ** 2 for j in range(d)))
        elif name == "mahalanobis":
            v = math.sqrt(sum((z[j] - m[j]) ** 2 / g[j] ** 2 for j in range(d)))
        elif name == "kl":
            v = sum(math.log(g[j] / s[j]) + (s[j] ** 2 + (z[j] - m[j]) ** 2) / (2 * g[j] ** 2) - 0.5 for j in range(d))
        elif name == "kl_reverse":
            v = sum(math.log(s[j] / g[j]) + (g[j] ** 2 + (m[j] - z[j]) ** 2) / (2 * s[j] ** 2) - 0.5 for j in range(d))
        elif name == "jeffreys":
            v = brute_force("kl", z, m[None], g[None], s)[0] + brute_force("kl_reverse", z, m[None], g[None], s)[0]
        elif name == "bhattacharyya":
            v = sum(
                (z[j] - m[j]) ** 2 / (4 * (s[j] ** 2 + g[j] ** 2))
                + 0.5 * math.log((s[j] ** 2 + g[j] ** 2) / (2 * s[j] * g[j]))
                for j in range(d)
            )
        elif name == "wasserstein2":
            v = math.sqrt(sum((z[j] - m[j]) ** 2 for j in range(d)) + sum((s[j] - g[j]) ** 2 for j in range(d)))
        else:
            raise AssertionError(name)
        out.append(v)
    return np.array(out)


@pytest.mark.parametrize("name", NAMES)
def test_every_score_matches_the_literal_formula(name: str) -> None:
    for seed in range(3):
        z, mu, sigma, s = random_catalog(seed, n=25)
        expected = brute_force(name, z, mu, sigma, s)
        np.testing.assert_allclose(SCORES[name].fn(z, mu, sigma, s), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_scalar_spread_equals_the_same_spread_per_dimension(name: str) -> None:
    z, mu, sigma, _ = random_catalog(4)
    fn = SCORES[name].fn
    np.testing.assert_array_equal(fn(z, mu, sigma, 0.4), fn(z, mu, sigma, np.full(z.shape, 0.4)))


@pytest.mark.parametrize("name", NAMES)
def test_default_spread_is_the_catalog_median_sigma(name: str) -> None:
    z, mu, sigma, _ = random_catalog(5)
    median = np.median(sigma, axis=0)
    np.testing.assert_array_equal(SCORES[name].fn(z, mu, sigma, None), SCORES[name].fn(z, mu, sigma, median))


def test_default_spread_floor_and_shape() -> None:
    sigma = np.array([[1e-6, 0.5], [2e-6, 0.7], [3e-6, 0.9]])
    np.testing.assert_array_equal(default_spread(sigma), [MIN_SPREAD, 0.7])
    assert default_spread(sigma).shape == (2,)


def test_scores_accept_torch_tensors_and_lists() -> None:
    z, mu, sigma, s = random_catalog(6, n=4, d=2)
    for name in NAMES:
        expected = SCORES[name].fn(z, mu, sigma, s)
        got = SCORES[name].fn(torch.tensor(z), mu.tolist(), torch.tensor(sigma), torch.tensor(s))
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.float64 and got.shape == (4,)


# ------------------------------------------------------------------------------------------------
# Properties

finite = st.floats(-5.0, 5.0, allow_nan=False, allow_infinity=False)
positive = st.floats(0.05, 5.0, allow_nan=False, allow_infinity=False)


@st.composite
def gaussians(draw: st.DrawFn, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    d = draw(st.integers(1, 4))
    return [
        (
            np.array(draw(st.lists(finite, min_size=d, max_size=d))),
            np.array(draw(st.lists(positive, min_size=d, max_size=d))),
        )
        for _ in range(count)
    ]


def between(name: str, query: tuple[np.ndarray, np.ndarray], item: tuple[np.ndarray, np.ndarray]) -> float:
    """A score between the query Gaussian N(z, s^2) and one item N(mu, sigma^2)."""
    (z, s), (mu, sigma) = query, item
    return float(SCORES[name].fn(z, mu[None, :], sigma[None, :], s)[0])


@settings(max_examples=150, deadline=None)
@given(pair=gaussians(2))
def test_divergences_are_nonnegative_and_zero_on_equal_gaussians(pair: list) -> None:
    p, q = pair
    for name in DIVERGENCES:
        assert between(name, p, q) >= 0.0, name
        assert between(name, p, p) == 0.0, name


@settings(max_examples=150, deadline=None)
@given(pair=gaussians(2))
def test_symmetric_scores_are_symmetric(pair: list) -> None:
    p, q = pair
    for name in SYMMETRIC:
        assert between(name, p, q) == between(name, q, p), name


@settings(max_examples=150, deadline=None)
@given(triple=gaussians(3))
def test_wasserstein2_triangle_inequality(triple: list) -> None:
    a, b, c = triple
    ab, bc, ac = between("wasserstein2", a, b), between("wasserstein2", b, c), between("wasserstein2", a, c)
    assert ac <= ab + bc + 1e-12 * (ab + bc + 1.0)


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    n=st.integers(2, 30),
    d=st.integers(1, 4),
    shared_sigma=positive,
)
def test_equal_sigmas_make_likelihood_rank_as_euclidean(
    data: st.DataObject, n: int, d: int, shared_sigma: float
) -> None:
    mu = np.array(data.draw(st.lists(st.lists(finite, min_size=d, max_size=d), min_size=n, max_size=n)))
    mu[n // 2] = mu[0]  # an exact tie
    z = np.array(data.draw(st.lists(finite, min_size=d, max_size=d)))
    sigma = np.full((n, d), shared_sigma)
    likelihood = SCORES["likelihood"].fn(z, mu, sigma, None)
    euclidean = SCORES["euclidean"].fn(z, mu, sigma, None)
    by_likelihood = np.lexsort((np.arange(n), -likelihood))
    # Ranked by likelihood, distances never decrease (beyond float64 rounding), and exact distance
    # ties keep the lower index first, as they do when ranking by euclidean.
    ranked = euclidean[by_likelihood]
    # A pair may come out of order only where likelihood cannot tell it apart in float64: its exact
    # difference, (r_i^2 - r_j^2) / (2 sigma^2), lies below the rounding of values of size |log q|.
    in_order = np.diff(ranked) >= -1e-12 * (1.0 + ranked[1:])
    gap = (ranked[:-1] ** 2 - ranked[1:] ** 2) / (2.0 * shared_sigma**2)
    unresolved = gap <= 1e-13 * (1.0 + np.abs(likelihood[by_likelihood][1:]))
    assert (in_order | unresolved).all()
    by_euclidean = np.lexsort((np.arange(n), euclidean))
    separated = np.diff(np.sort(euclidean)) > 1e-9 * (1.0 + np.sort(euclidean)[1:])
    if separated.all():
        np.testing.assert_array_equal(by_likelihood, by_euclidean)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(1, 20), d=st.integers(1, 4))
def test_kl_identity(data: st.DataObject, n: int, d: int) -> None:
    # kl = -log q(z|x) + sum s^2/(2 sigma^2) + c(s), with c(s) = -sum log s - (d/2)(1 + log 2 pi).
    mu = np.array(data.draw(st.lists(st.lists(finite, min_size=d, max_size=d), min_size=n, max_size=n)))
    sigma = np.array(data.draw(st.lists(st.lists(positive, min_size=d, max_size=d), min_size=n, max_size=n)))
    z = np.array(data.draw(st.lists(finite, min_size=d, max_size=d)))
    s = np.array(data.draw(st.lists(positive, min_size=d, max_size=d)))
    c = -np.log(s).sum() - 0.5 * d * (1.0 + math.log(2.0 * math.pi))
    expected = -SCORES["likelihood"].fn(z, mu, sigma, None) + (s**2 / (2.0 * sigma**2)).sum(axis=1) + c
    np.testing.assert_allclose(SCORES["kl"].fn(z, mu, sigma, s), expected, rtol=1e-10, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(2, 25), d=st.integers(1, 4))
def test_kl_ranking_tends_to_likelihood_ranking_as_spread_shrinks(data: st.DataObject, n: int, d: int) -> None:
    mu = np.array(data.draw(st.lists(st.lists(finite, min_size=d, max_size=d), min_size=n, max_size=n)))
    sigma = np.array(data.draw(st.lists(st.lists(positive, min_size=d, max_size=d), min_size=n, max_size=n)))
    z = np.array(data.draw(st.lists(finite, min_size=d, max_size=d)))
    likelihood = SCORES["likelihood"].fn(z, mu, sigma, None)
    gaps = np.diff(np.sort(likelihood))
    assume(gaps.min() > 1e-6)  # untied items only: tied ones may differ through the sigma term
    # The sigma term sum s^2/(2 sigma^2) then moves every item by less than half the smallest gap.
    s = math.sqrt(gaps.min() * sigma.min() ** 2 / d) * 0.5
    kl = SCORES["kl"].fn(z, mu, sigma, s)
    np.testing.assert_array_equal(np.argsort(kl), np.argsort(-likelihood))


def test_kl_breaks_likelihood_ties_through_sigma() -> None:
    # Two items tied in likelihood at z = 0: mu = sqrt(2 log 2) with sigma = 1, and mu = 0 with sigma = 2.
    # kl adds sum s^2/(2 sigma^2), which is smaller for the broader item, so kl prefers it.
    z = np.zeros(1)
    mu = np.array([[math.sqrt(2.0 * math.log(2.0))], [0.0]])
    sigma = np.array([[1.0], [2.0]])
    likelihood = SCORES["likelihood"].fn(z, mu, sigma, None)
    assert likelihood[0] == pytest.approx(likelihood[1], abs=1e-12)
    kl = SCORES["kl"].fn(z, mu, sigma, 0.01)
    assert kl[1] < kl[0]


# ------------------------------------------------------------------------------------------------
# Registry and bad input


def test_registry_lists_every_score_with_its_metadata() -> None:
    assert set(SCORES) == {
        "likelihood",
        "euclidean",
        "mahalanobis",
        "kl",
        "kl_reverse",
        "jeffreys",
        "bhattacharyya",
        "wasserstein2",
    }
    for name, score in SCORES.items():
        assert isinstance(score, Score) and score.name == name
        assert score.formula.strip() and "\\" in score.formula and score.summary.strip()
        assert "\n" not in score.summary
        assert get_score(name) is score
    assert [n for n, sc in SCORES.items() if sc.higher_is_nearer] == ["likelihood"]
    assert {n for n, sc in SCORES.items() if sc.needs_spread} == {
        "kl",
        "kl_reverse",
        "jeffreys",
        "bhattacharyya",
        "wasserstein2",
    }


def test_unknown_score_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown score 'kll'; choose one of: likelihood, euclidean"):
        get_score("kll")


GOOD = random_catalog(7, n=6, d=3)


def with_value(array: np.ndarray, index: tuple, value: float) -> np.ndarray:
    copy = np.array(array, dtype=float)
    copy[index] = value
    return copy


BAD_INPUTS = [
    ("z wrong length", lambda z, mu, sg, s: (z[:2], mu, sg, s), r"z must have shape \(d,\) = \(3,\)"),
    ("z 2-D", lambda z, mu, sg, s: (z[None], mu, sg, s), r"z must have shape"),
    ("z NaN", lambda z, mu, sg, s: (with_value(z, (1,), np.nan), mu, sg, s), r"z contains 1 NaN or inf.*finite"),
    ("mu 1-D", lambda z, mu, sg, s: (z, mu[0], sg, s), r"mu must have shape \(N, d\)"),
    ("mu empty", lambda z, mu, sg, s: (z, mu[:0], sg[:0], s), r"N >= 1"),
    ("mu inf", lambda z, mu, sg, s: (z, with_value(mu, (2, 0), np.inf), sg, s), r"mu contains 1 NaN or inf"),
    ("sigma shape", lambda z, mu, sg, s: (z, mu, sg[:, :2], s), r"sigma must have the same shape as mu"),
    (
        "sigma zero",
        lambda z, mu, sg, s: (z, mu, with_value(sg, (1, 1), 0.0), s),
        r"sigma must be > 0.*finite values > 0",
    ),
    ("sigma negative", lambda z, mu, sg, s: (z, mu, with_value(sg, (0, 0), -1.0), s), r"sigma must be > 0"),
    ("sigma NaN", lambda z, mu, sg, s: (z, mu, with_value(sg, (0, 0), np.nan), s), r"sigma contains 1 NaN"),
    ("s zero", lambda z, mu, sg, s: (z, mu, sg, 0.0), r"s must be > 0.*finite values > 0"),
    ("s negative entry", lambda z, mu, sg, s: (z, mu, sg, with_value(s, (1,), -0.1)), r"s must be > 0"),
    (
        "s wrong shape",
        lambda z, mu, sg, s: (z, mu, sg, s[:2]),
        r"s must be a positive scalar or an array of shape \(d,\) = \(3,\)",
    ),
    ("s inf", lambda z, mu, sg, s: (z, mu, sg, np.inf), r"s contains 1 NaN or inf"),
    ("z text", lambda z, mu, sg, s: (["a", "b", "c"], mu, sg, s), r"z must be an array of real numbers"),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("case", "make", "message"), BAD_INPUTS, ids=[case for case, _, _ in BAD_INPUTS])
def test_bad_input_raises_a_value_error_that_says_what_is_allowed(name: str, case: str, make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SCORES[name].fn(*make(*GOOD))


def test_default_spread_rejects_bad_sigma() -> None:
    with pytest.raises(ValueError, match=r"sigma must be > 0"):
        default_spread([[0.1, 0.0]])
    with pytest.raises(ValueError, match=r"sigma must have shape \(N, d\)"):
        default_spread([0.1, 0.2])


@pytest.mark.parametrize("name", NAMES)
def test_scores_never_modify_their_inputs(name: str) -> None:
    z, mu, sigma, s = random_catalog(8, n=5, d=3)
    originals = [a.copy() for a in (z, mu, sigma, s)]
    for array in (z, mu, sigma, s):
        array.flags.writeable = False  # any in-place write would raise
    SCORES[name].fn(z, mu, sigma, s)
    SCORES[name].fn(z, mu, sigma, None)
    for array, original in zip((z, mu, sigma, s), originals, strict=True):
        np.testing.assert_array_equal(array, original)


@pytest.mark.parametrize("name", list(SCORES))
def test_kernels_with_precomputed_item_terms_equal_fn(name: str) -> None:
    # The search index precomputes each item's item_term(sigma, s) and gathers it for a few candidates;
    # the numpy kernel then runs the same elementwise operations on the same numbers, so the values are
    # fn's exactly (one code path), for a per-dimension and a scalar spread.
    score = SCORES[name]
    rng = np.random.default_rng(11)
    mu, sigma = rng.normal(size=(200, 6)), np.exp(rng.uniform(-4, 0.5, size=(200, 6)))
    z = rng.normal(size=6)
    rows = rng.choice(200, size=17, replace=False)
    for s in (rng.uniform(0.05, 2.0, size=6), np.float64(0.3)):
        expected = score.fn(z, mu, sigma, s)[rows]
        terms = None if score.item_term is None else score.item_term(sigma, np.broadcast_to(s, (6,)))[rows]
        np.testing.assert_array_equal(score.kernel(z, mu[rows], sigma[rows], s, terms), expected)


def test_each_record_is_consistent() -> None:
    rng = np.random.default_rng(12)
    mu, sigma = rng.normal(size=(30, 4)), np.exp(rng.uniform(-2, 0.5, size=(30, 4)))
    for code, (name, score) in enumerate(SCORES.items()):
        assert score.code == code and score.features_from in SCORES
        assert SCORES[score.features_from].features_from == score.features_from
        assert score.segments[-1] == "1" and score.width(4) == sum(4 if w == "d" else 1 for w in score.segments)
        # psi depends on the spread exactly when the record says so.
        a = score.psi(mu, sigma, np.log(sigma), np.full(4, 0.3))[0]
        b = score.psi(mu, sigma, np.log(sigma), np.full(4, 0.9))[0]
        assert np.array_equal(a, b) == (not score.spread_features), name
        assert not score.spread_features or score.needs_spread
        if score.item_term is not None:
            t1, t2 = score.item_term(sigma, np.full(4, 0.3)), score.item_term(sigma, np.full(4, 0.9))
            assert t1.shape == sigma.shape and np.array_equal(t1, t2) == (not score.item_term_uses_spread)
