"""Flow-based diffusion cartogram: stretch a 2-D map so that each region's area follows a density.

Algorithm: Gastner, Seguy and More, "Fast flow-based algorithm for creating density-equalizing map
projections", PNAS 2018 (reference code: Flow-Based-Cartograms/go_cart, ``ffb_integrate.c``); see
docs/cartography.md section 6. On an n_y x n_x grid of cells (a reflecting box [0, n_x] x [0, n_y], cell units):

    rho_bar = mean(rho0);  solve  lap(Phi) = rho0 - rho_bar  with zero normal derivative at the walls
        (cosine series: rho0 - rho_bar = sum_ij c_ij cos(kx_i x) cos(ky_j y),  kx_i = pi i / n_x,
         ky_j = pi j / n_y,  so  d_x Phi = sum c_ij kx_i / k^2 sin(kx_i x) cos(ky_j y),  likewise d_y Phi)
    rho(r, t) = rho_bar + (1 - t) (rho0(r) - rho_bar),    v(r, t) = grad Phi(r) / rho(r, t),   t in [0, 1]

The continuity equation d rho / dt + div(rho v) = 0 then holds exactly, so a region of initial area A and
density rho0 ends (t = 1, density rho_bar everywhere) with area A rho0 / rho_bar: dense regions expand, sparse
ones shrink, and the frame stays fixed. Points move with dr/dt = v(r, t), integrated by the explicit midpoint
method with an adaptive step (accepted when max |midpoint - Euler|^2 <= 1e-6 min(n_x, n_y)); the Fourier
transform is done once, not per step. grad Phi is evaluated at the cell corners, where the sine factors make
the normal velocity exactly zero on the walls, and interpolated bilinearly.

Preprocessing (:func:`preprocess_density`: clip to the 1st-99th percentiles, raise to gamma = 0.5, blur with
sigma = 2 cells) keeps the map from folding; it DEFINES the target density. Areas follow that preprocessed
target, not the raw measure.

Arrays are indexed [row, col] = [y, x]; point coordinates are [x, y]. Cell (r, c) covers [c, c+1] x [r, r+1]
in cell units, or the matching part of ``extent`` = (x_min, x_max, y_min, y_max) when given.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Extent = tuple[float, float, float, float]


def preprocess_density(rho: np.ndarray, *, clip: tuple[float, float] | None = (1.0, 99.0), gamma: float = 0.5,
                       blur_sigma: float = 2.0, floor_fraction: float = 1e-3) -> np.ndarray:
    """The target density of a cartogram, from a raw non-negative density (e.g. a magnification map).

        rho -> clip(rho, P_lo, P_hi) -> max(., floor_fraction * P_hi) -> (.)^gamma -> Gaussian blur(sigma cells)

    Args:
        rho: (n_y, n_x) finite, non-negative values.
        clip: percentiles (lo, hi) to clip to, or None.
        gamma: exaggeration exponent in (0, 1] (1 keeps the contrast, smaller values soften it).
        blur_sigma: Gaussian blur in cells (reflecting edges, so the total mass is kept); 0 for none.
        floor_fraction: a floor relative to the clipped maximum, so no region is squeezed to nothing.

    Returns:
        (n_y, n_x) float64, strictly positive. Never modifies ``rho``.
    """
    r = np.array(rho, dtype=np.float64)  # a copy
    if r.ndim != 2 or min(r.shape) < 2:
        raise ValueError(f"rho must be a 2-D array of at least 2 x 2 cells, got shape {r.shape}")
    if not np.all(np.isfinite(r)) or r.min() < 0:
        raise ValueError("rho must be finite and non-negative (pass a magnification, not its log)")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    if blur_sigma < 0:
        raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma}")
    if not 0.0 < floor_fraction < 1.0:
        raise ValueError(f"floor_fraction must be in (0, 1), got {floor_fraction}")
    if clip is not None:
        lo, hi = clip
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"clip must be percentiles (lo, hi) with 0 <= lo < hi <= 100, got {clip}")
        plo, phi = np.percentile(r, [lo, hi])
        r = np.clip(r, plo, phi)
    top = r.max()
    if top <= 0:
        raise ValueError("rho is zero everywhere; a cartogram needs some positive density")
    r = np.maximum(r, floor_fraction * top) ** gamma
    if blur_sigma > 0:
        r = ndimage.gaussian_filter(r, blur_sigma, mode="reflect")
    return r


def _cos_sin(n: int, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos(pi i x / n) and sin(pi i x / n) for x in ``at`` (m,) and i = 0..n-1: two (m, n) matrices."""
    arg = np.pi * np.outer(at, np.arange(n)) / n
    return np.cos(arg), np.sin(arg)


