"""Cartography: what the Cartography page shows, composed from the geometry library.

The geometry itself lives in :mod:`latent.geometry` (metrics, slices, measures, curve lengths),
:mod:`latent.geodesic` (continuous and graph geodesics) and :mod:`latent.cartogram` (the flow cartogram).
This module turns them into the page's views, each a plain function on arrays, so that every number the
page shows can be tested without Streamlit:

* the page's URL keys (:func:`url_fields`): the slice (``span``, ``dims``, ``via``, ``extent``, ``grid``),
  the ``measure``, the geodesic's ``target`` item and the cartogram ``view``;
* the 2-D slice through the query z0, spanned either by two latent dimensions i, j
  (z = z0 + s e_i + t e_j) or by the directions to two catalog items a, b (Gram-Schmidt; the slice
  coordinates are then Euclidean offsets in latent space): :func:`build_slice`;
* its log magnification map, log MF_2, from the decoded grid (cheap estimate) or from two JVPs per cell
  (exact): :func:`magnification_map`; and an n x n mosaic of decoded garments over the same window:
  :func:`slice_thumbnails`, :func:`thumbnail_mosaic`;
* the straight line to a target with its decoded length and chord (:func:`straight_path`), and
  straight-line and geodesic interpolation frames (:func:`curve_frames`);
* rankings by graph-geodesic distance next to the likelihood ranking (:func:`top_k`, :func:`ranks_of`);
* cartograms of the slice (density MF_2) and of the UMAP map (density: the per-item stretch from the
  geodesic graph, :func:`graph_stretch`), with their deformed grid lines (:func:`grid_lines`).

Nothing here imports streamlit, and importing the module does no work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .cartography_url import EXTENTS, GRIDS, MAP_WEIGHTS, MEASURE_NAMES, SPANS, VIEWS, url_fields  # noqa: F401 (re-exported for pages)
from .geometry import (
    ArrayLike,
    Decoder,
    LatentSlice,
    axis_slice,
    curve_length,
    decode_grid,
    decode_means,
    exact_slice_log_magnification,
    get_measure,
    grid_magnification,
    make_slice,
    segment_lengths,
    slice_through,
)

if TYPE_CHECKING:  # scipy's graph and image modules load only when a cartogram or graph is built
    from .cartogram import Cartogram
    from .geodesic import LatentGraph

# --------------------------------------------------------------------------- defaults

#: The slice half-width when the span is two dimensions and the extent is "auto" (about the prior's bulk).
DIMS_EXTENT = 3.0
#: The "auto" window for two items reaches this many times the farther item (see ``slice_through``).
NEIGHBOUR_MARGIN = 1.25
#: Points on straight lines and geodesics (K in docs/cartography.md section 2).
CURVE_POINTS = 32
#: Cells per side of the cartogram grid (docs/cartography.md section 6.4).
CARTOGRAM_CELLS = 64




def magnification_weights(log_mf: ArrayLike) -> np.ndarray:
    """Per-item cartogram weights from log magnification factors: MF_i / max MF, shape (N,) float64.

    MF = sqrt(det G) at each encoded mean (docs/cartography.md section 6.4, weights "mf"). Collapsed
    latent units can make det G vanish (log MF = -inf); such items get the smallest finite weight, so they
    still count but never dominate. The cartogram's own preprocessing (clip, gamma, blur) then tames the
    dynamic range.
    """
    v = np.asarray(log_mf, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"log_mf must have shape (N,), got {v.shape}")
    finite = np.isfinite(v)
    if not finite.any():
        return np.ones_like(v)
    v = np.where(finite, v, v[finite].min())
    return np.exp(v - v.max())


# --------------------------------------------------------------------------- the slice


def most_active(kl_per_dim: ArrayLike, n: int = 2) -> tuple[int, ...]:
    """The ``n`` dimensions with the largest mean KL to the prior (ties: the lower index first)."""
    kl = np.asarray(kl_per_dim, dtype=np.float64)
    if kl.ndim != 1 or not 1 <= n <= kl.size:
        raise ValueError(f"kl_per_dim must be a vector of at least n={n} values, got shape {kl.shape}")
    return tuple(int(i) for i in np.lexsort((np.arange(kl.size), -kl))[:n])


def parse_extent(extent: str) -> float | None:
    """The half-width for an :data:`EXTENTS` choice: a float, or None for "auto"."""
    if extent not in EXTENTS:
        raise ValueError(f"unknown extent {extent!r}; choose one of: {', '.join(EXTENTS)}")
    return None if extent == "auto" else float(extent)


def build_slice(z: ArrayLike, *, span: str = "dims", dims: tuple[int, int] = (0, 1),
                via: tuple[ArrayLike, ArrayLike] | None = None, extent: float | None = None,
                resolution: int = 32) -> LatentSlice:
    """The slice through the query z0 (d,), as the page draws it.

    * ``span="dims"``: z = z0 + s e_i + t e_j with (i, j) = ``dims``; s, t in [-e, e], e = ``extent`` or
      :data:`DIMS_EXTENT`.
    * ``span="neighbours"``: through z0 and the two points ``via`` = (z_a, z_b): u = (z_a - z0)/|z_a - z0|,
      v the unit part of z_b - z0 orthogonal to u; e = ``extent`` or 1.25 x the farther point's reach.

    Raises:
        ValueError: an unknown span, dims not distinct, or z0, z_a, z_b collinear (no plane).
    """
    z0 = np.asarray(z, dtype=np.float64)
    if span == "dims":
        i, j = (int(v) for v in dims)
        return axis_slice(z0, i, j, extent=DIMS_EXTENT if extent is None else float(extent), resolution=resolution)
    if span == "neighbours":
        if via is None:
            raise ValueError("span='neighbours' needs via=(z_a, z_b)")
        za, zb = (np.asarray(p, dtype=np.float64) for p in via)
        return slice_through(z0, za, zb, margin=NEIGHBOUR_MARGIN, extent=extent, resolution=resolution)
    raise ValueError(f"unknown span {span!r}; choose one of: {', '.join(SPANS)}")


def axis_offsets(sl: LatentSlice, span: str) -> tuple[float, float]:
    """What to add to slice coordinates (s, t) for the page's axes: (z0_i, z0_j) for a slice spanned by
    two unit axes (the axes then read the latent coordinates z_i, z_j), (0, 0) otherwise."""
    if span == "dims":
        i, j = int(np.argmax(np.abs(sl.u))), int(np.argmax(np.abs(sl.v)))
        return float(sl.origin[i]), float(sl.origin[j])
    return 0.0, 0.0


@dataclass(frozen=True)
class MagnificationMap:
    """The log magnification factor over the cells of a slice.

    Attributes:
        log_mf: (n_t - 1, n_s - 1) float64, log MF_2 at the cell centres; NaN where MF_2 = 0.
        method: "grid" (grid-difference estimate from the decoded nodes) or "exact" (two JVPs per cell).
        measure: the measure's name ("l2" gives the pullback metric, "bernoulli_kl" Fisher-Rao).
        s_centres, t_centres: (n_s - 1,), (n_t - 1,) slice coordinates of the cell centres.
    """

    log_mf: np.ndarray
    method: str
    measure: str
    s_centres: np.ndarray
    t_centres: np.ndarray

    @property
    def mf(self) -> np.ndarray:
        """MF_2 = exp(log MF_2), 0 where the log is NaN: (n_t - 1, n_s - 1)."""
        return np.nan_to_num(np.exp(self.log_mf), nan=0.0)

    def max_difference(self, other: MagnificationMap) -> float:
        """max over the cells of |log MF_2 - other's log MF_2|, ignoring cells where either is NaN."""
        if other.log_mf.shape != self.log_mf.shape:
            raise ValueError(f"the maps have different cells: {self.log_mf.shape} and {other.log_mf.shape}")
        return float(np.nanmax(np.abs(self.log_mf - other.log_mf)))


