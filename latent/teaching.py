"""The maths behind the Learn page, with the live numbers filled in.

Each item x is encoded as the diagonal Gaussian q(z|x) = N(mu, diag(sigma^2)) in d dimensions. This module
computes, for one query z and one item, the pieces that the Learn page shows and explains:

- the reparameterisation trick, ``z = mu + sigma * eps`` with ``eps ~ N(0, I)``;
- the log-likelihood ``log q(z|x) = -sum_j (z_j - mu_j)^2 / (2 sigma_j^2) - sum_j log sigma_j - d/2 log 2 pi``,
  split into its quadratic (distance) term and its normaliser (the "broad posterior penalty");
- the KL divergence of the fuzzy query N(z, diag(s^2)) from the item's posterior,
  ``KL = sum_j [log(sigma_j / s_j) + (s_j^2 + (z_j - mu_j)^2) / (2 sigma_j^2) - 1/2]``, and the identity

      KL = -log q(z|x) + sum_j s_j^2 / (2 sigma_j^2) + c(s),   c(s) = -sum_j log s_j - d/2 (1 + log 2 pi),

  whose middle term vanishes as s -> 0 and whose last term is the same for every item: so as s shrinks,
  ranking by KL becomes ranking by likelihood (:func:`overlap_curve` measures it on the live ranking);
- the aggregate posterior q(z_j) = 1/N sum_i N(z_j; mu_ij, sigma_ij^2) against the prior N(0, 1), the two
  distributions that the KL term of the ELBO pulls together (:func:`aggregate_density`, :func:`mu_histogram`).

The ``*_latex`` functions return LaTeX (for ``st.latex``) with the numbers written in; they do not import
streamlit. All functions take and return numpy arrays (float64 out) and never modify their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .scores import KERNELS, check_catalog, check_query, check_spread

_LOG_2PI = math.log(2.0 * math.pi)


def _vector(value: ArrayLike, name: str, d: int | None = None) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1 or (d is not None and array.shape != (d,)):
        want = f"({d},)" if d is not None else "(d,)"
        raise ValueError(f"{name} must have shape {want}; got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite; it holds NaN or inf")
    return array


def _item(z: ArrayLike, mu: ArrayLike, sigma: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate one query and one item's posterior, each (d,); sigma > 0."""
    m = _vector(mu, "mu")
    s = _vector(sigma, "sigma", m.shape[0])
    if not np.all(s > 0):
        raise ValueError("sigma must be > 0 in every dimension")
    return _vector(z, "z", m.shape[0]), m, s


def _spread(s: ArrayLike | float, d: int) -> np.ndarray:
    """The query spread as a (d,) float64 array (a scalar is repeated)."""
    return np.broadcast_to(check_spread(s, d), (d,)).astype(np.float64)


def num(x: float, digits: int = 3) -> str:
    """A number for a formula: fixed ``digits`` decimals, a true minus sign, and no ``-0.000``."""
    text = f"{float(x):.{digits}f}"
    if float(text) == 0.0:
        text = f"{0.0:.{digits}f}"
    return text


def signed(x: float, digits: int = 3) -> str:
    """:func:`num`, in parentheses when negative, for after a minus or times sign: ``(-0.152)``."""
    text = num(x, digits)
    return f"({text})" if text.startswith("-") else text


# --------------------------------------------------------------------------- the reparameterisation trick


def draw_eps(seed: int, n: int, d: int) -> np.ndarray:
    """``n`` draws of eps ~ N(0, I_d) from numpy's PCG64 seeded with ``seed``: (n, d) float64.

    The same seed always gives the same eps, so a link that carries the seed reproduces the samples.
    """
    if int(n) < 1 or int(d) < 1:
        raise ValueError(f"n and d must be >= 1; got n={n!r}, d={d!r}")
    return np.random.default_rng(int(seed)).standard_normal((int(n), int(d)))


def reparameterise(mu: ArrayLike, sigma: ArrayLike, eps: ArrayLike) -> np.ndarray:
    """``z = mu + sigma * eps``: samples of N(mu, diag(sigma^2)) that are differentiable in mu and sigma.

    Args:
        mu, sigma: (d,) one posterior.
        eps: (n, d) standard normal draws (or (d,) for one).

    Returns:
        float64 of eps's shape.
    """
    m = _vector(mu, "mu")
    s = _vector(sigma, "sigma", m.shape[0])
    e = np.asarray(eps, dtype=np.float64)
    if e.shape[-1:] != m.shape or e.ndim > 2:
        raise ValueError(f"eps must have shape (n, {m.shape[0]}) or ({m.shape[0]},); got {e.shape}")
    return m + s * e  # (n, d)


