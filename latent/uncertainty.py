"""Posterior uncertainty made visible: ellipses of diagonal Gaussians and which posteriors cover a point.

Every catalog item is a diagonal Gaussian q(z|x) = N(mu, diag(sigma^2)) in d dimensions. Two facts about
such a Gaussian drive the pictures on the maps:

- **Contours hold chi-squared mass.** The squared Mahalanobis distance
  ``m^2(z) = sum_j (z_j - mu_j)^2 / sigma_j^2`` of a draw from the Gaussian is chi-squared with as many
  degrees of freedom as dimensions. Drawn in a 2-D view of two latent dimensions (the marginal is again
  Gaussian, with the two sigmas as semi-axes), the "r-sigma" ellipse ``m^2 = r^2`` holds
  ``P(chi2_2 <= r^2) = 1 - exp(-r^2 / 2)`` of the mass: 39.3% for r = 1 and 86.5% for r = 2, not the 68% and
  95% of the 1-D rule.
- **Coverage is a Mahalanobis test, not a density threshold.** An item's posterior *covers* z at level
  ``alpha`` when z lies inside its central ``alpha`` ellipsoid: ``m^2(z) <= F^{-1}_{chi2_d}(alpha)``. A threshold
  on log q(z|x) instead would also include the ``-sum log sigma`` term and so favour narrow posteriors.

Arrays are float64 on output; inputs are never modified. Nothing here imports streamlit.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from .scores import check_catalog, check_query

#: The contours drawn around each posterior on a 2-D map, in units of sigma.
ELLIPSE_RADII: tuple[float, ...] = (1.0, 2.0)


def _check_level(level: float) -> float:
    value = float(level)
    if not (0.0 < value < 1.0):
        raise ValueError(f"level must be a probability strictly between 0 and 1; got {level!r}")
    return value


def _check_dof(dof: int) -> int:
    if isinstance(dof, bool) or int(dof) != dof or int(dof) < 1:
        raise ValueError(f"the degrees of freedom must be a positive integer; got {dof!r}")
    return int(dof)


def ellipse_mass(r: float | ArrayLike, dims: int = 2) -> float | np.ndarray:
    """Probability mass of a ``dims``-D Gaussian inside its r-sigma contour: ``P(chi2_dims <= r^2)``.

    For ``dims = 2`` this is ``1 - exp(-r^2 / 2)`` (0.393 for r = 1, 0.865 for r = 2); for ``dims = 1`` it is
    the familiar 68% / 95% rule. Returns a float for a scalar r, else an array of r's shape.
    """
    dof = _check_dof(dims)
    radius = np.asarray(r, dtype=np.float64)
    if not np.all(np.isfinite(radius)) or np.any(radius < 0):
        raise ValueError(f"r must be finite and >= 0; got {r!r}")
    if dof == 2:
        mass = -np.expm1(-0.5 * radius * radius)  # 1 - exp(-r^2/2), exact for the 2-D case
    else:
        mass = stats.chi2.cdf(radius * radius, dof)
    return float(mass) if mass.ndim == 0 else mass


def mass_label(r: float, dims: int = 2) -> str:
    """The label of an r-sigma contour in ``dims`` dimensions, e.g. ``"1σ · 39%"`` for r = 1 in 2-D."""
    return f"{r:g}σ · {100.0 * ellipse_mass(r, dims):.0f}%"


def ellipse_points(centre: ArrayLike, sigma: ArrayLike, r: float = 1.0, n_points: int = 73) -> np.ndarray:
    """The r-sigma contour of an axis-aligned 2-D Gaussian N(centre, diag(sigma^2)) as a closed polygon.

    Points ``centre + r * sigma * (cos t, sin t)`` for ``n_points`` angles t from 0 to 2 pi (the first and last
    point coincide). The semi-axes are ``r * sigma[0]`` and ``r * sigma[1]``.

    Args:
        centre: (2,) the mean in the two chosen dimensions.
        sigma: (2,) the standard deviations in those dimensions, > 0.
        r: the contour's radius in sigmas, > 0.
        n_points: number of polygon vertices, >= 4.

    Returns:
        (n_points, 2) float64.
    """
    c = np.asarray(centre, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)
    if c.shape != (2,) or s.shape != (2,):
        raise ValueError(f"centre and sigma must both have shape (2,); got {c.shape} and {s.shape}")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError("centre must be finite and sigma finite and > 0")
    if not (math.isfinite(r) and r > 0):
        raise ValueError(f"r must be finite and > 0; got {r!r}")
    if int(n_points) < 4:
        raise ValueError(f"n_points must be >= 4; got {n_points!r}")
    t = np.linspace(0.0, 2.0 * math.pi, int(n_points))
    points = c + r * s * np.stack([np.cos(t), np.sin(t)], axis=1)  # (n_points, 2)
    points[-1] = points[0]
    return points


def squared_mahalanobis(z: ArrayLike, mu: ArrayLike, sigma: ArrayLike) -> np.ndarray:
    """``m^2_i = sum_j (z_j - mu_ij)^2 / sigma_ij^2`` for every item: z (d,), mu and sigma (N, d) -> (N,)."""
    mu_array, sigma_array = check_catalog(mu, sigma)
    z_array = check_query(z, mu_array.shape[1])
    u = (z_array - mu_array) / sigma_array  # (N, d)
    return np.add.reduce(u * u, axis=1)


def coverage_radius2(level: float, dims: int) -> float:
    """The squared radius of the central ``level`` ellipsoid of a ``dims``-D Gaussian: ``F^{-1}_{chi2_dims}(level)``.

    E.g. 5.99 for 95% in 2-D, 18.31 for 95% in 10-D.
    """
    return float(stats.chi2.ppf(_check_level(level), _check_dof(dims)))


def covering(z: ArrayLike, mu: ArrayLike, sigma: ArrayLike, level: float = 0.95) -> np.ndarray:
    """Which posteriors cover z at ``level``: ``m^2_i(z) <= F^{-1}_{chi2_d}(level)``, a (N,) bool mask.

    z lies inside item i's central ``level`` ellipsoid; ``level`` of the draws from q(z|x_i) fall inside it.
    Unlike a threshold on log q(z|x), this does not depend on the size of sigma, only on z's distance in
    units of sigma, so broad and narrow posteriors are treated alike.
    """
    m2 = squared_mahalanobis(z, mu, sigma)
    d = np.asarray(mu).shape[1]
    return m2 <= coverage_radius2(level, d)
