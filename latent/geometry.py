"""Riemannian geometry of the decoder: Jacobians, metrics, magnification, latent slices and measures.

The decoder maps a latent point z in R^d to an output in R^D (D = 784 flattened pixels here). Everything in
this module works on a :class:`Decoder`, a pair of plain callables on flattened outputs, so analytic maps
(linear maps, spheres, graphs of functions) can stand in for the VAE in tests; :func:`vae_decoder` adapts
:class:`latent.model.VAE`.

Geometry (see ``docs/geometry.md`` sections 2-5; Arvanitidis et al. 2018; Shao et al. 2018):

* Jacobian of the decoder mean mu(z):  J(z) = d mu / d z,  shape (D, d), by forward-mode autodiff
  (one JVP per latent direction, each broadcast over the whole batch).
* Pullback metric:  G(z) = J^T J  (d, d).  A curve c(t) has length  L = int sqrt(c'^T G c') dt  and energy
  E = int c'^T G c' dt.
* Bernoulli Fisher-Rao metric, with J_l the Jacobian of the logits l(z) and p = sigmoid(l):
  G_FR = J_l^T diag(p (1 - p)) J_l.  To second order, 2 KL(p_z || p_{z+delta}) = delta^T G_FR delta.
* Log magnification factor:  log MF = 0.5 log det G  (in float64; -inf where G is singular).
* 2-D slice z0 + s u + t v:  G_2 = B^T G B with B = [u v], i.e. [[|Ju|^2, Ju.Jv], [Ju.Jv, |Jv|^2]], needing
  only two JVPs; MF_2 = sqrt(det G_2) is the factor by which decoded area grows per unit of (s, t) area.

Measures (this project's measures, inspired by Frenzel, Teleaga and Ushio 2019, "Latent Space Cartography";
the formulas below are ours, not taken from the paper): any output dissimilarity D(x, y) between decoded
means gives a finite-difference measure  m_D(z) = (1/n) sum_j D(f(z), f(z + eps u_j)) / eps,  slice densities
from a decoded grid, curve lengths sum_k D(f(c_k), f(c_{k+1})) and graph edge weights. They live in the
registry :data:`MEASURES`: ``"l2"`` (the Euclidean distance between decoded means, whose first-order limit is
the pullback metric) and ``"bernoulli_kl"`` (sqrt(2 KL) between the Bernoulli distributions, whose first-order
limit is the Fisher-Rao metric).

Conventions: public functions accept numpy arrays or tensors for latent points and return numpy float64 for
metrics and magnification (the decoder itself runs in its own dtype, float32 for the VAE). Grids over a slice
are indexed ``[row, col] = [t index, s index]`` (rows follow v, columns follow u), as images and heatmaps are.
Nothing here changes torch's global state; wrap interactive calls in :func:`torch_threads` (one thread is
much faster for small batches on a busy 2-core machine, see docs/geometry.md section 4).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor
TensorFn = Callable[[torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]  # progress(done, total)

DEFAULT_BATCH = 1024  # points per decoder call in batched helpers


# --------------------------------------------------------------------------- decoder adapter


@dataclass(frozen=True)
class Decoder:
    """A decoder as plain callables on flattened outputs.

    Attributes:
        mean_fn: z (B, d) -> decoder mean (B, D). Must be a pure function of z (differentiable by torch.func).
        latent_dim: d.
        logits_fn: optional z (B, d) -> Bernoulli logits (B, D), with mean = sigmoid(logits). Needed for the
            Fisher-Rao metric.
        dtype: the dtype the callables expect; inputs are converted to it.
    """

    mean_fn: TensorFn
    latent_dim: int
    logits_fn: TensorFn | None = None
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        if int(self.latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {self.dtype}")

    @classmethod
    def from_logits(cls, logits_fn: TensorFn, latent_dim: int, dtype: torch.dtype = torch.float64) -> Decoder:
        """A Bernoulli decoder given by its logits; the mean is sigmoid(logits)."""
        return cls(mean_fn=lambda z: torch.sigmoid(logits_fn(z)), latent_dim=latent_dim, logits_fn=logits_fn,
                   dtype=dtype)

    def as_latent(self, z: ArrayLike, name: str = "z") -> torch.Tensor:
        """Validate and convert latent points to a new (N, d) tensor of this decoder's dtype."""
        return _latent_tensor(z, self.latent_dim, self.dtype, name)

    def mean(self, z: ArrayLike) -> torch.Tensor:
        """Decoder mean, (N, d) -> (N, D), with gradients enabled as the caller's mode says."""
        return self.mean_fn(self.as_latent(z))

    def logits(self, z: ArrayLike) -> torch.Tensor:
        """Bernoulli logits, (N, d) -> (N, D)."""
        return self.require_logits()(self.as_latent(z))

    def require_logits(self) -> TensorFn:
        if self.logits_fn is None:
            raise ValueError(
                "this decoder has no logits_fn; the Fisher-Rao metric needs a Bernoulli decoder "
                "(build it with Decoder.from_logits or vae_decoder)"
            )
        return self.logits_fn