# --------------------------------------------------------------------------- the log-likelihood


@dataclass(frozen=True)
class LikelihoodTerms:
    """``log q(z|x) = -sum(quadratic) - sum(log_sigma) - constant`` for one query and one item.

    Attributes:
        z, mu, sigma: (d,) the query and the item's posterior.
        quadratic: (d,) ``(z_j - mu_j)^2 / (2 sigma_j^2)``, the distance in units of sigma.
        log_sigma: (d,) ``log sigma_j``, the normaliser: a broad posterior spreads its density thin.
        constant: ``d/2 log 2 pi``, the same for every item.
    """

    z: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    quadratic: np.ndarray
    log_sigma: np.ndarray
    constant: float

    @property
    def per_dimension(self) -> np.ndarray:
        """(d,) ``log N(z_j; mu_j, sigma_j^2)``, which sums to :attr:`total`."""
        return -self.quadratic - self.log_sigma - 0.5 * _LOG_2PI

    @property
    def total(self) -> float:
        return float(-self.quadratic.sum() - self.log_sigma.sum() - self.constant)


def likelihood_terms(z: ArrayLike, mu: ArrayLike, sigma: ArrayLike) -> LikelihoodTerms:
    """Split log q(z|x) for one item into its terms; z, mu and sigma are (d,)."""
    zz, m, s = _item(z, mu, sigma)
    u = (zz - m) / s  # (d,) standardised offsets
    return LikelihoodTerms(zz, m, s, 0.5 * u * u, np.log(s), 0.5 * m.shape[0] * _LOG_2PI)


def likelihood_latex(terms: LikelihoodTerms, label: str = "x", shown: int = 2, digits: int = 3) -> str:
    """``st.latex`` source: the log-likelihood formula, the first ``shown`` dimensions written out, and the total."""
    d = len(terms.mu)
    first = " + ".join(
        rf"\frac{{({num(terms.z[j], digits)} - {signed(terms.mu[j], digits)})^2}}"
        rf"{{2 \cdot {num(terms.sigma[j], digits)}^2}}"
        for j in range(min(shown, d)))
    more = r" + \cdots" if d > shown else ""
    return (
        r"\begin{aligned}"
        rf"\log q(z \mid {label}) &= -\sum_{{j=1}}^{{{d}}} \frac{{(z_j - \mu_j)^2}}{{2\sigma_j^2}}"
        rf" - \sum_{{j=1}}^{{{d}}} \log\sigma_j - \frac{{{d}}}{{2}}\log 2\pi \\"
        rf"&= -\Big( {first}{more} \Big) - \sum_j \log\sigma_j - \frac{{{d}}}{{2}}\log 2\pi \\"
        rf"&= -{num(terms.quadratic.sum(), digits)} - {signed(terms.log_sigma.sum(), digits)}"
        rf" - {num(terms.constant, digits)} = {num(terms.total, digits)}"
        r"\end{aligned}"
    )


def normal_pdf(x: ArrayLike, mu: float, sigma: float) -> np.ndarray:
    """The 1-D density N(x; mu, sigma^2) on a grid: x (G,) -> (G,) float64."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma!r}")
    u = (np.asarray(x, dtype=np.float64) - mu) / sigma
    return np.exp(-0.5 * u * u) / (sigma * math.sqrt(2.0 * math.pi))


def contrast_dimension(sigma_a: ArrayLike, sigma_b: ArrayLike) -> int:
    """The dimension where two posteriors differ most in width: ``argmax_j |log sigma_a_j - log sigma_b_j|``."""
    a = _vector(sigma_a, "sigma_a")
    b = _vector(sigma_b, "sigma_b", a.shape[0])
    return int(np.argmax(np.abs(np.log(a) - np.log(b))))



@dataclass(frozen=True)
class Penalty:
    """One item's log q(z|x) split as the broad-posterior comparison shows it, next to the Euclidean distance.

    ``total = distance + width + constant``, with (sums over the d dimensions):

    Attributes:
        euclidean: ``||z - mu||``, the distance that ignores sigma.
        distance: ``-sum_j (z_j - mu_j)^2 / (2 sigma_j^2)``, the distance in units of the item's sigma.
        width: ``-sum_j log sigma_j``, the penalty of a broad posterior.
        constant: ``-(d/2) log 2 pi``, the same for every item.
        total: ``log q(z|x)``.
    """

    euclidean: float
    distance: float
    width: float
    constant: float
    total: float


def penalty(z: ArrayLike, mu: ArrayLike, sigma: ArrayLike) -> Penalty:
    """:class:`Penalty` for one query z and one item's posterior (mu, sigma), each (d,)."""
    t = likelihood_terms(z, mu, sigma)
    return Penalty(float(np.linalg.norm(t.z - t.mu)), -float(t.quadratic.sum()), -float(t.log_sigma.sum()),
                   -t.constant, t.total)