def magnification_map(decoder: Decoder, sl: LatentSlice, measure: str = "l2", method: str = "grid") -> MagnificationMap:
    """log MF_2 over a slice's cells.

    ``"grid"``: decode the (n_t, n_s) nodes once and take :func:`latent.geometry.grid_magnification` (the
    decoded cell's area sqrt(|a|^2 |b|^2 - (a.b)^2) / (ds dt)); ``"exact"``: 0.5 log det G_2 at the cell
    centres from two JVPs each (:func:`latent.geometry.exact_slice_log_magnification`, with the measure's
    metric: pullback for "l2", Fisher-Rao for "bernoulli_kl"). Both estimate the same quantity; the estimate's
    error shrinks with the spacing.
    """
    m = get_measure(measure)
    if method == "grid":
        mf = grid_magnification(decode_grid(decoder, sl), sl.spacing, m)
        with np.errstate(divide="ignore"):
            log_mf = np.log(mf)
    elif method == "exact":
        if m.metric is None:
            raise ValueError(f"measure {m.name!r} has no Riemannian metric; use method='grid'")
        log_mf = exact_slice_log_magnification(decoder, sl, m.metric)
    else:
        raise ValueError(f"unknown method {method!r}; choose one of: grid, exact")
    log_mf = np.where(np.isfinite(log_mf), log_mf, np.nan)
    return MagnificationMap(log_mf, method, m.name, 0.5 * (sl.s[1:] + sl.s[:-1]), 0.5 * (sl.t[1:] + sl.t[:-1]))