@dataclass(frozen=True)
class FlowField:
    """Flux grad Phi and initial density rho0 at the (n_y + 1, n_x + 1) cell corners, and rho_bar."""

    flux_x: np.ndarray
    flux_y: np.ndarray
    rho0: np.ndarray
    rho_bar: float

    def velocity(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(v_x, v_y) at the corners at time t: grad Phi / (rho_bar + (1 - t)(rho0 - rho_bar))."""
        rho = self.rho_bar + (1.0 - t) * (self.rho0 - self.rho_bar)
        return self.flux_x / rho, self.flux_y / rho


def flow_field(rho0: np.ndarray) -> FlowField:
    """Solve lap(Phi) = rho0 - rho_bar in the reflecting box by a cosine series and evaluate grad Phi and the
    series of rho0 at the cell corners. rho0: (n_y, n_x) positive cell densities."""
    n_y, n_x = rho0.shape
    rho_bar = float(rho0.mean())
    Cx, _ = _cos_sin(n_x, np.arange(n_x) + 0.5)  # (n_x, n_x) at cell centres
    Cy, _ = _cos_sin(n_y, np.arange(n_y) + 0.5)
    wx = np.full(n_x, 2.0 / n_x)
    wx[0] = 1.0 / n_x
    wy = np.full(n_y, 2.0 / n_y)
    wy[0] = 1.0 / n_y
    # Cosine coefficients (a DCT-II with orthogonality weights): rho0 - rho_bar = Cy c Cx^T at the centres.
    c = wy[:, None] * (Cy.T @ (rho0 - rho_bar) @ Cx) * wx[None, :]  # (n_y, n_x) [j, i]
    kx = np.pi * np.arange(n_x) / n_x
    ky = np.pi * np.arange(n_y) / n_y
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    k2[0, 0] = 1.0  # the mean mode is zero anyway
    cxc, sxc = _cos_sin(n_x, np.arange(n_x + 1.0))  # (n_x+1, n_x) at the corners x = 0..n_x
    cyc, syc = _cos_sin(n_y, np.arange(n_y + 1.0))
    flux_x = cyc @ (c * kx[None, :] / k2) @ sxc.T  # (n_y+1, n_x+1); sin(0) = sin(pi i) = 0 on the walls
    flux_y = syc @ (c * ky[:, None] / k2) @ cxc.T
    rho_c = rho_bar + cyc @ c @ cxc.T  # the same series, at the corners
    # A sharp raw density can ring negative; keep the denominators positive (preprocessed input never does).
    rho_c = np.maximum(rho_c, 1e-3 * rho_bar)
    return FlowField(flux_x, flux_y, rho_c, rho_bar)


def _bilinear(field: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a corner field (n_y + 1, n_x + 1) at points p (n, 2) [x, y] inside the box."""
    n_y, n_x = field.shape[0] - 1, field.shape[1] - 1
    x, y = p[:, 0], p[:, 1]
    ix = np.clip(np.floor(x).astype(np.intp), 0, n_x - 1)
    iy = np.clip(np.floor(y).astype(np.intp), 0, n_y - 1)
    fx, fy = x - ix, y - iy
    f00, f01 = field[iy, ix], field[iy, ix + 1]
    f10, f11 = field[iy + 1, ix], field[iy + 1, ix + 1]
    return (1 - fy) * ((1 - fx) * f00 + fx * f01) + fy * ((1 - fx) * f10 + fx * f11)


def integrate_flow(field: FlowField, points: np.ndarray, *, tol: float | None = None, dt0: float = 1e-2,
                   max_steps: int = 100_000) -> tuple[np.ndarray, int]:
    """Carry points (n, 2) [x, y] in cell units along v(r, t) from t = 0 to 1 (adaptive explicit midpoint).

    Returns:
        (displaced points (n, 2), accepted steps). Never modifies ``points``.
    """
    n_y, n_x = field.rho0.shape[0] - 1, field.rho0.shape[1] - 1
    tol = 1e-6 * min(n_x, n_y) if tol is None else tol
    hi = np.array([n_x, n_y], dtype=np.float64)
    p = np.array(points, dtype=np.float64)  # a copy
    t, dt, steps, tries = 0.0, dt0, 0, 0
    while t < 1.0:
        dt = min(dt, 1.0 - t)
        vx, vy = field.velocity(t)
        v0 = np.stack([_bilinear(vx, p), _bilinear(vy, p)], axis=1)  # (n, 2)
        while True:
            tries += 1
            if tries > max_steps:
                raise RuntimeError(f"cartogram integration did not finish in {max_steps} tries (t = {t:.4f})")
            half = p + 0.5 * dt * v0
            if np.any(half < 0) or np.any(half > hi):
                dt *= 0.75
                continue
            hx, hy = field.velocity(t + 0.5 * dt)
            mid = p + dt * np.stack([_bilinear(hx, half), _bilinear(hy, half)], axis=1)
            eul = p + dt * v0
            if np.max(np.sum((mid - eul) ** 2, axis=1), initial=0.0) > tol or np.any(mid < 0) or np.any(mid > hi):
                dt *= 0.75
                continue
            break
        p = mid
        t += dt
        steps += 1
        dt *= 1.1
    # Points that started on a wall stay on it exactly (their normal velocity is zero up to rounding).
    on = np.asarray(points, dtype=np.float64)
    for axis, top in ((0, n_x), (1, n_y)):
        p[on[:, axis] == 0, axis] = 0.0
        p[on[:, axis] == top, axis] = top
    return np.clip(p, 0.0, hi), steps


@dataclass(frozen=True)
class Cartogram:
    """A computed cartogram.

    Attributes:
        corners: (n_y + 1, n_x + 1, 2) displaced cell corners [x, y]; corner [r, c] started at grid position
            (x, y) = (c, r) in cell units (mapped through ``extent``). Draw rows and columns as grid lines.
        points: (n, 2) displaced input points [x, y] (same coordinates as given).
        density: (n_y, n_x) the target density that the cell areas follow (after preprocessing).
        extent: (x_min, x_max, y_min, y_max) of the frame.
        n_steps: accepted integration steps; seconds: wall time.
    """

    corners: np.ndarray
    points: np.ndarray
    density: np.ndarray
    extent: Extent
    n_steps: int
    seconds: float

    def cell_areas(self) -> np.ndarray:
        """Signed shoelace areas (n_y, n_x) of the displaced cells (positive = not folded)."""
        return cell_areas(self.corners)

    def target_areas(self) -> np.ndarray:
        """What the cell areas should be: density * total area / total density, (n_y, n_x)."""
        x0, x1, y0, y1 = self.extent
        return self.density * ((x1 - x0) * (y1 - y0) / self.density.sum())

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Map further points (n, 2) after the fact, by bilinear interpolation of the corner displacements.

        Accurate to the grid's resolution; points carried during the integration are exact to its tolerance.
        """
        n_y, n_x = self.density.shape
        q = _to_cells(np.asarray(points, dtype=np.float64), self.extent, n_x, n_y)
        gx = _bilinear(self.corners[..., 0], q)
        gy = _bilinear(self.corners[..., 1], q)
        return np.stack([gx, gy], axis=1)


def cell_areas(corners: np.ndarray) -> np.ndarray:
    """Signed shoelace areas of the quadrilaterals of a corner grid (n_y + 1, n_x + 1, 2): (n_y, n_x)."""
    c = np.asarray(corners, dtype=np.float64)
    quad = [c[:-1, :-1], c[:-1, 1:], c[1:, 1:], c[1:, :-1]]  # counter-clockwise for x right, y up
    area = np.zeros((c.shape[0] - 1, c.shape[1] - 1))
    for a, b in zip(quad, quad[1:] + quad[:1], strict=True):
        area = area + a[..., 0] * b[..., 1] - b[..., 0] * a[..., 1]
    return 0.5 * area


def _check_extent(extent: Extent | None, n_x: int, n_y: int) -> Extent:
    if extent is None:
        return (0.0, float(n_x), 0.0, float(n_y))
    e = tuple(float(v) for v in extent)
    if len(e) != 4 or not all(map(math.isfinite, e)) or not (e[0] < e[1] and e[2] < e[3]):
        raise ValueError(f"extent must be (x_min, x_max, y_min, y_max) with min < max, got {extent}")
    return e  # a tuple of 4 after the length check


def _to_cells(p: np.ndarray, extent: Extent, n_x: int, n_y: int) -> np.ndarray:
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {p.shape}")
    x0, x1, y0, y1 = extent
    q = np.stack([(p[:, 0] - x0) * (n_x / (x1 - x0)), (p[:, 1] - y0) * (n_y / (y1 - y0))], axis=1)
    slack = 1e-9 * max(n_x, n_y)
    if not np.all(np.isfinite(q)) or q.min(initial=0) < -slack or np.any(q > np.array([n_x, n_y]) + slack):
        raise ValueError(f"points must lie inside the extent {extent}")
    return np.clip(q, 0.0, np.array([n_x, n_y], dtype=np.float64))


def _from_cells(q: np.ndarray, extent: Extent, n_x: int, n_y: int) -> np.ndarray:
    x0, x1, y0, y1 = extent
    return np.stack([x0 + q[..., 0] * ((x1 - x0) / n_x), y0 + q[..., 1] * ((y1 - y0) / n_y)], axis=-1)


def flow_cartogram(density: np.ndarray, points: np.ndarray | None = None, *, extent: Extent | None = None,
                   preprocess: bool = True, clip: tuple[float, float] | None = (1.0, 99.0), gamma: float = 0.5,
                   blur_sigma: float = 2.0, tol: float | None = None) -> Cartogram:
    """Flow-based cartogram (Gastner-Seguy-More 2018) of a density on a grid of cells.

    Args:
        density: (n_y, n_x) non-negative densities per cell (e.g. MF_2 of a slice, or a splatted UMAP map);
            n_x, n_y a power of 2 in 64..256 are typical, any size >= 2 works.
        points: optional (n, 2) [x, y] points inside the extent, carried along with the grid.
        extent: (x_min, x_max, y_min, y_max) the grid covers; default the cell units (0, n_x, 0, n_y). The flow
            is computed in cell units and mapped affinely, so with non-square cells areas still follow the
            target exactly, though the shapes differ from an isotropic flow in extent units.
        preprocess: apply :func:`preprocess_density` (clip, gamma, blur); if False, ``density`` is the
            target and must be strictly positive.
        tol: step acceptance threshold on max |midpoint - Euler|^2 in cells^2 (default 1e-6 min(n_x, n_y)).

    Returns:
        :class:`Cartogram` with displaced corners and points in ``extent`` coordinates.

    Cost: one cosine transform, then ~30-100 steps of two bilinear interpolations of all corners and points;
    bench/bench_geometry.py times the page's 64 x 64 cartograms.
    """
    t0 = time.perf_counter()
    raw = np.asarray(density, dtype=np.float64)
    if raw.ndim != 2 or min(raw.shape) < 2:
        raise ValueError(f"density must be a 2-D array of at least 2 x 2 cells, got shape {raw.shape}")
    if preprocess:
        rho = preprocess_density(raw, clip=clip, gamma=gamma, blur_sigma=blur_sigma)
    else:
        if not np.all(np.isfinite(raw)) or raw.min() <= 0:
            raise ValueError("with preprocess=False the density must be finite and strictly positive")
        rho = raw.copy()
    n_y, n_x = rho.shape
    ext = _check_extent(extent, n_x, n_y)
    pts = np.zeros((0, 2)) if points is None else _to_cells(np.asarray(points, dtype=np.float64), ext, n_x, n_y)
    gx, gy = np.meshgrid(np.arange(n_x + 1.0), np.arange(n_y + 1.0))  # (n_y+1, n_x+1)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    moved, steps = integrate_flow(flow_field(rho), np.concatenate([grid, pts]), tol=tol)
    corners = _from_cells(moved[: len(grid)].reshape(n_y + 1, n_x + 1, 2), ext, n_x, n_y)
    out_pts = _from_cells(moved[len(grid):], ext, n_x, n_y)
    rho.setflags(write=False)
    return Cartogram(corners, out_pts, rho, ext, steps, time.perf_counter() - t0)


def resize_density(rho: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample a cell density (m_y, m_x) to ``shape`` (n_y, n_x) cells by bilinear interpolation at the cell
    centres (edges held constant), e.g. a 31 x 31 slice magnification to a 64 x 64 cartogram grid."""
    r = np.asarray(rho, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rho must be 2-D, got shape {r.shape}")
    n_y, n_x = (int(s) for s in shape)
    if n_y < 2 or n_x < 2:
        raise ValueError(f"shape must be at least (2, 2), got {shape}")
    yy = (np.arange(n_y) + 0.5) * (r.shape[0] / n_y) - 0.5
    xx = (np.arange(n_x) + 0.5) * (r.shape[1] / n_x) - 0.5
    Y, X = np.meshgrid(yy, xx, indexing="ij")
    return ndimage.map_coordinates(r, [Y, X], order=1, mode="nearest")


def splat_density(points: np.ndarray, weights: np.ndarray | None = None, *, resolution: int = 64,
                  pad: float = 1.5, floor_fraction: float = 0.1) -> tuple[np.ndarray, Extent]:
    """A cell density for a scatter map (e.g. the UMAP map with the MF at each item as weight).

    Each point's weight is split bilinearly between the four nearest cell centres, so a region's mass is the
    total weight of its points. The data's bounding box is enlarged ``pad`` times about its centre; cells
    inside the data box get a floor of ``floor_fraction`` times their mean mass (empty space keeps some area),
    and the padding gets the data box's mean density, so the frame does not distort the map.

    Args:
        points: (n, 2) [x, y]; weights: (n,) >= 0 (default 1 each).
        resolution: cells per side (the grid is square in cells).

    Returns:
        (density (resolution, resolution), extent (x_min, x_max, y_min, y_max)).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0 or not np.all(np.isfinite(p)):
        raise ValueError(f"points must be a finite (n, 2) array with n >= 1, got shape {p.shape}")
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(p),) or not np.all(np.isfinite(w)) or w.min() < 0:
        raise ValueError(f"weights must be finite, non-negative, shape ({len(p)},)")
    if resolution < 4 or pad < 1.0:
        raise ValueError(f"resolution must be >= 4 and pad >= 1, got {resolution}, {pad}")
    lo, hi = p.min(0), p.max(0)
    centre = 0.5 * (lo + hi)
    half = 0.5 * np.maximum(hi - lo, 1e-9 * max(1.0, float(np.abs(p).max()))) * pad
    ext: Extent = (centre[0] - half[0], centre[0] + half[0], centre[1] - half[1], centre[1] + half[1])
    n = int(resolution)
    q = _to_cells(p, ext, n, n) - 0.5  # relative to cell centres
    ix = np.clip(np.floor(q[:, 0]).astype(np.intp), -1, n - 1)
    iy = np.clip(np.floor(q[:, 1]).astype(np.intp), -1, n - 1)
    fx, fy = q[:, 0] - ix, q[:, 1] - iy
    mass = np.zeros((n + 2, n + 2))  # one ghost cell each side, folded back below
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            np.add.at(mass, (iy + dy + 1, ix + dx + 1), w * wx * wy)
    mass[1, :] += mass[0, :]
    mass[-2, :] += mass[-1, :]
    mass[:, 1] += mass[:, 0]
    mass[:, -2] += mass[:, -1]
    mass = mass[1:-1, 1:-1]
    # The data region: every cell that received a share of some point's weight.
    x_lo, x_hi = max(int(ix.min()), 0), min(int(ix.max()) + 1, n - 1)
    y_lo, y_hi = max(int(iy.min()), 0), min(int(iy.max()) + 1, n - 1)
    inside = np.zeros((n, n), dtype=bool)
    inside[y_lo:y_hi + 1, x_lo:x_hi + 1] = True
    mean_in = mass[inside].mean()
    if mean_in <= 0:
        raise ValueError("all weights are zero; a cartogram needs some positive weight")
    dens = np.where(inside, mass + floor_fraction * mean_in, 0.0)
    dens[~inside] = dens[inside].mean()
    return dens, ext