def density_window(z: float, mus: Sequence[float], sigmas: Sequence[float], n: int = 400) -> np.ndarray:
    """A grid (n,) centred on z that shows the 1-D posteriors N(mu_i, sigma_i^2) and z together.

    Half-width ``max(4 max_i sigma_i, max_i |z - mu_i| + 0.5)``: each density's bulk, and each mean with a margin.
    """
    m = np.asarray(mus, dtype=np.float64)
    s = np.asarray(sigmas, dtype=np.float64)
    centre = float(z)
    half = max(4.0 * float(s.max()), float(np.abs(centre - m).max()) + 0.5)
    return np.linspace(centre - half, centre + half, int(n))


def width_gap(sigma_a: float, sigma_b: float) -> float:
    """``log(sigma_b / sigma_a)``: in nats, how much lower the peak of N(mu_b, sigma_b^2) is than N(mu_a, sigma_a^2)'s
    (positive when b is the broader); the factor between the two widths is its exponential."""
    if not (sigma_a > 0 and sigma_b > 0):
        raise ValueError(f"sigmas must be > 0; got {sigma_a!r}, {sigma_b!r}")
    return float(np.log(np.float64(sigma_b) / np.float64(sigma_a)))


# --------------------------------------------------------------------------- KL and the identity


@dataclass(frozen=True)
class KLTerms:
    """``KL(N(z, s^2) || N(mu, sigma^2)) = sum_j [log_ratio_j + quadratic_j - 1/2]`` for one item.

    Attributes:
        s: (d,) the query spread.
        log_ratio: (d,) ``log(sigma_j / s_j)``.
        quadratic: (d,) ``(s_j^2 + (z_j - mu_j)^2) / (2 sigma_j^2)``.
    """

    z: np.ndarray
    s: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    log_ratio: np.ndarray
    quadratic: np.ndarray

    @property
    def per_dimension(self) -> np.ndarray:
        return self.log_ratio + self.quadratic - 0.5

    @property
    def total(self) -> float:
        return float(self.per_dimension.sum())


def kl_terms(z: ArrayLike, s: ArrayLike | float, mu: ArrayLike, sigma: ArrayLike) -> KLTerms:
    """The closed-form Gaussian KL for one item, term by term; z, mu, sigma (d,), s scalar or (d,)."""
    zz, m, sg = _item(z, mu, sigma)
    ss = _spread(s, m.shape[0])
    diff = zz - m  # (d,)
    return KLTerms(zz, ss, m, sg, np.log(sg / ss), (ss * ss + diff * diff) / (2.0 * sg * sg))


def kl_latex(terms: KLTerms, label: str = "x", digits: int = 3) -> str:
    """``st.latex`` source: the closed form of the KL with this item's sums written in."""
    d = len(terms.mu)
    return (
        r"\begin{aligned}"
        rf"\mathrm{{KL}}\big(\mathcal{{N}}(z, s^2) \,\|\, q(z \mid {label})\big) &= \sum_{{j=1}}^{{{d}}}"
        r" \Big[ \log\frac{\sigma_j}{s_j} + \frac{s_j^2 + (z_j - \mu_j)^2}{2\sigma_j^2} - \frac{1}{2} \Big] \\"
        rf"&= {num(terms.log_ratio.sum(), digits)} + {signed(terms.quadratic.sum(), digits)} - \frac{{{d}}}{{2}}"
        rf" = {num(terms.total, digits)}"
        r"\end{aligned}"
    )


@dataclass(frozen=True)
class KLIdentity:
    """``kl = neg_log_likelihood + spread_penalty + constant``, for one item or every item.

    Attributes:
        kl: KL(N(z, s^2) || q(z|x)).
        neg_log_likelihood: -log q(z|x).
        spread_penalty: ``sum_j s_j^2 / (2 sigma_j^2)``: it depends on the item, and goes to 0 with s.
        constant: ``c(s) = -sum_j log s_j - d/2 (1 + log 2 pi)``: the same for every item.
    """

    kl: np.ndarray | float
    neg_log_likelihood: np.ndarray | float
    spread_penalty: np.ndarray | float
    constant: float


