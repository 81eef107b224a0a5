"""latent/teaching.py against independent references: torch.distributions, scipy.stats and brute force."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.distributions import Normal, kl_divergence

from latent import teaching
from latent.scores import SCORES


def catalog(n: int = 400, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded catalog with widths over two orders of magnitude (and a few tiny sigmas)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 1.5, (n, d))
    sigma = np.exp(rng.uniform(np.log(0.02), np.log(2.0), (n, d)))
    sigma[:3, 0] = 1e-4
    return mu, sigma


def t(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float64)  # a copy: inputs may be read-only views


def last_number(latex: str) -> float:
    """The number after the last '=' of a formula."""
    return float(re.findall(r"=\s*(-?\d+\.\d+)", latex)[-1])


# --------------------------------------------------------------------------- reparameterisation


def test_reparameterised_samples_follow_the_posterior_and_carry_the_gradient():
    mu, sigma = np.array([0.5, -2.0, 0.0]), np.array([0.1, 1.5, 0.01])
    eps = teaching.draw_eps(123, 40_000, 3)
    assert eps.shape == (40_000, 3)
    np.testing.assert_array_equal(eps, teaching.draw_eps(123, 40_000, 3))  # the seed reproduces the draw
    assert not np.array_equal(eps, teaching.draw_eps(124, 40_000, 3))
    z = teaching.reparameterise(mu, sigma, eps)
    for j in range(3):  # Kolmogorov-Smirnov against N(mu_j, sigma_j)
        assert stats.kstest(z[:, j], "norm", args=(mu[j], sigma[j])).pvalue > 1e-3
    # torch's own reparameterised sample with the same noise, and its gradients dz/dmu = 1, dz/dsigma = eps
    m, s = t(mu).requires_grad_(), t(sigma).requires_grad_()
    e = t(eps[:5])
    ref = m + s * e
    np.testing.assert_allclose(teaching.reparameterise(mu, sigma, eps[:5]), ref.detach().numpy(), rtol=1e-15)
    ref.sum().backward()
    np.testing.assert_allclose(m.grad.numpy(), 5.0)
    np.testing.assert_allclose(s.grad.numpy(), eps[:5].sum(0))
    with pytest.raises(ValueError, match="eps must have shape"):
        teaching.reparameterise(mu, sigma, np.zeros((2, 4)))


# --------------------------------------------------------------------------- likelihood


def test_likelihood_terms_equal_torch_log_prob_and_the_score_registry():
    mu, sigma = catalog()
    z = np.array([0.3, -1.0, 2.0, 0.0, 0.5, -0.25])
    for i in (0, 7, 123):
        terms = teaching.likelihood_terms(z, mu[i], sigma[i])
        ref = Normal(t(mu[i]), t(sigma[i])).log_prob(t(z))
        np.testing.assert_allclose(terms.per_dimension, ref.numpy(), rtol=1e-12, atol=1e-9)
        assert terms.total == pytest.approx(float(ref.sum()), rel=1e-12)
        assert terms.total == pytest.approx(float(SCORES["likelihood"].fn(z, mu[i : i + 1], sigma[i : i + 1])[0]),
                                            rel=1e-12)


def test_likelihood_latex_shows_the_numbers_of_this_query_and_item():
    z, mu, sigma = np.array([1.0, 0.2, -0.5]), np.array([0.8, -0.152, -0.4]), np.array([0.5, 0.2, 0.1])
    terms = teaching.likelihood_terms(z, mu, sigma)
    latex = teaching.likelihood_latex(terms, label="x")
    assert last_number(latex) == pytest.approx(float(Normal(t(mu), t(sigma)).log_prob(t(z)).sum()), abs=5e-4)
    assert r"(0.200 - (-0.152))^2" in latex  # a negative mean is bracketed: no "- -"
    assert "- -" not in latex and "+ -" not in latex
    assert r"2 \cdot 0.500^2" in latex


def test_penalty_splits_the_torch_log_prob_into_distance_width_and_constant():
    mu, sigma = catalog(d=7)
    z = np.random.default_rng(9).normal(0.0, 1.0, 7)
    for i in (0, 5, 17):
        p = teaching.penalty(z, mu[i], sigma[i])
        ref = Normal(t(mu[i]), t(sigma[i])).log_prob(t(z))  # (7,)
        assert p.total == pytest.approx(float(ref.sum()), rel=1e-12)
        assert p.width == pytest.approx(-float(torch.log(t(sigma[i])).sum()), rel=1e-12)
        assert p.constant == pytest.approx(-3.5 * math.log(2 * math.pi), rel=1e-15)
        # What is left of log N once the width and the constant are taken off is the distance term.
        assert p.distance == pytest.approx(-float((((t(z) - t(mu[i])) / t(sigma[i])) ** 2).sum()) / 2, rel=1e-12)
        assert p.distance + p.width + p.constant == pytest.approx(p.total, rel=1e-12)
        assert p.euclidean == pytest.approx(float(np.sqrt(((z - mu[i]) ** 2).sum())), rel=1e-12)


def test_density_window_is_centred_on_z_and_holds_both_posteriors():
    grid = teaching.density_window(0.5, [0.4, 3.0], [0.1, 0.2], n=401)
    assert len(grid) == 401 and grid[200] == pytest.approx(0.5)
    half = 3.0 - 0.5 + 0.5  # the farther mean is 2.5 away: plus the margin of 0.5
    assert (grid[0], grid[-1]) == pytest.approx((0.5 - half, 0.5 + half))
    np.testing.assert_allclose(np.diff(grid), np.diff(grid)[0], rtol=1e-9)
    broad = teaching.density_window(0.0, [0.0, 0.1], [1.5, 0.2])  # four sigmas of the broad one win
    assert (broad[0], broad[-1]) == pytest.approx((-6.0, 6.0))


def test_width_gap_is_the_log_ratio_of_the_peak_densities():
    sa, sb = 0.2, 0.9
    peaks = stats.norm.pdf(0.0, 0.0, [sa, sb])
    assert teaching.width_gap(sa, sb) == pytest.approx(math.log(peaks[0] / peaks[1]), rel=1e-12)
    assert teaching.width_gap(sb, sa) == pytest.approx(-teaching.width_gap(sa, sb), rel=1e-15)
    assert teaching.width_gap(np.float32(0.3), np.float32(0.3)) == 0.0
    with pytest.raises(ValueError, match="> 0"):
        teaching.width_gap(0.0, 1.0)


def test_shared_items_counts_the_intersection():
    assert teaching.shared_items(np.array([4, 1, 9]), np.array([9, 2, 4])) == 2
    assert teaching.shared_items([1, 2], [3]) == 0
    assert teaching.shared_items([], []) == 0


def test_normal_pdf_and_prior_match_scipy():
    x = np.linspace(-6, 6, 97)
    np.testing.assert_allclose(teaching.normal_pdf(x, 0.7, 0.3), stats.norm.pdf(x, 0.7, 0.3), rtol=1e-12)
    np.testing.assert_allclose(teaching.prior_density(x), stats.norm.pdf(x), rtol=1e-12)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        teaching.normal_pdf(x, 0.0, 0.0)


# --------------------------------------------------------------------------- KL and the identity


@pytest.mark.parametrize("s", [0.05, 1.0, np.array([0.01, 0.1, 0.3, 1.0, 2.0, 0.5])])
def test_kl_terms_and_identity_equal_torch(s):
    mu, sigma = catalog()
    z = np.array([0.3, -1.0, 2.0, 0.0, 0.5, -0.25])
    s_vec = np.broadcast_to(s, (6,))
    query = Normal(t(z), t(s_vec))
    for i in (0, 5, 99):
        terms = teaching.kl_terms(z, s, mu[i], sigma[i])
        ref = kl_divergence(query, Normal(t(mu[i]), t(sigma[i])))
        np.testing.assert_allclose(terms.per_dimension, ref.numpy(), rtol=1e-9, atol=1e-9)
        assert terms.total == pytest.approx(float(ref.sum()), rel=1e-10)
        assert last_number(teaching.kl_latex(terms)) == pytest.approx(float(ref.sum()), abs=5e-4)
        ident = teaching.kl_identity(z, s, mu[i], sigma[i])
        assert ident.kl == pytest.approx(float(ref.sum()), rel=1e-10)
        assert ident.neg_log_likelihood == pytest.approx(-float(Normal(t(mu[i]), t(sigma[i])).log_prob(t(z)).sum()))
        # KL(p || q) = -H(p) - E_p[log q], and E_p[log q] = log q(z) - sum s^2 / (2 sigma^2): so c(s) = -H(p).
        assert ident.constant == pytest.approx(-float(query.entropy().sum()), rel=1e-12)
        assert ident.spread_penalty == pytest.approx(float((t(s_vec) ** 2 / (2 * t(sigma[i]) ** 2)).sum()), rel=1e-12)
        assert ident.kl == pytest.approx(ident.neg_log_likelihood + ident.spread_penalty + ident.constant, rel=1e-9)


def test_identity_over_the_catalog_has_one_constant_and_a_penalty_that_vanishes_with_s():
    mu, sigma = catalog()
    z = np.zeros(6)
    ident = teaching.kl_identity(z, 0.3, mu, sigma)
    assert ident.kl.shape == (400,)
    np.testing.assert_allclose(ident.kl - ident.neg_log_likelihood - ident.spread_penalty, ident.constant, atol=1e-6)
    small = teaching.kl_identity(z, 1e-6, mu, sigma)
    assert small.spread_penalty.max() < 1e-3  # sigma >= 1e-4 here, so s^2/(2 sigma^2) <= 6 * 5e-5


def test_top_k_breaks_ties_by_index():
    values = np.array([3.0, 1.0, 3.0, 2.0, 1.0])
    assert teaching.top_k(values, 3, higher_is_nearer=True).tolist() == [0, 2, 3]
    assert teaching.top_k(values, 3, higher_is_nearer=False).tolist() == [1, 4, 3]


def _reference_overlap(z, mu, sigma, k, s):
    """Brute force with torch.distributions: top-k of log q(z|x) against top-k of KL(N(z, s^2) || q)."""
    posts = Normal(t(mu), t(sigma))
    like = torch.argsort(-posts.log_prob(t(z)).sum(1), stable=True)[:k].numpy()
    kl = kl_divergence(Normal(t(z), torch.full_like(t(z), s)), posts).sum(1)
    top = torch.argsort(kl, stable=True)[:k].numpy()
    return len(set(like) & set(top)) / k


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 30))
def test_overlap_curve_matches_brute_force_and_reaches_one_as_s_shrinks(seed, k):
    mu, sigma = catalog(300, 4, seed)
    sigma = np.maximum(sigma, 0.01)
    z = np.random.default_rng(seed + 1).normal(0, 1.5, 4)
    spreads = teaching.spread_grid(1e-4, 2.0, 9)
    curve = teaching.overlap_curve(z, mu, sigma, k, spreads)
    np.testing.assert_allclose(curve, [_reference_overlap(z, mu, sigma, k, s) for s in spreads])
    assert curve[-1] == 1.0, "at s = 1e-4 the KL ranking must equal the likelihood ranking"


def test_overlap_curve_validates():
    mu, sigma = catalog(10, 2)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.10"):
        teaching.overlap_curve(np.zeros(2), mu, sigma, 11, [0.1])
    with pytest.raises(ValueError, match="s must be > 0"):
        teaching.overlap_curve(np.zeros(2), mu, sigma, 3, [0.0])
    with pytest.raises(ValueError, match="shape"):
        teaching.overlap_curve(np.zeros(3), mu, sigma, 3, [0.1])
    spreads = teaching.spread_grid(1e-3, 2.0, 13)
    assert spreads[0] == pytest.approx(2.0) and spreads[-1] == pytest.approx(1e-3)
    assert np.allclose(np.diff(np.log(spreads)), np.log(1e-3 / 2.0) / 12)


# --------------------------------------------------------------------------- prior and aggregate posterior


def test_mu_histogram_is_a_density_over_the_range():
    mu, _ = catalog(5000, 3)
    density, edges = teaching.mu_histogram(mu, bins=40, limit=4.0)
    assert density.shape == (3, 40) and edges.shape == (41,)
    width = edges[1] - edges[0]
    for j in range(3):
        inside = np.mean((mu[:, j] >= -4.0) & (mu[:, j] <= 4.0))
        assert density[j].sum() * width == pytest.approx(inside)
        counts = stats.binned_statistic(mu[:, j], None, "count", bins=40, range=(-4, 4)).statistic
        np.testing.assert_allclose(density[j], counts / (len(mu) * width))


def test_aggregate_density_is_the_mixture_of_the_posteriors():
    mu, sigma = catalog(700, 3)
    sigma = np.maximum(sigma, 0.05)
    grid = np.linspace(-8, 8, 801)
    agg = teaching.aggregate_density(mu, sigma, grid, chunk=128)
    for j in range(3):
        for x in (-1.0, 0.0, 2.5):
            assert teaching.aggregate_density(mu, sigma, [x])[j, 0] == pytest.approx(
                stats.norm.pdf(x, mu[:, j], sigma[:, j]).mean(), rel=1e-6)
        inside = np.mean(stats.norm.cdf(8, mu[:, j], sigma[:, j]) - stats.norm.cdf(-8, mu[:, j], sigma[:, j]))
        assert np.trapezoid(agg[j], grid) == pytest.approx(inside, abs=2e-3)


# --------------------------------------------------------------------------- choosing what to show


def test_widest_contrast_is_the_brute_force_argmax():
    _, sigma = catalog(50, 5)
    a, candidates = 3, [3, 10, 20, 30, 40]
    b, j = teaching.widest_contrast(a, candidates, sigma)
    best = max((math.log(sigma[c, k] / sigma[a, k]), c, k) for c in candidates if c != a for k in range(5))
    assert (b, j) == (best[1], best[2])
    assert teaching.contrast_dimension(sigma[a], sigma[b]) == int(np.argmax(np.abs(np.log(sigma[a] / sigma[b]))))
    with pytest.raises(ValueError, match="no candidate"):
        teaching.widest_contrast(a, [a], sigma)


def test_class_prototype_and_contrasting_class():
    mu, _ = catalog(300, 3)
    labels = np.arange(300) % 10
    for label in (0, 7):
        members = [i for i in range(300) if labels[i] == label]
        centre = mu[members].mean(0)
        expected = min(members, key=lambda i: float(np.sum((mu[i] - centre) ** 2)))
        assert teaching.class_prototype(mu, labels, label) == expected
    partners = [teaching.contrasting_class(c) for c in range(10)]
    assert sorted(partners) == list(range(10)) and all(p != c for c, p in enumerate(partners))
    assert [teaching.contrasting_class(p) for p in partners] == list(range(10))  # pairs
    with pytest.raises(ValueError, match="no item has class"):
        teaching.class_prototype(mu, labels, 11)


def test_pixel_spread_is_the_population_std():
    frames = np.random.default_rng(0).random((8, 5, 4))
    ref = torch.std(t(frames), dim=0, unbiased=False).numpy()
    np.testing.assert_allclose(teaching.pixel_spread(frames), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="n >= 2"):
        teaching.pixel_spread(frames[:1])


def test_inputs_are_not_modified():
    mu, sigma = catalog(20, 3)
    z = np.ones(3)
    before = (mu.copy(), sigma.copy(), z.copy())
    teaching.kl_identity(z, 0.2, mu, sigma)
    teaching.overlap_curve(z, mu, sigma, 5, [0.1, 1.0])
    teaching.aggregate_density(mu, sigma, np.linspace(-1, 1, 5))
    teaching.reparameterise(mu[0], sigma[0], np.ones((2, 3)))
    for a, b in zip(before, (mu, sigma, z), strict=True):
        np.testing.assert_array_equal(a, b)
