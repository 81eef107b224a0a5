"""Tests of latent/cartogram.py: the flow-based cartogram against exact maps and its area targets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from latent.cartogram import (
    cell_areas,
    flow_cartogram,
    preprocess_density,
    resize_density,
    splat_density,
)
from tests.geometry_oracles import readonly


def cell_grid(n_y: int, n_x: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre coordinates x, y (n_y, n_x)."""
    y, x = np.mgrid[0:n_y, 0:n_x] + 0.5
    return x, y


def block_errors(areas: np.ndarray, target: np.ndarray, block: int = 8) -> np.ndarray:
    n_y, n_x = areas.shape
    a = areas.reshape(n_y // block, block, n_x // block, block).sum((1, 3))
    t = target.reshape(n_y // block, block, n_x // block, block).sum((1, 3))
    return np.abs(a / t - 1)


def densities() -> dict[str, np.ndarray]:
    x, y = cell_grid(64, 64)
    rng = np.random.default_rng(0)
    return {
        "smooth 10:1": 1 + 9 * np.exp(-((x - 20) ** 2 + (y - 40) ** 2) / (2 * 8**2)),
        "two bumps": 1 + 5 * np.exp(-((x - 45) ** 2 + (y - 15) ** 2) / 50) + 3 * np.exp(-((x - 15) ** 2) / 30),
        "bump 1000:1": 1 + 999 * np.exp(-((x - 20) ** 2 + (y - 40) ** 2) / (2 * 4**2)),
        "log-normal noise": np.exp(rng.standard_normal((64, 64))),
        "white noise 128": rng.random((128, 128)),
    }


# --------------------------------------------------------------------------- exact maps


def test_uniform_density_gives_the_identity_map():
    pts = readonly(np.random.default_rng(1).uniform(0, 64, (50, 2)))
    c = flow_cartogram(readonly(np.full((64, 64), 3.0)), pts)
    gx, gy = np.meshgrid(np.arange(65.0), np.arange(65.0))
    np.testing.assert_allclose(c.corners, np.stack([gx, gy], -1), atol=1e-9)
    np.testing.assert_allclose(c.points, pts, atol=1e-9)


def test_one_dimensional_density_matches_its_cumulative_map():
    L = 64
    x, _ = cell_grid(L, L)
    rho = 1 + 0.8 * np.sin(2 * np.pi * x / L) ** 2 + 2 * np.exp(-((x - 40) ** 2) / 40)
    c = flow_cartogram(readonly(rho), preprocess=False)
    F = np.concatenate([[0.0], np.cumsum(rho[0])])  # cumulative mass at the corners x = 0..L
    exact = L * F / F[-1]
    err = np.abs(c.corners[..., 0] - exact[None, :])
    assert err.max() < 0.05, err.max()  # cells
    np.testing.assert_allclose(c.corners[..., 1], np.arange(L + 1.0)[:, None] * np.ones(L + 1), atol=1e-9)


def test_symmetric_density_gives_a_symmetric_map():
    x, y = cell_grid(64, 64)
    half = 1 + 4 * np.exp(-((x - 16) ** 2 + (y - 30) ** 2) / 60) + 2 * np.exp(-((x - 30) ** 2 + (y - 50) ** 2) / 30)
    rho = half + half[:, ::-1]
    assert np.array_equal(rho, rho[:, ::-1])
    c = flow_cartogram(rho)
    mirrored = c.corners[:, ::-1].copy()
    mirrored[..., 0] = 64 - mirrored[..., 0]
    np.testing.assert_allclose(c.corners, mirrored, atol=1e-6)


# --------------------------------------------------------------------------- areas


def test_preprocessing_is_clip_gamma_blur():
    rho = readonly(np.exp(np.random.default_rng(2).standard_normal((32, 48)) * 2))
    lo, hi = np.percentile(rho, [1, 99])
    clipped = np.clip(rho, lo, hi)
    ref = ndimage.gaussian_filter(np.maximum(clipped, 1e-3 * clipped.max()) ** 0.5, 2.0, mode="reflect")
    np.testing.assert_allclose(preprocess_density(rho), ref, rtol=1e-12)
    assert preprocess_density(rho, gamma=1.0, blur_sigma=0, clip=None).max() == pytest.approx(rho.max())


@pytest.mark.parametrize("name", list(densities()))
def test_cell_areas_follow_the_preprocessed_target(name):
    rho = densities()[name]
    c = flow_cartogram(rho)
    np.testing.assert_allclose(c.density, preprocess_density(rho))  # the target is the preprocessed density
    areas = c.cell_areas()
    assert areas.min() > 0, f"{(areas <= 0).sum()} folded cells"
    assert areas.sum() == pytest.approx(rho.size, rel=1e-9)  # the frame is fixed
    target = c.density * rho.size / c.density.sum()
    np.testing.assert_allclose(c.target_areas(), target)
    err = block_errors(areas, target)
    assert err.mean() < 0.01, f"{name}: mean block error {err.mean():.4f}"
    assert err.max() < 0.05, f"{name}: max block error {err.max():.4f}"
    # the map really moved things where the target is not flat
    if np.ptp(c.density) > 0.1 * c.density.mean():
        assert np.abs(areas - 1).max() > 0.1


def test_boundary_points_stay_on_the_boundary():
    rho = densities()["bump 1000:1"]
    L = 64
    edge = np.linspace(0, L, 17)
    pts = readonly(np.concatenate([np.stack([edge, np.zeros(17)], 1), np.stack([np.full(17, L), edge], 1),
                                   np.stack([np.zeros(17), edge], 1), np.stack([edge, np.full(17, L)], 1)]))
    c = flow_cartogram(rho, pts)
    C = c.corners
    np.testing.assert_array_equal(C[0, :, 1], 0.0)
    np.testing.assert_array_equal(C[-1, :, 1], L)
    np.testing.assert_array_equal(C[:, 0, 0], 0.0)
    np.testing.assert_array_equal(C[:, -1, 0], L)
    np.testing.assert_array_equal(c.points[:17, 1], 0.0)
    np.testing.assert_array_equal(c.points[17:34, 0], L)
    np.testing.assert_array_equal(c.points[34:51, 0], 0.0)
    np.testing.assert_array_equal(c.points[51:, 1], L)
    assert np.all((C >= 0) & (C <= L))
    # and the corners of the frame do not move
    np.testing.assert_array_equal(C[[0, 0, -1, -1], [0, -1, 0, -1]], [[0, 0], [L, 0], [0, L], [L, L]])


def test_points_move_with_the_grid_and_extent_is_honoured():
    rho = densities()["two bumps"]
    rng = np.random.default_rng(3)
    ext = (-3.0, 3.0, -2.0, 2.0)
    pts = readonly(np.stack([rng.uniform(-3, 3, 200), rng.uniform(-2, 2, 200)], 1))
    c = flow_cartogram(rho, pts, extent=ext)
    cells = np.stack([(pts[:, 0] + 3) * 64 / 6, (pts[:, 1] + 2) * 64 / 4], 1)
    c_cells = flow_cartogram(rho, cells)
    np.testing.assert_allclose(c.corners[..., 0], -3 + c_cells.corners[..., 0] * 6 / 64, atol=1e-9)
    np.testing.assert_allclose(c.corners[..., 1], -2 + c_cells.corners[..., 1] * 4 / 64, atol=1e-9)
    np.testing.assert_allclose(c.points, np.stack([-3 + c_cells.points[:, 0] * 6 / 64,
                                                   -2 + c_cells.points[:, 1] * 4 / 64], 1), atol=1e-9)
    # interpolating the displaced grid after the fact agrees with carrying the points
    np.testing.assert_allclose(c.map_points(pts), c.points, atol=0.05 * 6 / 64)
    assert c.cell_areas().sum() == pytest.approx(24.0, rel=1e-9)
    with pytest.raises(ValueError, match="inside the extent"):
        flow_cartogram(rho, [[5.0, 0.0]], extent=ext)


def test_cell_areas_shoelace():
    corners = np.zeros((2, 3, 2))
    corners[..., 0] = [[0, 1, 3], [0, 1, 3]]
    corners[..., 1] = [[0, 0, 0], [2, 2, 2]]
    np.testing.assert_allclose(cell_areas(corners), [[2.0, 4.0]])
    np.testing.assert_allclose(cell_areas(corners[:, ::-1]), [[-4.0, -2.0]])  # mirrored cells are negative


# --------------------------------------------------------------------------- helpers and validation


def test_splat_density_conserves_weight_and_pads_with_the_mean():
    rng = np.random.default_rng(4)
    pts = readonly(rng.standard_normal((500, 2)))
    w = readonly(rng.uniform(0, 2, 500))
    dens, ext = splat_density(pts, w, resolution=32, pad=1.5, floor_fraction=0.1)
    assert dens.shape == (32, 32) and dens.min() > 0
    assert ext[0] < pts[:, 0].min() and ext[1] > pts[:, 0].max()
    assert (ext[1] - ext[0]) == pytest.approx(1.5 * np.ptp(pts[:, 0]))
    # each point's weight lands in the cells next to it: the bilinear splat of one point
    one, e1 = splat_density(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([1.0, 0.0]), resolution=8, pad=2.0,
                            floor_fraction=1e-9)
    x_cell = (0.0 - e1[0]) * 8 / (e1[1] - e1[0])
    assert x_cell == pytest.approx(2.0)  # (0, 0) sits on a cell corner, shared by four cells
    np.testing.assert_allclose(one[1:3, 1:3], 0.25, atol=1e-6)
    c = flow_cartogram(dens, pts, extent=ext)
    assert c.points.shape == (500, 2)


def test_resize_density_keeps_constants_and_ramps():
    np.testing.assert_allclose(resize_density(np.full((31, 31), 2.5), (64, 64)), 2.5)
    ramp = np.tile(np.arange(31.0), (31, 1))
    out = resize_density(ramp, (31, 62))
    expected = np.broadcast_to(((np.arange(62) + 0.5) / 2 - 0.5)[1:-1], (31, 60))
    np.testing.assert_allclose(out[:, 1:-1], expected, atol=1e-12)


def test_validation_messages():
    with pytest.raises(ValueError, match="non-negative"):
        flow_cartogram(-np.ones((8, 8)))
    with pytest.raises(ValueError, match="strictly positive"):
        flow_cartogram(np.zeros((8, 8)), preprocess=False)
    with pytest.raises(ValueError, match="2-D array"):
        flow_cartogram(np.ones(8))
    with pytest.raises(ValueError, match="gamma"):
        preprocess_density(np.ones((8, 8)), gamma=2.0)
    with pytest.raises(ValueError, match="zero everywhere"):
        preprocess_density(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="extent"):
        flow_cartogram(np.ones((8, 8)), extent=(1, 0, 0, 1))
