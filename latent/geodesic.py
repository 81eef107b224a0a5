"""Geodesic distances in latent space under a decoder measure: continuous, catalog graph and slice grid graph.

Three ways to measure how far apart two latent points are *along the decoded manifold* (docs/cartography.md
sections 2-3):

* :func:`continuous_geodesic`: a K-point latent curve with fixed ends that minimises the discrete energy
  E = (K - 1) sum_k D(f(c_k), f(c_{k+1}))^2 (L-BFGS, or Adam). Minimising energy rather than length gives
  constant speed; the reported length is L = sum_k D(f(c_k), f(c_{k+1})). For "bernoulli_kl" D^2 = 2 KL.
* :class:`LatentGraph`: a kNN graph over the catalog means (scipy cKDTree, k = 10) with decoded-distance
  edge weights; one Dijkstra from a query point gives a geodesic distance to every item.
* :func:`grid_geodesic`: Dijkstra on the 8-neighbour graph of a decoded slice grid (as stochman's
  ``DiscretizedManifold`` does), cheap enough to be interactive.

Checks that hold for any decoder: |f(z_b) - f(z_a)| <= L_geodesic <= L_straight, and the graph distance is
at least the continuous one (a graph path is one particular curve).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from .geometry import (
    ArrayLike,
    Decoder,
    Measure,
    ProgressFn,
    _batches,
    _float64_tensor,
    _latent_tensor,
    _vector,
    curve_energy,
    curve_length,
    get_measure,
)
from .io import atomic_writer

# Dijkstra treats stored zeros as edges, but sparse arithmetic may drop them; keep weights strictly positive.
_MIN_WEIGHT = 1e-12

# --------------------------------------------------------------------------- continuous geodesic


@dataclass(frozen=True)
class GeodesicResult:
    """A discrete geodesic between two latent points.

    Attributes:
        curve: (K, d) float64 latent points, curve[0] = z_a and curve[-1] = z_b.
        length: sum_k D(f(c_k), f(c_{k+1})) of ``curve``.
        straight_length: the same for the straight latent line with K evenly spaced points.
        energy, straight_energy: the discrete energies (K - 1) sum_k D^2 of both curves.
        measure: the measure's name.
        n_evaluations: energy-and-gradient evaluations used.
        seconds: wall time of the optimisation.
    """

    curve: np.ndarray
    length: float
    straight_length: float
    energy: float
    straight_energy: float
    measure: str
    n_evaluations: int
    seconds: float


def straight_line(za: ArrayLike, zb: ArrayLike, n_points: int) -> np.ndarray:
    """K evenly spaced points on the latent segment from z_a to z_b: (K, d) float64."""
    a = np.asarray(za, dtype=np.float64)
    b = np.asarray(zb, dtype=np.float64)
    t = np.linspace(0.0, 1.0, int(n_points))[:, None]
    return (1.0 - t) * a + t * b


def resample_polyline(points: ArrayLike, n_points: int) -> np.ndarray:
    """Resample a latent polyline (M, d) to ``n_points`` points evenly spaced in latent arc length: (n, d).

    Used to start a continuous geodesic from a graph path. The end points are kept exactly.
    """
    P = np.asarray(points, dtype=np.float64)
    if P.ndim != 2 or len(P) < 2:
        raise ValueError(f"points must have shape (M, d) with M >= 2, got {P.shape}")
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    seg = np.linalg.norm(np.diff(P, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] == 0:
        return np.repeat(P[:1], n_points, axis=0)
    target = np.linspace(0.0, s[-1], n_points)
    out = np.stack([np.interp(target, s, P[:, j]) for j in range(P.shape[1])], axis=1)
    out[0], out[-1] = P[0], P[-1]
    return out


def continuous_geodesic(
    decoder: Decoder,
    za: ArrayLike,
    zb: ArrayLike,
    *,
    n_points: int = 32,
    measure: str | Measure = "l2",
    init: ArrayLike | None = None,
    optimizer: str = "lbfgs",
    max_iter: int = 100,
    lr: float = 1e-2,
    rtol: float = 1e-8,
) -> GeodesicResult:
    """Geodesic between z_a and z_b by minimising the discrete energy of a K-point latent curve.

        E(c) = (K - 1) sum_{k=0}^{K-2} D(f(c_k), f(c_{k+1}))^2,   c_0 = z_a, c_{K-1} = z_b fixed,

    whose minimisers have (nearly) equal segment lengths; by Cauchy-Schwarz L^2 <= E with equality then.
    The interior starts on the straight line, or on ``init`` (any latent polyline from z_a to z_b, e.g. a
    graph path, resampled to K points). Gradients are taken with respect to the curve only; the decoder's
    parameters are never touched.

    Args:
        za, zb: (d,) end points.
        n_points: K >= 3.
        optimizer: "lbfgs" (strong Wolfe line search; ``max_iter`` iterations) or "adam" (``max_iter``
            steps of size ``lr``).
        rtol: stop when an iteration lowers the energy by less than rtol times the straight line's energy
            (1e-8 gives lengths to about 1e-8 on smooth problems; 1e-6 halves the evaluations, to about 1e-4).

    Cost: one evaluation decodes K points and back-propagates; L-BFGS needs tens to ~150 evaluations.
    """
    m = get_measure(measure)
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: lbfgs, adam")
    K = int(n_points)
    if K < 3:
        raise ValueError(f"n_points must be >= 3 (two fixed ends and at least one free point), got {n_points}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    d = decoder.latent_dim
    a64, b64 = _vector(za, d, "za"), _vector(zb, d, "zb")
    straight = straight_line(a64, b64, K)
    start = straight.copy() if init is None else resample_polyline(_latent_tensor(init, d, torch.float64, "init"), K)
    start[0], start[-1] = a64, b64
    a = torch.as_tensor(a64, dtype=decoder.dtype)
    b = torch.as_tensor(b64, dtype=decoder.dtype)
    inner = torch.tensor(start[1:-1], dtype=decoder.dtype, requires_grad=True)  # (K-2, d), our own copy
    n_eval = 0

    def energy_and_grad() -> torch.Tensor:
        nonlocal n_eval
        n_eval += 1
        with torch.enable_grad():
            X = decoder.mean_fn(torch.cat([a[None], inner, b[None]]))  # (K, D)
            E = (K - 1) * m.squared(X[:-1], X[1:]).sum()
            (g,) = torch.autograd.grad(E, inner)  # only w.r.t. the curve, so model .grad stays untouched
        inner.grad = g
        return E.detach()

    t0 = time.perf_counter()
    with torch.no_grad():
        Xs = decoder.mean_fn(torch.as_tensor(straight, dtype=decoder.dtype))
        E_ref = float((K - 1) * m.squared(Xs[:-1], Xs[1:]).sum())  # not inflated by a poor init
    E0 = float(energy_and_grad())
    tol_change = rtol * max(E_ref, 1e-300)
    opt: torch.optim.Optimizer
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([inner], lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.25) + 1,
                                tolerance_grad=0.0, tolerance_change=tol_change, history_size=20,
                                line_search_fn="strong_wolfe")
        opt.step(energy_and_grad)
    else:
        opt = torch.optim.Adam([inner], lr=lr)
        prev = E0
        for _ in range(max_iter):
            opt.step()  # uses the gradient left by the last evaluation
            E = float(energy_and_grad())
            if abs(prev - E) < tol_change:
                break
            prev = E
    seconds = time.perf_counter() - t0
    curve = np.concatenate([a64[None], inner.detach().double().numpy(), b64[None]])
    length = curve_length(decoder, curve, m)
    straight_length = curve_length(decoder, straight, m)
    return GeodesicResult(
        curve=curve,
        length=length,
        straight_length=straight_length,
        energy=curve_energy(decoder, curve, m),
        straight_energy=curve_energy(decoder, straight, m),
        measure=m.name,
        n_evaluations=n_eval,
        seconds=seconds,
    )


# --------------------------------------------------------------------------- edge weights


@torch.no_grad()
def _edge_weights(decoder: Decoder, m: Measure, za: torch.Tensor, zb: torch.Tensor, fa: torch.Tensor,
                  fb: torch.Tensor, n_sub: int) -> np.ndarray:
    """Symmetrised decoded length of the latent segments za[e] -> zb[e], summed over n_sub pieces.

    fa, fb are the decoded end points (E, D); interior points are decoded here. Computed in the decoder's
    dtype (float32 is ample for distances between 784-d images, and much faster on the catalog).
    """
    if n_sub == 1:
        w = m.symmetric_distance(fa, fb).double()
    else:
        E = len(za)
        frac = torch.arange(1, n_sub, dtype=za.dtype) / n_sub  # (n_sub-1,)
        Zi = za[:, None, :] + frac[None, :, None] * (zb - za)[:, None, :]  # (E, n_sub-1, d)
        Fi = decoder.mean_fn(Zi.reshape(-1, za.shape[1])).reshape(E, n_sub - 1, -1)
        F = torch.cat([fa[:, None], Fi, fb[:, None]], dim=1)  # (E, n_sub+1, D)
        w = m.symmetric_distance(F[:, :-1], F[:, 1:]).double().sum(1)
    return np.maximum(w.numpy(), _MIN_WEIGHT)


# --------------------------------------------------------------------------- catalog graph


@dataclass(frozen=True)
class GraphQuery:
    """Result of one Dijkstra from a query point over a :class:`LatentGraph`.

    Attributes:
        distances: (N,) geodesic distance from the query to every catalog item (inf if unreachable).
        predecessors: (N,) previous node on the shortest path; N means the query itself, -9999 none.
        query: (d,) the query point.
        neighbours: (k,) catalog items the query was linked to; neighbour_weights: (k,) their edge weights.
    """

    distances: np.ndarray
    predecessors: np.ndarray
    query: np.ndarray
    neighbours: np.ndarray
    neighbour_weights: np.ndarray

    def path(self, target: int) -> np.ndarray:
        """Node indices of the shortest path from the query to item ``target``, excluding the query: (M,)."""
        n = len(self.distances)
        if not 0 <= target < n:
            raise ValueError(f"target must be an item index in 0..{n - 1}, got {target}")
        if not np.isfinite(self.distances[target]):
            raise ValueError(f"item {target} is not reachable from the query")
        out = [target]
        while (p := int(self.predecessors[out[-1]])) != n:
            out.append(p)
        return np.array(out[::-1])


class LatentGraph:
    """kNN graph over latent means with decoded-distance edge weights, for geodesic distances to every item.

    Nodes are the N means; each is linked to its k nearest neighbours in latent space (cKDTree). The weight of
    edge (i, j) is the measure's symmetrised decoded length of the latent segment, sum over ``n_sub`` pieces
    of D(f(z_s), f(z_{s+1})). Edges heavier than the ``prune_quantile`` quantile of all weights are dropped
    (they jump across empty, off-manifold regions); afterwards every smaller connected component is bridged
    to the largest by its shortest latent link, so the graph is always connected (``n_bridges_`` counts them).

    A query point is added as node N linked to its k nearest means, and one Dijkstra gives its distance to
    every item. Follows scikit-learn's estimator contract: ``__init__`` stores parameters, :meth:`fit` builds,
    fitted state ends in ``_``. Cache the fitted graph with :meth:`save` / :meth:`load`.

    Cost: fit decodes the N means once (plus (n_sub - 1) points per edge); a query costs k + 1 decodes and
    one Dijkstra. bench/bench_geometry.py times both on the 70,000-item catalog.
    """

    def __init__(self, k: int = 10, measure: str = "l2", n_sub: int = 1, prune_quantile: float | None = 0.99,
                 batch_size: int = 2048) -> None:
        self.k = k
        self.measure = measure
        self.n_sub = n_sub
        self.prune_quantile = prune_quantile
        self.batch_size = batch_size

    # -- parameters

    def _check_params(self) -> Measure:
        m = get_measure(self.measure)
        if int(self.k) < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if int(self.n_sub) < 1:
            raise ValueError(f"n_sub must be >= 1, got {self.n_sub}")
        q = self.prune_quantile
        if q is not None and not 0.0 < q <= 1.0:
            raise ValueError(f"prune_quantile must be in (0, 1] or None, got {q}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        return m

    def params(self) -> dict[str, object]:
        return {"k": int(self.k), "measure": str(self.measure), "n_sub": int(self.n_sub),
                "prune_quantile": None if self.prune_quantile is None else float(self.prune_quantile)}

    def cache_key(self, content_hash: str) -> str:
        """A cache key from the caller's content hash (model and means) and this graph's parameters."""
        p = self.params()
        return f"{content_hash}-k{p['k']}-{p['measure']}-sub{p['n_sub']}-prune{p['prune_quantile']}"

    # -- building

    def fit(self, decoder: Decoder, means: ArrayLike, progress: ProgressFn | None = None) -> LatentGraph:
        """Build the graph over ``means`` (N, d).

        Args:
            progress: called as progress(done, total) after each batch of work (decoding the N means, then
                weighing the edges), and finally with done == total.
        """
        m = self._check_params()
        Z = _latent_tensor(means, decoder.latent_dim, decoder.dtype, "means")
        N, k = len(Z), int(self.k)
        if N < 2:
            raise ValueError(f"a graph needs at least 2 means, got {N}")
        k_eff = min(k, N - 1)
        pts = Z.double().numpy()
        tree = cKDTree(pts)
        _, idx = tree.query(pts, k=k_eff + 1)  # (N, k+1), usually self first
        rows = np.repeat(np.arange(N), k_eff + 1)
        cols = idx.reshape(-1)
        keep = rows != cols
        i, j = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
        key = np.unique(i.astype(np.int64) * N + j)  # each undirected edge once, i < j
        edges = np.stack([key // N, key % N], axis=1)  # (E, 2)
        n_edges = len(edges)
        bs = int(self.batch_size)
        total = N + n_edges
        done = 0

        F = torch.empty((N, 0), dtype=decoder.dtype)
        with torch.no_grad():
            parts = []
            for b in _batches(N, bs):
                parts.append(decoder.mean_fn(Z[b]))
                done += b.stop - b.start
                if progress is not None:
                    progress(done, total)
            F = torch.cat(parts)  # (N, D)
        weights = np.empty(n_edges)
        edge_bs = max(1, bs // int(self.n_sub))
        for b in _batches(n_edges, edge_bs):
            i0, i1 = torch.as_tensor(edges[b, 0]), torch.as_tensor(edges[b, 1])
            # index_select is several times faster than fancy indexing for gathering rows
            weights[b] = _edge_weights(decoder, m, Z.index_select(0, i0), Z.index_select(0, i1),
                                       F.index_select(0, i0), F.index_select(0, i1), int(self.n_sub))
            done += b.stop - b.start
            if progress is not None:
                progress(done, total)

        threshold = np.inf
        if self.prune_quantile is not None and self.prune_quantile < 1.0 and n_edges > 0:
            threshold = float(np.quantile(weights, self.prune_quantile))
        kept = weights <= threshold
        n_pruned = int((~kept).sum())
        edges, weights = edges[kept], weights[kept]

        # Bridge every smaller component to the largest by its shortest latent link.
        graph = _csr(edges, weights, N)
        n_comp, labels = connected_components(graph, directed=False)
        n_bridges = 0
        if n_comp > 1:
            main = np.bincount(labels).argmax()
            in_main = labels == main
            main_nodes = np.flatnonzero(in_main)
            others = np.flatnonzero(~in_main)
            dq, iq = cKDTree(pts[main_nodes]).query(pts[others])
            order = np.lexsort((dq, labels[others]))  # by component, nearest first
            first = order[np.r_[True, np.diff(labels[others][order]) != 0]]
            src, dst = others[first], main_nodes[iq[first]]
            e = np.stack([np.minimum(src, dst), np.maximum(src, dst)], axis=1)
            te = torch.as_tensor(e)
            w = _edge_weights(decoder, m, Z[te[:, 0]], Z[te[:, 1]], F[te[:, 0]], F[te[:, 1]], int(self.n_sub))
            edges = np.concatenate([edges, e])
            weights = np.concatenate([weights, w])
            n_bridges = len(e)
            graph = _csr(edges, weights, N)
        if progress is not None:
            progress(total, total)

        self.means_ = pts.astype(np.float32 if decoder.dtype == torch.float32 else np.float64)
        self.edges_ = edges
        self.weights_ = weights
        self.threshold_ = threshold
        self.n_pruned_ = n_pruned
        self.n_bridges_ = n_bridges
        self.graph_ = graph
        self.tree_ = tree
        return self

    # -- querying

    def _require_fitted(self) -> None:
        if not hasattr(self, "graph_"):
            raise ValueError("this LatentGraph is not fitted; call fit(decoder, means) or load(path, key) first")

    @property
    def n_nodes(self) -> int:
        self._require_fitted()
        return int(self.graph_.shape[0])

    def query(self, decoder: Decoder, z: ArrayLike) -> GraphQuery:
        """Geodesic distances from a query point z (d,) to every node: one Dijkstra from the query node.

        The query is linked to its k nearest means with the same kind of edge weights as the graph.
        """
        self._require_fitted()
        m = self._check_params()
        N = self.n_nodes
        q = _vector(z, decoder.latent_dim, "z")
        if self.means_.shape[1] != decoder.latent_dim:
            raise ValueError(f"graph has latent_dim {self.means_.shape[1]}, decoder has {decoder.latent_dim}")
        k = min(int(self.k), N)
        _, nb = self.tree_.query(q, k=k)
        nb = np.atleast_1d(nb)
        Zq = torch.as_tensor(q[None], dtype=decoder.dtype).expand(k, -1)
        Zn = torch.as_tensor(self.means_[nb], dtype=decoder.dtype)
        with torch.no_grad():
            F = decoder.mean_fn(torch.cat([Zq[:1], Zn]))  # (k+1, D)
        w = _edge_weights(decoder, m, Zq, Zn, F[:1].expand(k, -1), F[1:], int(self.n_sub))
        g = self.graph_
        indptr = np.concatenate([g.indptr, [g.indptr[-1] + k]])
        aug = sparse.csr_matrix((np.concatenate([g.data, w]), np.concatenate([g.indices, nb]), indptr),
                                shape=(N + 1, N + 1))
        dist, pred = dijkstra(aug, directed=False, indices=N, return_predecessors=True)
        return GraphQuery(distances=dist[:N], predecessors=pred[:N], query=q, neighbours=nb, neighbour_weights=w)

    def path_points(self, result: GraphQuery, target: int) -> np.ndarray:
        """Latent polyline (M + 1, d) from the query along the shortest graph path to item ``target``."""
        self._require_fitted()
        return np.concatenate([result.query[None], self.means_[result.path(target)].astype(np.float64)])

    # -- caching

    def save(self, path: str | os.PathLike[str], key: str) -> Path:
        """Write the fitted graph to an ``.npz`` file atomically, tagged with ``key`` (see :meth:`cache_key`)."""
        self._require_fitted()
        path = Path(path)
        with atomic_writer(path) as fh:
            np.savez(fh, key=np.array(str(key)), params=np.array(json.dumps(self.params())), means=self.means_,
                     edges=self.edges_.astype(np.int64), weights=self.weights_,
                     stats=np.array([self.threshold_, self.n_pruned_, self.n_bridges_], dtype=np.float64))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], key: str) -> LatentGraph | None:
        """Load a graph saved with the same ``key``; None if the file is missing, unreadable or has another key."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["key"]) != str(key):
                    return None
                params = json.loads(str(f["params"]))
                means, edges, weights, stats = f["means"], f["edges"], f["weights"], f["stats"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None
        g = cls(**params)
        g.means_ = means
        g.edges_ = edges
        g.weights_ = weights
        g.threshold_ = float(stats[0])
        g.n_pruned_ = int(stats[1])
        g.n_bridges_ = int(stats[2])
        g.graph_ = _csr(edges, weights, len(means))
        g.tree_ = cKDTree(means.astype(np.float64))
        return g


def _csr(edges: np.ndarray, weights: np.ndarray, n: int) -> sparse.csr_matrix:
    """Upper-triangular (n, n) CSR with one entry per undirected edge (Dijkstra runs with directed=False)."""
    return sparse.csr_matrix((weights, (edges[:, 0], edges[:, 1])), shape=(n, n))


# --------------------------------------------------------------------------- slice grid graph


@dataclass(frozen=True)
class GridGeodesic:
    """Dijkstra on the 8-neighbour graph of a decoded grid.

    Attributes:
        distances: (n_t, n_s) distance from the source node to every node.
        path: (M, 2) int [row, col] nodes from source to target (empty (0, 2) without a target).
        length: distance to the target (nan without a target).
    """

    distances: np.ndarray
    path: np.ndarray
    length: float


@torch.no_grad()
def grid_geodesic(outputs: ArrayLike, source: tuple[int, int], target: tuple[int, int] | None = None,
                  measure: str | Measure = "l2") -> GridGeodesic:
    """Graph geodesic on a decoded slice grid (8 neighbours, symmetrised decoded-distance weights).

    Args:
        outputs: (n_t, n_s, D) decoded grid (:func:`latent.geometry.decode_grid`).
        source, target: (row, col) node indices.

    The 8-neighbour graph over-estimates lengths by up to about 8% in directions between the grid's
    axes and diagonals (metrication error), so it is a quick upper bound, not an exact distance.
    """
    m = get_measure(measure)
    f = _float64_tensor(outputs)
    if f.ndim != 3:
        raise ValueError(f"outputs must have shape (n_t, n_s, D), got {tuple(f.shape)}")
    n_t, n_s = f.shape[:2]
    for name, node in (("source", source), ("target", target)):
        if node is not None and not (0 <= node[0] < n_t and 0 <= node[1] < n_s):
            raise ValueError(f"{name} must be a (row, col) node in [0, {n_t}) x [0, {n_s}), got {node}")
    ids = np.arange(n_t * n_s).reshape(n_t, n_s)
    src, dst, w = [], [], []
    for (dr, dc) in ((0, 1), (1, 0), (1, 1), (1, -1)):
        r0, r1 = 0, n_t - dr
        c0, c1 = max(0, -dc), n_s - max(0, dc)
        a = f[r0:r1, c0:c1]
        b = f[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
        src.append(ids[r0:r1, c0:c1].ravel())
        dst.append(ids[r0 + dr:r1 + dr, c0 + dc:c1 + dc].ravel())
        w.append(np.maximum(m.symmetric_distance(a, b).numpy().ravel(), _MIN_WEIGHT))
    graph = sparse.csr_matrix((np.concatenate(w), (np.concatenate(src), np.concatenate(dst))),
                              shape=(n_t * n_s, n_t * n_s))
    s_id = int(ids[source[0], source[1]])
    dist, pred = dijkstra(graph, directed=False, indices=s_id, return_predecessors=True)
    if target is None:
        return GridGeodesic(dist.reshape(n_t, n_s), np.zeros((0, 2), dtype=int), float("nan"))
    t_id = int(ids[target[0], target[1]])
    chain = [t_id]
    while chain[-1] != s_id:
        chain.append(int(pred[chain[-1]]))
    chain = chain[::-1]
    path = np.stack(np.unravel_index(np.array(chain), (n_t, n_s)), axis=1)
    return GridGeodesic(dist.reshape(n_t, n_s), path, float(dist[t_id]))