def thumbnail_slice(sl: LatentSlice, n: int = 8) -> LatentSlice:
    """The n x n slice whose nodes are the centres of an n x n tiling of ``sl``'s window (same plane)."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    s0, s1, t0, t1 = sl.extent
    hs, ht = (s1 - s0) / n, (t1 - t0) / n
    return make_slice(sl.origin, sl.u, sl.v, extent=(s0 + hs / 2, s1 - hs / 2, t0 + ht / 2, t1 - ht / 2),
                      resolution=n)


def slice_thumbnails(decoder: Decoder, sl: LatentSlice, n: int = 8, side: int = 28) -> np.ndarray:
    """Decoded garments at the centres of an n x n tiling of the slice: (n, n, side, side) [t index, s index]."""
    tiles = thumbnail_slice(sl, n)
    return decode_means(decoder, tiles.nodes().reshape(-1, sl.latent_dim)).reshape(n, n, side, side)


def thumbnail_mosaic(images: ArrayLike, gap: int = 1, background: float = 1.0) -> np.ndarray:
    """Tile (n_t, n_s, H, W) images into one picture, the highest t on top (as on a plot with t upwards).

    Returns:
        (n_t H + (n_t - 1) gap, n_s W + (n_s - 1) gap), the images' dtype; row r of the picture's tiles is
        images[n_t - 1 - r].
    """
    a = np.asarray(images)
    if a.ndim != 4:
        raise ValueError(f"images must have shape (n_t, n_s, H, W), got {a.shape}")
    n_t, n_s, h, w = a.shape
    out = np.full((n_t * h + (n_t - 1) * gap, n_s * w + (n_s - 1) * gap), background, dtype=a.dtype)
    for r in range(n_t):
        for c in range(n_s):
            y, x = r * (h + gap), c * (w + gap)
            out[y:y + h, x:x + w] = a[n_t - 1 - r, c]
    return out


# --------------------------------------------------------------------------- curves and rankings


def other_items(items: ArrayLike, mu: ArrayLike, z: ArrayLike, n: int | None = None) -> list[int]:
    """The ``items`` (in their order) whose mean ``mu[i]`` (N, d) is not the query ``z`` (d,) itself, at most ``n``.

    A query set from an item's mean finds that item first; as a slice direction or a path's target it would
    span nothing.
    """
    m, q = np.asarray(mu), np.asarray(z)
    out = [int(i) for i in np.asarray(items).ravel() if not np.array_equal(m[int(i)], q)]
    return out if n is None else out[:n]


@dataclass(frozen=True)
class StraightPath:
    """The straight latent line between two points, and what its decoded garments measure.

    Attributes:
        curve: (K, d) float64, K equally spaced points from z_a to z_b.
        length: L = sum_k D(f(c_k), f(c_{k+1})) under the measure (:func:`latent.geometry.curve_length`).
        chord: D(f(z_a), f(z_b)), the direct decoded distance: for "l2" no path between the two can be shorter.
    """

    curve: np.ndarray
    length: float
    chord: float


def straight_path(decoder: Decoder, za: ArrayLike, zb: ArrayLike, measure: str = "l2",
                  n_points: int = CURVE_POINTS) -> StraightPath:
    """The straight line z(t) = (1 - t) z_a + t z_b at ``n_points`` points, its decoded length and the chord."""
    from .geodesic import straight_line

    a, b = np.asarray(za, dtype=np.float64), np.asarray(zb, dtype=np.float64)
    curve = straight_line(a, b, n_points)
    chord = float(segment_lengths(decoder, np.stack([a, b]), measure)[0])
    return StraightPath(curve, curve_length(decoder, curve, measure), chord)


def frame_indices(n_points: int, n_frames: int) -> np.ndarray:
    """``n_frames`` indices spread evenly over 0..n_points-1, ends included (fewer if n_points is small)."""
    if n_points < 1 or n_frames < 1:
        raise ValueError(f"n_points and n_frames must be >= 1, got {n_points}, {n_frames}")
    return np.unique(np.rint(np.linspace(0, n_points - 1, min(n_frames, n_points))).astype(int))


def curve_frames(decoder: Decoder, curve: ArrayLike, n_frames: int = 10, side: int = 28) -> np.ndarray:
    """Decoded garments at ``n_frames`` points of a (K, d) curve, evenly spaced in its index (for a geodesic,
    whose points have nearly constant decoded speed, that is evenly spaced in decoded length): (n, side, side)."""
    c = np.asarray(curve, dtype=np.float64)
    idx = frame_indices(len(c), n_frames)
    return decode_means(decoder, c[idx]).reshape(len(idx), side, side)


def top_k(distances: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest finite distances, ties broken by item number: (items (k,), distances (k,))."""
    d = np.asarray(distances, dtype=np.float64)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    finite = np.flatnonzero(np.isfinite(d))
    order = finite[np.lexsort((finite, d[finite]))][:k]
    return order, d[order]