def kl_identity(z: ArrayLike, s: ArrayLike | float, mu: ArrayLike, sigma: ArrayLike) -> KLIdentity:
    """The decomposition of KL into likelihood, spread penalty and constant.

    Args:
        z: (d,) the query.
        s: scalar or (d,) the query spread, > 0.
        mu, sigma: (d,) for one item (floats out) or (N, d) for the catalog ((N,) arrays out).
    """
    single = np.ndim(mu) == 1
    mu2, sigma2 = check_catalog(np.atleast_2d(mu), np.atleast_2d(sigma))
    zz = check_query(z, mu2.shape[1])
    ss = _spread(s, mu2.shape[1])
    kl = KERNELS["kl"](zz, mu2, sigma2, ss)  # (N,)
    nll = -KERNELS["likelihood"](zz, mu2, sigma2, ss)  # (N,)
    penalty = np.add.reduce(ss * ss / (2.0 * sigma2 * sigma2), axis=1)  # (N,)
    constant = float(-np.log(ss).sum() - 0.5 * mu2.shape[1] * (1.0 + _LOG_2PI))
    if single:
        return KLIdentity(float(kl[0]), float(nll[0]), float(penalty[0]), constant)
    return KLIdentity(kl, nll, penalty, constant)


def identity_latex(identity: KLIdentity, digits: int = 3) -> str:
    """``st.latex`` source: KL = -log q + sum s^2/(2 sigma^2) + c(s) with this item's numbers under each term."""
    return (
        r"\underbrace{\mathrm{KL}}_{" + num(float(identity.kl), digits) + r"}"
        r" = \underbrace{-\log q(z \mid x)}_{" + num(float(identity.neg_log_likelihood), digits) + r"}"
        r" + \underbrace{\sum_j \frac{s_j^2}{2\sigma_j^2}}_{" + num(float(identity.spread_penalty), digits) + r"}"
        r" + \underbrace{c(s)}_{" + num(identity.constant, digits) + r"},"
        r"\qquad c(s) = -\sum_j \log s_j - \frac{d}{2}(1 + \log 2\pi)"
    )


def top_k(values: ArrayLike, k: int, higher_is_nearer: bool) -> np.ndarray:
    """Indices of the k nearest values, nearest first; ties go to the smaller index. (N,) -> (min(k, N),)."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(-v if higher_is_nearer else v, kind="stable")
    return order[: int(k)]


def shared_items(a: ArrayLike, b: ArrayLike) -> int:
    """How many items two rankings (item numbers, (k,) each) have in common: |A ∩ B|."""
    return len(np.intersect1d(np.asarray(a), np.asarray(b)))


def spread_grid(low: float = 1e-3, high: float = 2.0, n: int = 13) -> np.ndarray:
    """``n`` query spreads from ``high`` down to ``low``, evenly spaced on a log scale: (n,)."""
    if not (0 < low < high) or int(n) < 2:
        raise ValueError(f"need 0 < low < high and n >= 2; got low={low!r}, high={high!r}, n={n!r}")
    return np.geomspace(high, low, int(n))


def overlap_curve(z: ArrayLike, mu: ArrayLike, sigma: ArrayLike, k: int, spreads: Sequence[float] | np.ndarray
                  ) -> np.ndarray:
    """For each spread s: |top-k by KL(N(z, s^2) || q) ∩ top-k by log q(z|x)| / k over the catalog.

    By :func:`kl_identity`, the KL ranking differs from the likelihood ranking only through
    ``sum_j s_j^2 / (2 sigma_j^2)``, so the overlap tends to 1 as s -> 0.

    Args:
        z: (d,) the query; mu, sigma: (N, d) the catalog; k: list length, 1 <= k <= N.
        spreads: (S,) scalar spreads (one s for every dimension), each > 0.

    Returns:
        (S,) float64 fractions in [0, 1].
    """
    mu2, sigma2 = check_catalog(mu, sigma)
    zz = check_query(z, mu2.shape[1])
    if not 1 <= int(k) <= len(mu2):
        raise ValueError(f"k must be in 1..{len(mu2)}; got {k!r}")
    like = top_k(KERNELS["likelihood"](zz, mu2, sigma2, np.float64(1.0)), k, higher_is_nearer=True)
    out = []
    for s in np.asarray(spreads, dtype=np.float64).ravel():
        ss = check_spread(s, mu2.shape[1])
        kl = top_k(KERNELS["kl"](zz, mu2, sigma2, ss), k, higher_is_nearer=False)
        out.append(len(np.intersect1d(kl, like)) / int(k))
    return np.asarray(out, dtype=np.float64)


# --------------------------------------------------------------------------- the prior and the aggregate posterior


def prior_density(grid: ArrayLike) -> np.ndarray:
    """The prior N(0, 1) of one latent dimension on a grid: (G,) -> (G,)."""
    return normal_pdf(grid, 0.0, 1.0)


def mu_histogram(mu: ArrayLike, bins: int = 60, limit: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension density histograms of the catalog means on the common range [-limit, limit].

    Args:
        mu: (N, d) the catalog means.

    Returns:
        ``(density, edges)``: (d, bins) densities (each integrates to the fraction of means inside the
        range, so it can be drawn against the prior's density) and the (bins + 1,) bin edges.
    """
    m = np.asarray(mu, dtype=np.float64)
    if m.ndim != 2 or len(m) == 0:
        raise ValueError(f"mu must have shape (N, d) with N >= 1; got {m.shape}")
    edges = np.linspace(-limit, limit, int(bins) + 1)
    width = edges[1] - edges[0]
    counts = np.stack([np.histogram(m[:, j], bins=edges)[0] for j in range(m.shape[1])])  # (d, bins)
    return counts / (len(m) * width), edges