def vae_decoder(model: Any) -> Decoder:
    """Adapt a :class:`latent.model.VAE` (or anything with ``decode(z) -> logits (B, 1, H, W)`` and
    ``config.latent_dim``) to a :class:`Decoder` with flattened outputs (B, H*W).

    The model is used as it is (call ``.eval()`` yourself; the VAE has no dropout or batch norm) and is never
    modified. The dtype follows the model's parameters, so ``copy.deepcopy(model).double()`` gives a float64
    decoder.
    """
    try:
        dtype = next(model.parameters()).dtype
    except (AttributeError, StopIteration):
        dtype = torch.float32
    latent_dim = int(model.config.latent_dim)

    def logits_fn(z: torch.Tensor) -> torch.Tensor:
        return model.decode(z).flatten(1)  # (B, H*W)

    return Decoder.from_logits(logits_fn, latent_dim, dtype=dtype)


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (process-wide), restoring it afterwards.

    On a contended 2-core machine one thread makes small decoder calls many times faster (docs/geometry.md
    section 4). The setting is global to the process, so concurrent callers share it.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _latent_tensor(z: ArrayLike, d: int, dtype: torch.dtype, name: str) -> torch.Tensor:
    """A validated (N, d) copy; copying keeps read-only numpy input and the caller's tensors untouched."""
    if isinstance(z, torch.Tensor):
        t = z.detach().to(dtype=dtype, copy=True)
    else:
        t = torch.tensor(np.asarray(z), dtype=dtype)
    if t.ndim != 2 or t.shape[1] != d:
        raise ValueError(f"{name} must have shape (N, {d}), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _vector(x: ArrayLike, d: int, name: str) -> np.ndarray:
    a = np.array(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)  # a copy
    if a.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _float64_tensor(a: ArrayLike) -> torch.Tensor:
    """A float64 tensor copy of an array or tensor (copies, so read-only numpy input is fine)."""
    if isinstance(a, torch.Tensor):
        return a.detach().to(dtype=torch.float64, copy=True)
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


@torch.no_grad()
def decode_means(decoder: Decoder, z: ArrayLike, *, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Decoder means at many points, in batches: (N, d) -> (N, D) numpy array in the decoder's dtype."""
    Z = decoder.as_latent(z)
    out = [decoder.mean_fn(Z[b]).detach() for b in _batches(len(Z), batch_size)]
    if not out:
        return np.zeros((0, 0), dtype=_np_dtype(decoder.dtype))
    return torch.cat(out).numpy()


def _np_dtype(dtype: torch.dtype) -> type:
    return np.float64 if dtype == torch.float64 else np.float32


# --------------------------------------------------------------------------- Jacobians and metrics


def _jvps(fn: TensorFn, Z: torch.Tensor, tangents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Primal fn(Z) (B, D) and the JVPs along each row of ``tangents`` (m, d), stacked as (B, D, m).

    Each tangent is broadcast over the batch (``expand_as``), so one call gives every row's JVP.
    """
    from torch.func import jvp  # imported on first use: it loads functorch, which is slow to import

    primal = None
    cols = []
    for i in range(tangents.shape[0]):
        primal, col = jvp(fn, (Z,), (tangents[i].expand_as(Z),))  # type: ignore[misc]  # 3 values only with has_aux
        cols.append(col)
    assert primal is not None
    return primal, torch.stack(cols, dim=-1)  # (B, D, m)


def _output_fn(decoder: Decoder, output: str) -> TensorFn:
    if output == "mean":
        return decoder.mean_fn
    if output == "logits":
        return decoder.require_logits()
    raise ValueError(f"unknown output {output!r}; choose one of: mean, logits")


@torch.no_grad()
def jacobian(decoder: Decoder, z: ArrayLike, *, output: str = "mean", batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Jacobian of the decoder mean (or logits) by forward-mode autodiff.

    Args:
        z: (N, d) latent points.
        output: ``"mean"`` for J = d mu / dz, or ``"logits"`` for J_l = d l / dz.

    Returns:
        (N, D, d) array in the decoder's dtype; ``J[n, :, i]`` is the JVP along the unit vector e_i.
    """
    Z = decoder.as_latent(z)
    fn = _output_fn(decoder, output)
    eye = torch.eye(decoder.latent_dim, dtype=decoder.dtype)
    parts = [_jvps(fn, Z[b], eye)[1] for b in _batches(len(Z), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, 0, decoder.latent_dim))


@torch.no_grad()
def pullback_metric(decoder: Decoder, z: ArrayLike, *, batch_size: int = DEFAULT_BATCH,
                    progress: ProgressFn | None = None) -> np.ndarray:
    """Pullback metric of the decoder mean, G = J^T J.

    Args:
        z: (N, d) latent points.
        progress: called as progress(points done, N) after each batch (for long runs over the catalog).

    Returns:
        (N, d, d) float64 symmetric positive semi-definite matrices.
    """
    Z = decoder.as_latent(z)
    eye = torch.eye(decoder.latent_dim, dtype=decoder.dtype)
    out = np.zeros((len(Z), decoder.latent_dim, decoder.latent_dim))
    for b in _batches(len(Z), batch_size):
        J = _jvps(decoder.mean_fn, Z[b], eye)[1].double()  # (B, D, d)
        out[b] = (J.transpose(1, 2) @ J).numpy()  # (B, d, d)
        if progress is not None:
            progress(b.stop, len(Z))
    return out


@torch.no_grad()
def fisher_rao_metric(decoder: Decoder, z: ArrayLike, *, batch_size: int = DEFAULT_BATCH,
                      progress: ProgressFn | None = None) -> np.ndarray:
    """Fisher-Rao metric of a Bernoulli decoder, G_FR = J_l^T diag(p (1 - p)) J_l with p = sigmoid(l).

    Args:
        z: (N, d) latent points.
        progress: called as progress(points done, N) after each batch.

    Returns:
        (N, d, d) float64 matrices.
    """
    Z = decoder.as_latent(z)
    fn = decoder.require_logits()
    eye = torch.eye(decoder.latent_dim, dtype=decoder.dtype)
    out = np.zeros((len(Z), decoder.latent_dim, decoder.latent_dim))
    for b in _batches(len(Z), batch_size):
        logits, J = _jvps(fn, Z[b], eye)
        p = torch.sigmoid(logits.double())
        w = p * (1.0 - p)  # (B, D) Bernoulli variance = Fisher information of the logit
        J = J.double()  # (B, D, d)
        out[b] = torch.einsum("bDi,bD,bDj->bij", J, w, J).numpy()
        if progress is not None:
            progress(b.stop, len(Z))
    return out


#: Metrics by name; all share the signature ``(decoder, z, *, batch_size, progress) -> (N, d, d)``.
METRICS: dict[str, Callable[..., np.ndarray]] = {
    "pullback": pullback_metric,
    "fisher_rao": fisher_rao_metric,
}


def _check_name(name: str, registry: dict[str, Any], what: str) -> None:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}")


def metric_tensor(decoder: Decoder, z: ArrayLike, kind: str = "pullback", *, batch_size: int = DEFAULT_BATCH,
                  progress: ProgressFn | None = None) -> np.ndarray:
    """The metric named ``kind`` (see :data:`METRICS`) at (N, d) points: (N, d, d) float64."""
    _check_name(kind, METRICS, "metric")
    return METRICS[kind](decoder, z, batch_size=batch_size, progress=progress)


def log_magnification(G: ArrayLike) -> np.ndarray:
    """Log magnification factor, log MF = 0.5 log det G, computed with ``slogdet`` in float64.

    Args:
        G: (..., k, k) metric matrices (k = d for the full space, k = 2 for a slice).

    Returns:
        (...) float64; ``-inf`` where det G <= 0 (collapsed directions make G singular).
    """
    g = np.asarray(G.detach().cpu() if isinstance(G, torch.Tensor) else G, dtype=np.float64)
    if g.ndim < 2 or g.shape[-1] != g.shape[-2]:
        raise ValueError(f"G must have shape (..., k, k), got {g.shape}")
    sign, logabs = np.linalg.slogdet(g)
    return np.where(sign > 0, 0.5 * logabs, -np.inf)


def log_magnification_at(decoder: Decoder, z: ArrayLike, kind: str = "pullback", *,
                         batch_size: int = DEFAULT_BATCH, progress: ProgressFn | None = None) -> np.ndarray:
    """0.5 log det G(z) of the full d-dimensional metric at (N, d) points: (N,) float64.

    Over the whole catalog this is slow (ten JVPs per point; minutes for 70k means): run it behind a button
    with ``progress`` and cache the result keyed by the model's hash.
    """
    return log_magnification(metric_tensor(decoder, z, kind, batch_size=batch_size, progress=progress))


@torch.no_grad()
def slice_metric(decoder: Decoder, z: ArrayLike, u: ArrayLike, v: ArrayLike, kind: str = "pullback", *,
                 batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Metric restricted to the plane spanned by u and v, G_2 = B^T G B with B = [u v], from two JVPs.

    For ``kind="pullback"``: G_2 = [[|Ju|^2, Ju.Jv], [Ju.Jv, |Jv|^2]]; for ``"fisher_rao"`` the products are
    weighted by p (1 - p) and use the Jacobian of the logits.

    Args:
        z: (N, d) points; u, v: (d,) directions.

    Returns:
        (N, 2, 2) float64.
    """
    _check_name(kind, METRICS, "metric")
    d = decoder.latent_dim
    Z = decoder.as_latent(z)
    B = torch.as_tensor(np.stack([_vector(u, d, "u"), _vector(v, d, "v")]), dtype=decoder.dtype)  # (2, d)
    fn = decoder.mean_fn if kind == "pullback" else decoder.require_logits()
    out = np.zeros((len(Z), 2, 2))
    for b in _batches(len(Z), batch_size):
        primal, JB = _jvps(fn, Z[b], B)
        JB = JB.double()  # (B, D, 2)
        if kind == "pullback":
            out[b] = (JB.transpose(1, 2) @ JB).numpy()
        else:
            p = torch.sigmoid(primal.double())
            out[b] = torch.einsum("bDi,bD,bDj->bij", JB, p * (1.0 - p), JB).numpy()
    return out


def slice_log_magnification(decoder: Decoder, z: ArrayLike, u: ArrayLike, v: ArrayLike, kind: str = "pullback",
                            *, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Exact log MF_2 = 0.5 log det G_2 on the plane spanned by u, v, at (N, d) points: (N,) float64."""
    return log_magnification(slice_metric(decoder, z, u, v, kind, batch_size=batch_size))


# --------------------------------------------------------------------------- measures


@dataclass(frozen=True)
class Measure:
    """An output dissimilarity D(x, y) between decoded means, used as this project's measure.

    Attributes:
        name: registry key.
        squared: (..., D), (..., D) -> (...) tensor, the squared dissimilarity D^2 (a length squared: it scales
            like |x - y|^2 for nearby outputs). Energies use it directly (no square root, so it is smooth at 0).
        metric: name in :data:`METRICS` of the Riemannian metric the measure reduces to for small steps
            (D(f(z), f(z + delta))^2 ~ delta^T G delta), or None.
        description: one line for the UI.
        symmetric: whether D(x, y) = D(y, x) exactly (graph weights symmetrise the others).
    """

    name: str
    squared: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: str | None
    description: str
    symmetric: bool = True

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """D(x, y) = sqrt(D^2), elementwise over leading dimensions."""
        return torch.sqrt(torch.clamp(self.squared(x, y), min=0.0))

    def symmetric_distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """sqrt((D(x, y)^2 + D(y, x)^2) / 2): D itself for symmetric measures; used for graph edge weights."""
        if self.symmetric:
            return self.distance(x, y)
        return torch.sqrt(torch.clamp(0.5 * (self.squared(x, y) + self.squared(y, x)), min=0.0))


def l2_squared(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x - y|^2 summed over the last axis: (..., D), (..., D) -> (...)."""
    return ((x - y) ** 2).sum(-1)


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(p) || Bernoulli(q)) summed over the last axis (pixels), in nats: (..., D) -> (...).

    KL = sum_i p_i log(p_i / q_i) + (1 - p_i) log((1 - p_i) / (1 - q_i)); p and q are clamped to
    [eps, 1 - eps] with eps the dtype's machine epsilon.
    """
    eps = torch.finfo(p.dtype).eps
    p = p.clamp(eps, 1.0 - eps)
    q = q.clamp(eps, 1.0 - eps)
    return (p * (torch.log(p) - torch.log(q)) + (1.0 - p) * (torch.log1p(-p) - torch.log1p(-q))).sum(-1)


def bernoulli_kl_squared(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """2 KL(Bernoulli(p) || Bernoulli(q)), the squared 'bernoulli_kl' measure (~ delta^T G_FR delta)."""
    return 2.0 * bernoulli_kl(p, q)


#: This project's measures by name (inspired by Frenzel et al. 2019; the definitions are ours).
MEASURES: dict[str, Measure] = {
    "l2": Measure(
        "l2", l2_squared, "pullback",
        "Euclidean distance between decoded means; to first order the pullback metric J^T J",
    ),
    "bernoulli_kl": Measure(
        "bernoulli_kl", bernoulli_kl_squared, "fisher_rao",
        "sqrt(2 KL) between the decoded Bernoulli distributions; to first order the Fisher-Rao metric",
        symmetric=False,
    ),
}


def get_measure(name: str | Measure) -> Measure:
    """Look up a measure by name (a :class:`Measure` passes through); ValueError lists the valid names."""
    if isinstance(name, Measure):
        return name
    _check_name(name, MEASURES, "measure")
    return MEASURES[name]


@torch.no_grad()
def finite_difference_measure(decoder: Decoder, z: ArrayLike, measure: str | Measure = "l2", *, eps: float = 1e-2,
                              directions: ArrayLike | None = None, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """This project's finite-difference measure of how fast the decoder changes around each point.

        m_D(z) = (1/n) sum_j D(f(z), f(z + eps u_j)) / eps

    with D the chosen measure and u_j the rows of ``directions`` (default: the d coordinate axes). For D = L2
    and eps -> 0 this tends to mean_j |J u_j|. D needs no derivatives, so any dissimilarity can be used.

    Args:
        z: (N, d) points; directions: (n, d); eps > 0.

    Returns:
        (N,) float64.
    """
    m = get_measure(measure)
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    Z = decoder.as_latent(z)
    U = (torch.eye(decoder.latent_dim, dtype=decoder.dtype) if directions is None
         else _latent_tensor(directions, decoder.latent_dim, decoder.dtype, "directions"))
    out = np.zeros(len(Z))
    for b in _batches(len(Z), max(1, batch_size // (len(U) + 1))):
        Zb = Z[b]
        f0 = decoder.mean_fn(Zb)  # (B, D)
        Zs = (Zb[:, None, :] + eps * U[None]).reshape(-1, Zb.shape[1])  # (B*n, d)
        fs = decoder.mean_fn(Zs).reshape(len(Zb), len(U), -1)  # (B, n, D)
        dist = m.distance(f0[:, None, :].double(), fs.double())  # (B, n)
        out[b] = (dist.mean(1) / eps).numpy()
    return out


# --------------------------------------------------------------------------- latent slices


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class LatentSlice:
    """A 2-D grid in the plane z = origin + s u + t v.

    Attributes:
        origin, u, v: (d,) float64 (read-only).
        s: (n_s,) node coordinates along u (columns); t: (n_t,) node coordinates along v (rows). Evenly spaced.

    Grids over the slice are indexed [row, col] = [t index, s index]. Cells lie between nodes: a (n_t, n_s)
    node grid has (n_t - 1, n_s - 1) cells.
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    s: np.ndarray
    t: np.ndarray

    @property
    def latent_dim(self) -> int:
        return int(self.origin.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(n_t, n_s): rows, columns of the node grid."""
        return (len(self.t), len(self.s))

    @property
    def spacing(self) -> tuple[float, float]:
        """(ds, dt): node spacing along u and along v."""
        return (float(self.s[1] - self.s[0]), float(self.t[1] - self.t[0]))

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(s_min, s_max, t_min, t_max)."""
        return (float(self.s[0]), float(self.s[-1]), float(self.t[0]), float(self.t[-1]))

    def to_latent(self, st: ArrayLike) -> np.ndarray:
        """Slice coordinates (n, 2) [s, t] -> latent points (n, d) = origin + s u + t v."""
        a = np.asarray(st, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"st must have shape (n, 2), got {a.shape}")
        return self.origin + a[:, :1] * self.u + a[:, 1:] * self.v

    def project(self, z: ArrayLike) -> np.ndarray:
        """Latent points (n, d) -> slice coordinates (n, 2) of their least-squares projection onto the plane."""
        a = np.asarray(z, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (n, {self.latent_dim}), got {a.shape}")
        B = np.stack([self.u, self.v], axis=1)  # (d, 2)
        return np.linalg.lstsq(B, (a - self.origin).T, rcond=None)[0].T

    def nodes(self) -> np.ndarray:
        """Latent points of the node grid, (n_t, n_s, d)."""
        S, T = np.meshgrid(self.s, self.t)  # (n_t, n_s) each
        return self.origin + S[..., None] * self.u + T[..., None] * self.v

    def cell_centres(self) -> np.ndarray:
        """Latent points at the cell centres, (n_t - 1, n_s - 1, d)."""
        sc = 0.5 * (self.s[1:] + self.s[:-1])
        tc = 0.5 * (self.t[1:] + self.t[:-1])
        S, T = np.meshgrid(sc, tc)
        return self.origin + S[..., None] * self.u + T[..., None] * self.v


def make_slice(origin: ArrayLike, u: ArrayLike, v: ArrayLike, *,
               extent: float | tuple[float, float, float, float] = 3.0,
               resolution: int | tuple[int, int] = 32) -> LatentSlice:
    """A slice grid through ``origin`` spanned by directions u and v (used as given, not normalised).

    Args:
        origin, u, v: (d,) vectors; u and v must be linearly independent.
        extent: half-width e (s and t in [-e, e]) or (s_min, s_max, t_min, t_max).
        resolution: nodes per axis, or (n_s, n_t); at least 2 each.
    """
    o = np.asarray(origin.detach().cpu() if isinstance(origin, torch.Tensor) else origin, dtype=np.float64)
    if o.ndim != 1 or o.size < 2:
        raise ValueError(f"origin must be a vector of length d >= 2, got shape {o.shape}")
    d = o.size
    o = _vector(o, d, "origin")
    uu, vv = _vector(u, d, "u"), _vector(v, d, "v")
    gram = np.array([[uu @ uu, uu @ vv], [uu @ vv, vv @ vv]])
    if np.linalg.det(gram) <= 1e-12 * max(gram[0, 0] * gram[1, 1], 1e-300):
        raise ValueError("u and v must be linearly independent (non-zero and not parallel)")
    box: tuple[float, ...]
    if isinstance(extent, (int, float, np.integer, np.floating)):
        e = float(extent)
        if not (e > 0 and math.isfinite(e)):
            raise ValueError(f"extent must be positive, got {extent}")
        box = (-e, e, -e, e)
    else:
        box = tuple(float(x) for x in extent)
        if len(box) != 4 or not (box[0] < box[1] and box[2] < box[3]) or not all(map(math.isfinite, box)):
            raise ValueError(f"extent must be e > 0 or (s_min, s_max, t_min, t_max) with min < max, got {extent}")
    n_s, n_t = (resolution, resolution) if isinstance(resolution, (int, np.integer)) else tuple(resolution)
    if int(n_s) < 2 or int(n_t) < 2:
        raise ValueError(f"resolution must be at least 2 nodes per axis, got {resolution}")
    return LatentSlice(_readonly(o), _readonly(uu), _readonly(vv), _readonly(np.linspace(box[0], box[1], int(n_s))),
                       _readonly(np.linspace(box[2], box[3], int(n_t))))


def axis_slice(origin: ArrayLike, i: int, j: int, **kwargs: Any) -> LatentSlice:
    """A slice through ``origin`` spanned by latent dimensions i and j (unit vectors); see :func:`make_slice`."""
    o = np.asarray(origin, dtype=np.float64)
    d = o.shape[-1] if o.ndim == 1 else 0
    if not (0 <= i < d and 0 <= j < d and i != j):
        raise ValueError(f"i and j must be distinct latent dimensions in 0..{d - 1}, got {i}, {j}")
    return make_slice(o, np.eye(d)[i], np.eye(d)[j], **kwargs)


def slice_through(origin: ArrayLike, a: ArrayLike, b: ArrayLike, *, margin: float = 1.25,
                  extent: float | tuple[float, float, float, float] | None = None,
                  resolution: int | tuple[int, int] = 32) -> LatentSlice:
    """The slice through three latent points: u = (a - origin)/|a - origin|, v = the unit part of b - origin
    orthogonal to u (Gram-Schmidt), so the slice coordinates are Euclidean in latent space.

    The default extent is symmetric and reaches ``margin`` times the farthest of a and b.
    """
    o = np.asarray(origin, dtype=np.float64)
    if o.ndim != 1:
        raise ValueError(f"origin must have shape (d,), got {o.shape}")
    d = o.size
    ua = _vector(a, d, "a") - o
    wb = _vector(b, d, "b") - o
    na = np.linalg.norm(ua)
    if na == 0:
        raise ValueError("a must differ from origin")
    u = ua / na
    w = wb - (wb @ u) * u
    nw = np.linalg.norm(w)
    if nw <= 1e-12 * max(float(np.linalg.norm(wb)), 1e-300):
        raise ValueError("a, b and origin are collinear; they do not span a plane")
    v = w / nw
    if extent is None:
        reach = max(float(na), float(abs(wb @ u)), float(abs(wb @ v)))
        extent = margin * reach
    return make_slice(o, u, v, extent=extent, resolution=resolution)


def decode_grid(decoder: Decoder, sl: LatentSlice, *, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Decode every node of a slice in one batch: (n_t, n_s, D) decoder means (decoder dtype)."""
    if sl.latent_dim != decoder.latent_dim:
        raise ValueError(f"slice has latent_dim {sl.latent_dim}, decoder has {decoder.latent_dim}")
    n_t, n_s = sl.shape
    return decode_means(decoder, sl.nodes().reshape(-1, sl.latent_dim), batch_size=batch_size).reshape(n_t, n_s, -1)


@torch.no_grad()
def grid_magnification(outputs: ArrayLike, spacing: tuple[float, float], measure: str | Measure = "l2", *,
                       form: str = "gram") -> np.ndarray:
    """Cheap estimate of the slice magnification MF_2 in every cell of a decoded grid (no extra decodes).

    For the cell with corners f00 = f[r, c], f10 = f[r, c+1] (one step along s), f01 = f[r+1, c], f11:
        |a|^2  ~ mean(D(f00, f10)^2, D(f01, f11)^2)        (a ~ J u ds)
        |b|^2  ~ mean(D(f00, f01)^2, D(f10, f11)^2)        (b ~ J v dt)
        a.b    ~ (D(f00, f11)^2 - D(f10, f01)^2) / 4        (polarisation over the two diagonals)
        MF_2   ~ sqrt(|a|^2 |b|^2 - (a.b)^2) / (ds dt)     ("gram", tends to MF_2 as the spacing -> 0)
    or ``form="product"``: |a| |b| / (ds dt), which ignores the angle and suits dissimilarities that are not
    locally Euclidean. For D = L2 the "gram" form is the area of the decoded parallelogram (docs/geometry.md
    section 5.2) at second order in the spacing; for "bernoulli_kl" it estimates the
    Fisher-Rao MF_2.

    Args:
        outputs: (n_t, n_s, D) decoded grid (from :func:`decode_grid`).
        spacing: (ds, dt) node spacing (``LatentSlice.spacing``).

    Returns:
        (n_t - 1, n_s - 1) float64 densities >= 0, one per cell; take ``np.log`` for a log-MF heatmap.
    """
    m = get_measure(measure)
    if form not in ("gram", "product"):
        raise ValueError(f"unknown form {form!r}; choose one of: gram, product")
    f = _float64_tensor(outputs)
    if f.ndim != 3 or f.shape[0] < 2 or f.shape[1] < 2:
        raise ValueError(f"outputs must have shape (n_t, n_s, D) with n_t, n_s >= 2, got {tuple(f.shape)}")
    ds, dt = (float(x) for x in spacing)
    if not (ds > 0 and dt > 0):
        raise ValueError(f"spacing must be two positive numbers, got {spacing}")
    f00, f10, f01, f11 = f[:-1, :-1], f[:-1, 1:], f[1:, :-1], f[1:, 1:]  # (n_t-1, n_s-1, D) each
    aa = 0.5 * (m.squared(f00, f10) + m.squared(f01, f11))
    bb = 0.5 * (m.squared(f00, f01) + m.squared(f10, f11))
    if form == "product":
        area = torch.sqrt(aa.clamp(min=0) * bb.clamp(min=0))
    else:
        ab = 0.25 * (m.squared(f00, f11) - m.squared(f10, f01))
        area = torch.sqrt((aa * bb - ab**2).clamp(min=0))
    return (area / (ds * dt)).numpy()


def exact_slice_log_magnification(decoder: Decoder, sl: LatentSlice, kind: str = "pullback", *,
                                  where: str = "cells", batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """Exact log MF_2 over a slice from two JVPs per point.

    Args:
        where: ``"cells"`` (default; cell centres, (n_t - 1, n_s - 1), aligned with :func:`grid_magnification`)
            or ``"nodes"`` ((n_t, n_s)).
    """
    if where == "cells":
        pts = sl.cell_centres()
    elif where == "nodes":
        pts = sl.nodes()
    else:
        raise ValueError(f"unknown where {where!r}; choose one of: cells, nodes")
    shape = pts.shape[:2]
    out = slice_log_magnification(decoder, pts.reshape(-1, sl.latent_dim), sl.u, sl.v, kind, batch_size=batch_size)
    return out.reshape(shape)


# --------------------------------------------------------------------------- curves


def _curve_tensor(decoder: Decoder, curve: ArrayLike, subdivide: int) -> torch.Tensor:
    C = decoder.as_latent(curve, "curve")
    if len(C) < 2:
        raise ValueError(f"a curve needs at least 2 points, got {len(C)}")
    if int(subdivide) < 1:
        raise ValueError(f"subdivide must be >= 1, got {subdivide}")
    return subdivide_curve(C, int(subdivide))


def subdivide_curve(curve: torch.Tensor, m: int) -> torch.Tensor:
    """Split every segment of a (K, d) polyline into m equal pieces: ((K - 1) m + 1, d)."""
    if m == 1:
        return curve
    w = torch.arange(m, dtype=curve.dtype) / m  # (m,)
    inner = curve[:-1, None, :] + w[None, :, None] * (curve[1:, None, :] - curve[:-1, None, :])  # (K-1, m, d)
    return torch.cat([inner.reshape(-1, curve.shape[1]), curve[-1:]])


@torch.no_grad()
def segment_lengths(decoder: Decoder, curve: ArrayLike, measure: str | Measure = "l2", *,
                    subdivide: int = 1) -> np.ndarray:
    """D(f(c_k), f(c_{k+1})) for each segment of a (K, d) latent polyline (after ``subdivide``): (M - 1,)."""
    m = get_measure(measure)
    C = _curve_tensor(decoder, curve, subdivide)
    X = decoder.mean_fn(C)  # (M, D)
    return m.distance(X[:-1].double(), X[1:].double()).numpy()


def curve_length(decoder: Decoder, curve: ArrayLike, measure: str | Measure = "l2", *, subdivide: int = 1) -> float:
    """Length of a discretised latent curve under a measure: L = sum_k D(f(c_k), f(c_{k+1})).

    With "l2" this is the length of the decoded polyline; with "bernoulli_kl" it is sum_k sqrt(2 KL), which
    approximates the Fisher-Rao length. ``subdivide`` splits each latent segment into that many pieces first
    (a finer, never shorter, estimate for "l2").
    """
    return float(segment_lengths(decoder, curve, measure, subdivide=subdivide).sum())


def curve_energy(decoder: Decoder, curve: ArrayLike, measure: str | Measure = "l2", *, subdivide: int = 1) -> float:
    """Discrete energy E = (M - 1) sum_k D(f(c_k), f(c_{k+1}))^2 of an M-point curve, with time step 1/(M - 1).

    By Cauchy-Schwarz L^2 <= E, with equality exactly when all segments have the same length.
    """
    m = get_measure(measure)
    with torch.no_grad():
        C = _curve_tensor(decoder, curve, subdivide)
        X = decoder.mean_fn(C)
        return float((len(C) - 1) * m.squared(X[:-1].double(), X[1:].double()).sum())