def ranks_of(values: ArrayLike, items: ArrayLike, higher_is_nearer: bool) -> np.ndarray:
    """1-based rank of each of ``items`` in the full ranking of ``values`` (N,), ties by item number."""
    v = np.asarray(values, dtype=np.float64)
    key = -v if higher_is_nearer else v
    order = np.lexsort((np.arange(len(v)), key))
    rank = np.empty(len(v), dtype=np.int64)
    rank[order] = np.arange(1, len(v) + 1)
    return rank[np.asarray(items, dtype=np.int64)]


def graph_stretch(graph: LatentGraph) -> np.ndarray:
    """Per catalog item, the mean stretch of its graph edges: mean_j w_ij / |z_i - z_j| over its neighbours j.

    This is this project's finite-difference measure m_D(z_i) (docs/geometry.md section 6) with the steps taken
    along the kNN edges, at no extra decoding cost: w_ij is the decoded length of the edge. (N,) float64;
    items without an edge of positive latent length get the median stretch.
    """
    if not hasattr(graph, "graph_"):
        raise ValueError("the graph is not fitted")
    means = np.asarray(graph.means_, dtype=np.float64)
    e = np.asarray(graph.edges_)
    length = np.linalg.norm(means[e[:, 0]] - means[e[:, 1]], axis=1)
    ok = length > 0
    rate = np.asarray(graph.weights_, dtype=np.float64)[ok] / length[ok]
    n = len(means)
    total = np.bincount(e[ok, 0], rate, n) + np.bincount(e[ok, 1], rate, n)
    count = np.bincount(e[ok, 0], minlength=n) + np.bincount(e[ok, 1], minlength=n)
    out = np.full(n, np.nan)
    out[count > 0] = total[count > 0] / count[count > 0]
    return np.where(np.isfinite(out), out, np.nanmedian(out) if np.any(count > 0) else 1.0)


# --------------------------------------------------------------------------- cartograms


def slice_cartogram(mag: MagnificationMap, sl: LatentSlice, cells: int = CARTOGRAM_CELLS) -> Cartogram:
    """The slice window stretched so that each region's area follows MF_2 (after the cartogram's
    preprocessing: clip to the 1st-99th percentiles, gamma 0.5, blur 2 cells). The magnification's cells are
    resampled to a ``cells`` x ``cells`` grid; the cartogram's extent is the slice's (s_min, s_max, t_min, t_max).
    """
    from .cartogram import flow_cartogram, resize_density

    return flow_cartogram(resize_density(mag.mf, (cells, cells)), extent=sl.extent)


