"""latent/uncertainty.py against scipy.stats, torch.distributions and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import mahalanobis
from torch.distributions import Chi2, Normal

from latent import uncertainty


def test_two_d_contours_hold_39_and_86_percent_not_68_and_95():
    rng = np.random.default_rng(0)
    radius = np.linalg.norm(rng.standard_normal((200_000, 2)), axis=1)
    for r in (0.5, 1.0, 2.0, 3.0):
        mass = uncertainty.ellipse_mass(r)
        assert mass == pytest.approx(stats.chi2.cdf(r * r, 2), rel=1e-12)
        assert mass == pytest.approx(np.mean(radius <= r), abs=4e-3)  # Monte Carlo
    assert uncertainty.ellipse_mass(1.0) == pytest.approx(0.3935, abs=1e-4)
    assert uncertainty.ellipse_mass(2.0) == pytest.approx(0.8647, abs=1e-4)
    # In one dimension the same radii give the familiar 68% / 95%.
    assert uncertainty.ellipse_mass(1.0, dims=1) == pytest.approx(stats.norm.cdf(1) - stats.norm.cdf(-1))
    np.testing.assert_allclose(uncertainty.ellipse_mass(np.array([1.0, 2.0]), dims=10),
                               stats.chi2.cdf([1.0, 4.0], 10))
    assert uncertainty.mass_label(1.0) == "1σ · 39%" and uncertainty.mass_label(2.0) == "2σ · 86%"
    with pytest.raises(ValueError, match="r must be finite and >= 0"):
        uncertainty.ellipse_mass(-1.0)
    with pytest.raises(ValueError, match="positive integer"):
        uncertainty.ellipse_mass(1.0, dims=0)


@settings(max_examples=30, deadline=None)
@given(cx=st.floats(-5, 5), cy=st.floats(-5, 5), sx=st.floats(1e-3, 3), sy=st.floats(1e-3, 3), r=st.floats(0.1, 3))
def test_ellipse_points_lie_on_the_r_sigma_contour(cx, cy, sx, sy, r):
    pts = uncertainty.ellipse_points([cx, cy], [sx, sy], r, n_points=49)
    assert pts.shape == (49, 2)
    np.testing.assert_array_equal(pts[0], pts[-1])  # closed
    m2 = ((pts[:, 0] - cx) / sx) ** 2 + ((pts[:, 1] - cy) / sy) ** 2
    np.testing.assert_allclose(m2, r * r, rtol=1e-9)
    assert (pts[:, 0].max() - pts[:, 0].min()) / 2 == pytest.approx(r * sx, rel=1e-9)
    assert (pts[:, 1].max() - pts[:, 1].min()) / 2 == pytest.approx(r * sy, rel=1e-3)  # 49 angles miss the pole


def test_ellipse_points_validate():
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        uncertainty.ellipse_points([0, 0, 0], [1, 1])
    with pytest.raises(ValueError, match="sigma finite and > 0"):
        uncertainty.ellipse_points([0, 0], [1, 0])
    with pytest.raises(ValueError, match="r must be finite and > 0"):
        uncertainty.ellipse_points([0, 0], [1, 1], r=0)


def test_squared_mahalanobis_matches_scipy():
    rng = np.random.default_rng(1)
    mu, sigma = rng.normal(size=(30, 4)), rng.uniform(0.01, 2.0, (30, 4))
    z = rng.normal(size=4)
    m2 = uncertainty.squared_mahalanobis(z, mu, sigma)
    ref = [mahalanobis(z, mu[i], np.diag(1.0 / sigma[i] ** 2)) ** 2 for i in range(30)]
    np.testing.assert_allclose(m2, ref, rtol=1e-10)


@pytest.mark.parametrize("level, dims", [(0.5, 2), (0.95, 2), (0.95, 10), (0.99, 10), (0.9, 1)])
def test_coverage_radius_is_the_chi_squared_quantile(level, dims):
    q = uncertainty.coverage_radius2(level, dims)
    assert float(Chi2(torch.tensor(float(dims), dtype=torch.float64)).cdf(torch.tensor(q, dtype=torch.float64))) \
        == pytest.approx(level, abs=1e-9)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        uncertainty.coverage_radius2(1.0, dims)


def test_a_posterior_covers_its_own_draws_at_the_chosen_rate():
    mu, sigma = np.array([[0.5, -1.0, 2.0, 0.0, 0.3]]), np.array([[0.1, 0.5, 2.0, 1.0, 0.05]])
    torch.manual_seed(0)
    draws = Normal(torch.tensor(mu[0]), torch.tensor(sigma[0])).sample((3000,)).numpy()
    for level in (0.5, 0.95):
        rate = np.mean([uncertainty.covering(z, mu, sigma, level)[0] for z in draws])
        assert rate == pytest.approx(level, abs=0.03)


def test_coverage_is_fair_to_broad_and_narrow_posteriors_unlike_a_log_density_threshold():
    # Two items with z at the same Mahalanobis distance (1.5 sigma in each of 3 dimensions), one 100x broader.
    z = np.zeros(3)
    sigma = np.array([[0.05] * 3, [5.0] * 3])
    mu = 1.5 * sigma
    covered = uncertainty.covering(z, mu, sigma, 0.95)
    assert covered.tolist() == [True, True]
    assert not uncertainty.covering(z, mu, sigma, 0.5).any()
    # The log-density at z differs by 3 log(100) = 13.8 nats, so any threshold on it would treat them apart.
    logq = Normal(torch.tensor(mu), torch.tensor(sigma)).log_prob(torch.tensor(z)).sum(1).numpy()
    assert logq[0] - logq[1] == pytest.approx(3 * math.log(100.0))