def aggregate_density(mu: ArrayLike, sigma: ArrayLike, grid: ArrayLike, chunk: int = 8192) -> np.ndarray:
    """The aggregate posterior of each dimension on a grid: ``q(z_j) = 1/N sum_i N(z_j; mu_ij, sigma_ij^2)``.

    This mixture of all the posteriors is what the KL term of the ELBO pushes towards the prior N(0, 1).
    The N * d * G Gaussian terms are evaluated in float32 (faster, and the catalog is float32 anyway) and
    summed in float64, which keeps the relative error near 1e-7.

    Args:
        mu, sigma: (N, d) the catalog.
        grid: (G,) points.
        chunk: items per block (bounds memory at chunk * G * d floats).

    Returns:
        (d, G) float64 densities.
    """
    mu2, sigma2 = check_catalog(mu, sigma)
    x = np.asarray(grid, dtype=np.float32).ravel()
    total = np.zeros((mu2.shape[1], len(x)))
    for start in range(0, len(mu2), int(chunk)):
        m = mu2[start : start + int(chunk), :, None].astype(np.float32)  # (B, d, 1)
        s = sigma2[start : start + int(chunk), :, None].astype(np.float32)
        u = (x[None, None, :] - m) / s  # (B, d, G)
        total += (np.exp(-0.5 * u * u) / s).sum(axis=0, dtype=np.float64)
    return total / (len(mu2) * math.sqrt(2.0 * math.pi))



def widest_contrast(a: int, candidates: ArrayLike, sigma: ArrayLike) -> tuple[int, int]:
    """The candidate b and dimension j where b's posterior is broadest relative to item a's.

    ``argmax_{b, j} log sigma_bj - log sigma_aj`` over ``candidates`` (item numbers, a excluded): the pair
    that shows the broad-posterior penalty most clearly. Ties go to the first candidate, then the lower j.

    Returns:
        ``(b, j)``.
    """
    s = np.asarray(sigma, dtype=np.float64)
    ids = [int(i) for i in np.asarray(candidates).ravel() if int(i) != int(a)]
    if not ids:
        raise ValueError("no candidate items other than a to compare with")
    ratio = np.log(s[ids]) - np.log(s[int(a)])  # (m, d)
    row, col = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return ids[int(row)], int(col)


def class_prototype(mu: ArrayLike, labels: ArrayLike, label: int) -> int:
    """The item of class ``label`` whose mean is nearest (Euclidean) to the class's average mean."""
    m = np.asarray(mu, dtype=np.float64)
    members = np.flatnonzero(np.asarray(labels) == label)
    if len(members) == 0:
        raise ValueError(f"no item has class {label}")
    centre = m[members].mean(axis=0)  # (d,)
    return int(members[np.argmin(((m[members] - centre) ** 2).sum(axis=1))])


def contrasting_class(label: int, n_classes: int = 10) -> int:
    """A fixed partner class for demonstrations: ``(label + n_classes // 2) % n_classes``.

    For Fashion-MNIST this pairs visually different garments: T-shirt/Sandal, Trouser/Shirt, Pullover/Sneaker,
    Dress/Bag, Coat/Ankle boot.
    """
    return (int(label) + n_classes // 2) % n_classes


def pixel_spread(frames: ArrayLike) -> np.ndarray:
    """Per-pixel standard deviation over decoded samples: (n, H, W) -> (H, W) float64 (population std)."""
    f = np.asarray(frames, dtype=np.float64)
    if f.ndim != 3 or len(f) < 2:
        raise ValueError(f"frames must have shape (n, H, W) with n >= 2; got {f.shape}")
    return f.std(axis=0)