def map_cartogram(embedding: ArrayLike, weights: ArrayLike, cells: int = CARTOGRAM_CELLS) -> Cartogram:
    """The 2-D map of the catalog (e.g. UMAP, (N, 2)) stretched so that each region's area follows the total
    weight of its items (:func:`latent.cartogram.splat_density`, then :func:`flow_cartogram`)."""
    from .cartogram import flow_cartogram, splat_density

    density, extent = splat_density(np.asarray(embedding, dtype=np.float64), np.asarray(weights, dtype=np.float64),
                                    resolution=cells)
    return flow_cartogram(density, extent=extent)


def carry(cart: Cartogram, points: ArrayLike) -> np.ndarray:
    """Map points (n, 2) through a cartogram (bilinear in the corner displacements); points outside the
    cartogram's frame come back as NaN, so a path leaving the window shows a gap."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x0, x1, y0, y1 = cart.extent
    inside = np.isfinite(p).all(1) & (p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
    out = np.full(p.shape, np.nan)
    if inside.any():
        out[inside] = cart.map_points(p[inside])
    return out


def grid_lines(corners: ArrayLike, every: int = 4) -> tuple[list[float | None], list[float | None]]:
    """Every ``every``-th row and column of a corner grid (n_y + 1, n_x + 1, 2) as one polyline for plotting:
    x and y lists with None between lines (the outer frame is always included)."""
    c = np.asarray(corners, dtype=np.float64)
    if c.ndim != 3 or c.shape[2] != 2:
        raise ValueError(f"corners must have shape (n_y + 1, n_x + 1, 2), got {c.shape}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    rows = sorted(set(range(0, c.shape[0], every)) | {c.shape[0] - 1})
    cols = sorted(set(range(0, c.shape[1], every)) | {c.shape[1] - 1})
    xs: list[float | None] = []
    ys: list[float | None] = []
    for line in [c[r] for r in rows] + [c[:, q] for q in cols]:
        xs.extend([*line[:, 0].tolist(), None])
        ys.extend([*line[:, 1].tolist(), None])
    return xs, ys


def block_areas(cart: Cartogram, sl: LatentSlice, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For an n x n tiling of the slice window: the carried tile centres (n, n, 2) and the carried tiles'
    areas (n, n) (shoelace over their mapped corners), e.g. to draw each garment at its stretched size."""
    s0, s1, t0, t1 = sl.extent
    S, T = np.meshgrid(np.linspace(s0, s1, n + 1), np.linspace(t0, t1, n + 1))
    corners = carry(cart, np.stack([S.ravel(), T.ravel()], 1)).reshape(n + 1, n + 1, 2)
    tiles = thumbnail_slice(sl, n)
    Sc, Tc = np.meshgrid(tiles.s, tiles.t)
    centres = carry(cart, np.stack([Sc.ravel(), Tc.ravel()], 1)).reshape(n, n, 2)
    from .cartogram import cell_areas

    return centres, cell_areas(corners)


def garment_sizes(cart: Cartogram, sl: LatentSlice, n: int, fill: float = 0.92) -> tuple[np.ndarray, np.ndarray]:
    """Where and how large to draw each garment of an n x n tiling on a slice cartogram: its carried tile centre
    (n, n, 2) and the side (n, n) of a square of ``fill`` x the carried tile's area, fill * sqrt(area), so that
    each garment is as large as its stretched tile allows (a tile folded to negative area gets side 0)."""
    centres, areas = block_areas(cart, sl, n)
    return centres, fill * np.sqrt(np.maximum(areas, 0.0))


def area_range(cart: Cartogram) -> float:
    """Largest over smallest target cell area of a cartogram: how much it enlarges against how much it shrinks."""
    areas = cart.target_areas()
    return float(areas.max() / areas.min())


def extent_label(extent: str) -> str:
    """A widget label for an :data:`EXTENTS` choice."""
    return "auto" if extent == "auto" else f"±{extent}"
