"""Tests of latent/cartography.py: the Cartography page's URL keys, slices, maps, rankings and cartograms.

References are analytic decoders (a linear map has G = A^T A everywhere, so MF_2 = sqrt(det(B^T A^T A B)) in
every cell, for the grid estimate as well as for the JVPs), brute-force sorting, and the shoelace formula.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latent.cartogram import cell_areas
from latent.cartography import (
    CURVE_POINTS,
    EXTENTS,
    MagnificationMap,
    area_range,
    block_areas,
    build_slice,
    carry,
    curve_frames,
    frame_indices,
    garment_sizes,
    graph_stretch,
    grid_lines,
    magnification_map,
    map_cartogram,
    most_active,
    other_items,
    parse_extent,
    ranks_of,
    slice_cartogram,
    slice_thumbnails,
    straight_path,
    thumbnail_mosaic,
    thumbnail_slice,
    top_k,
    url_fields,
)
from latent.geodesic import LatentGraph
from latent.geometry import Decoder, axis_slice, decode_means
from latent.urlstate import CORE_SCHEMA, parse_query_params, to_query_params
from tests.geometry_oracles import linear

D = 10
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def schema():
    out = CORE_SCHEMA
    for spec in url_fields():
        out = out.with_field(spec)
    return out


def parse(params):
    return parse_query_params(params, latent_dim=D, bound=5.0, score_names=("likelihood",), n_items=100, k_max=50,
                              schema=schema())


def image_decoder(scale: float = 1.0) -> Decoder:
    """f(z) = a smooth 28 x 28 'image' (784 outputs) depending on z: for shape checks of the thumbnails."""
    W = torch.tensor(np.random.default_rng(5).standard_normal((784, D)) * 0.1)
    return Decoder(lambda z: torch.sigmoid(scale * (z @ W.T)), D)


# --------------------------------------------------------------------------- URL keys


def test_url_keys_default_to_nothing_and_round_trip():
    state, warnings = parse({})
    assert warnings == []
    assert dict(state.extras) == {"measure": "l2", "span": "dims", "dims": None, "via": None, "extent": "auto",
                                  "grid": "32", "target": None, "view": "slice", "weight": "stretch"}
    assert set(to_query_params(state, schema=schema())) == {"z", "score", "k"}  # defaults stay out of the link
    link = {"measure": "bernoulli_kl", "span": "neighbours", "dims": "7,2", "via": "99,0", "extent": "1.5",
            "grid": "64", "target": "42", "view": "map", "weight": "mf"}
    state, warnings = parse(link)
    assert warnings == []
    assert state.extras["dims"] == (7, 2) and state.extras["via"] == (99, 0) and state.extras["target"] == 42
    params = to_query_params(state, schema=schema())
    assert {k: params[k] for k in link} == link


@pytest.mark.parametrize("key, raw, phrase", [
    ("dims", "3,3", "two different latent dimensions"),
    ("dims", "3", "two different latent dimensions"),
    ("dims", "0,10", "in 0..9"),
    ("dims", "a,b", "two different latent dimensions"),
    ("via", "5", "2 different item numbers"),
    ("via", "5,5", "2 different item numbers"),
    ("via", "5,100", "in 0..99"),
    ("target", "-1", "one item number"),
    ("target", "1.5", "one item number"),
    ("target", "7,8", "one item number"),
    ("measure", "kll", "choose one of: l2, bernoulli_kl"),
    ("span", "axes", "choose one of: dims, neighbours"),
    ("extent", "2.5", "choose one of"),
    ("grid", "48", "choose one of: 32, 64"),
    ("view", "globe", "choose one of: slice, map"),
])
def test_bad_values_warn_and_fall_back_to_the_default(key, raw, phrase):
    state, warnings = parse({key: raw})
    defaults, _ = parse({})
    assert len(warnings) == 1 and key in warnings[0] and phrase in warnings[0], warnings
    assert state.extras[key] == defaults.extras[key]
    assert key not in to_query_params(state, schema=schema())


# --------------------------------------------------------------------------- slices


def test_most_active_orders_by_kl_and_breaks_ties_by_index():
    assert most_active([0.1, 2.0, 0.5, 2.0, 0.0]) == (1, 3)
    assert most_active([0.0, 0.0, 0.0], 3) == (0, 1, 2)
    with pytest.raises(ValueError):
        most_active([1.0], 2)


def test_extent_choices():
    assert parse_extent("auto") is None
    assert [parse_extent(e) for e in EXTENTS[1:]] == [float(e) for e in EXTENTS[1:]]
    with pytest.raises(ValueError, match="choose one of"):
        parse_extent("7")


def test_dims_slice_is_the_axis_slice_through_z():
    z = np.linspace(-1, 1, D)
    sl = build_slice(z, span="dims", dims=(4, 1), resolution=5)
    ref = axis_slice(z, 4, 1, extent=3.0, resolution=5)
    np.testing.assert_array_equal(sl.nodes(), ref.nodes())
    assert build_slice(z, span="dims", dims=(4, 1), extent=1.5).extent == (-1.5, 1.5, -1.5, 1.5)


def test_neighbour_slice_contains_both_items_and_is_orthonormal():
    rng = np.random.default_rng(0)
    z, za, zb = rng.standard_normal((3, D))
    sl = build_slice(z, span="neighbours", via=(za, zb), resolution=9)
    assert sl.u @ sl.v == pytest.approx(0, abs=1e-12)
    assert np.linalg.norm(sl.u) == pytest.approx(1) and np.linalg.norm(sl.v) == pytest.approx(1)
    for p in (za, zb):  # each item lies in the plane: projecting and mapping back recovers it
        np.testing.assert_allclose(sl.to_latent(sl.project(p[None])), p[None], atol=1e-12)
        assert np.all(np.abs(sl.project(p[None])) <= sl.extent[1] + 1e-12)  # inside the auto window
    with pytest.raises(ValueError, match="collinear"):
        build_slice(z, span="neighbours", via=(z + 1.0, z + 2.0))
    with pytest.raises(ValueError, match="span"):
        build_slice(z, span="diagonal")


# --------------------------------------------------------------------------- magnification


@pytest.mark.parametrize("span", ["dims", "neighbours"])
def test_magnification_of_a_linear_decoder_is_exact_for_both_methods(span):
    decoder, A = linear(D, seed=3)
    rng = np.random.default_rng(1)
    z, za, zb = rng.standard_normal((3, D))
    sl = build_slice(z, span=span, dims=(2, 6), via=(za, zb), resolution=6)
    B = np.stack([sl.u, sl.v], axis=1)  # (d, 2)
    expected = 0.5 * np.log(np.linalg.det(B.T @ A.T @ A @ B))
    for method in ("grid", "exact"):
        mag = magnification_map(decoder, sl, "l2", method)
        assert mag.log_mf.shape == (5, 5) and mag.method == method
        np.testing.assert_allclose(mag.log_mf, expected, rtol=1e-9)
        np.testing.assert_allclose(mag.mf, np.exp(expected), rtol=1e-9)
    np.testing.assert_allclose(mag.s_centres, 0.5 * (sl.s[1:] + sl.s[:-1]))
    with pytest.raises(ValueError, match="grid, exact"):
        magnification_map(decoder, sl, "l2", "jvp")


def test_a_flat_decoder_gives_nan_not_minus_infinity():
    decoder = Decoder(lambda z: torch.zeros(len(z), 784, dtype=z.dtype) + 0 * z[:, :1], D)
    mag = magnification_map(decoder, axis_slice(np.zeros(D), 0, 1, resolution=3), "l2", "grid")
    assert np.isnan(mag.log_mf).all() and (mag.mf == 0).all()


def test_thumbnails_sit_at_the_centres_of_an_even_tiling():
    sl = axis_slice(np.zeros(D), 0, 1, extent=2.0, resolution=32)
    tiles = thumbnail_slice(sl, 4)
    np.testing.assert_allclose(tiles.s, [-1.5, -0.5, 0.5, 1.5])
    np.testing.assert_allclose(tiles.t, [-1.5, -0.5, 0.5, 1.5])
    decoder = image_decoder()
    thumbs = slice_thumbnails(decoder, sl, 4)
    assert thumbs.shape == (4, 4, 28, 28)
    # All 16 centres are decoded in one batch, the reference alone: BLAS may block and fuse the float64 sums
    # differently (the same argument as in test_frame_indices_include_both_ends: under 1e-14 per pixel), while
    # a neighbouring tile's garment differs by about 1e-2.
    reference = decode_means(decoder, tiles.nodes()[1, 3][None]).reshape(28, 28)
    np.testing.assert_allclose(thumbs[1, 3], reference, rtol=0, atol=1e-13)


def test_mosaic_puts_the_highest_t_on_top():
    images = np.zeros((2, 3, 2, 2))
    for r in range(2):
        for c in range(3):
            images[r, c] = 10 * r + c
    m = thumbnail_mosaic(images, gap=1, background=-1)
    assert m.shape == (2 * 2 + 1, 3 * 2 + 2)
    assert m[0, 0] == 10 and m[0, 3] == 11 and m[3, 0] == 0 and m[4, 7] == 2  # top row: t index 1
    assert m[2, 0] == -1 and m[0, 2] == -1  # the gaps


# --------------------------------------------------------------------------- curves and rankings


def test_frame_indices_include_both_ends():
    np.testing.assert_array_equal(frame_indices(32, 10), [0, 3, 7, 10, 14, 17, 21, 24, 28, 31])
    np.testing.assert_array_equal(frame_indices(3, 10), [0, 1, 2])
    decoder = image_decoder()
    curve = np.linspace(np.zeros(D), np.ones(D), 32)
    frames = curve_frames(decoder, curve, 10)
    assert frames.shape == (10, 28, 28)
    # The frames come from one batch of 10 decodes, the references from batches of 1, so BLAS may block and fuse
    # the sums differently (it picks kernels by CPU and batch shape). Each pixel is sigmoid(w . z) in float64
    # with d = 10 terms: two orders of summation differ by at most 2 gamma_10 sum_k |w_k z_k| <= 2 * 10 * 2^-53 * 4.5
    # (z in [0, 1]^10, |w_k| <= 0.1 * 4.5 over 7840 normal draws), and sigmoid is 1/4-Lipschitz and adds a few
    # ulps of 1: under 1e-14 in all. A wrong frame (a neighbouring curve point) differs by about 1e-3.
    for frame, point in ((frames[0], curve[0]), (frames[-1], curve[-1])):
        np.testing.assert_allclose(frame, decode_means(decoder, point[None]).reshape(28, 28), rtol=0, atol=1e-13)


def test_top_k_and_ranks_agree_with_brute_force_sorting():
    rng = np.random.default_rng(2)
    values = rng.integers(0, 20, 200).astype(float)  # many ties
    values[[5, 17]] = np.inf  # unreachable items never make the top
    items, vals = top_k(values, 30)
    order = sorted(range(200), key=lambda i: (values[i], i))
    assert items.tolist() == order[:30]
    np.testing.assert_array_equal(vals, values[items])
    assert ranks_of(values, items, higher_is_nearer=False).tolist() == list(range(1, 31))
    down = sorted(range(200), key=lambda i: (-values[i], i))
    assert ranks_of(values, down[:7], higher_is_nearer=True).tolist() == list(range(1, 8))
    assert top_k(np.full(4, np.inf), 3)[0].size == 0


def test_graph_stretch_of_a_scaled_identity_is_the_scale():
    means = np.random.default_rng(3).standard_normal((300, D))
    c = 2.5
    decoder = Decoder(lambda z: c * torch.cat([z, torch.zeros(len(z), 774, dtype=z.dtype)], 1), D)
    graph = LatentGraph(k=6, prune_quantile=None).fit(decoder, means)
    np.testing.assert_allclose(graph_stretch(graph), c, rtol=1e-9)
    with pytest.raises(ValueError, match="not fitted"):
        graph_stretch(LatentGraph())


# --------------------------------------------------------------------------- cartograms


def test_a_uniform_magnification_leaves_the_slice_unchanged():
    decoder, _ = linear(D, seed=4)
    sl = axis_slice(np.zeros(D), 0, 1, extent=2.0, resolution=9)
    cart = slice_cartogram(magnification_map(decoder, sl, "l2"), sl, cells=16)
    assert cart.extent == (-2.0, 2.0, -2.0, 2.0)
    gx, gy = np.meshgrid(np.linspace(-2, 2, 17), np.linspace(-2, 2, 17))
    np.testing.assert_allclose(cart.corners, np.stack([gx, gy], -1), atol=1e-9)
    p = np.array([[0.3, -1.2], [5.0, 0.0], [np.nan, 0.0]])
    out = carry(cart, p)
    np.testing.assert_allclose(out[0], p[0], atol=1e-9)
    assert np.isnan(out[1:]).all()  # outside the window, or not a point: a gap


def test_stretched_tiles_follow_the_magnification_and_keep_the_total_area():
    # A decoder that changes fast for z0 > 0 and slowly for z0 < 0: the right half must grow.
    def f(z):
        s = torch.where(z[:, :1] > 0, 3.0 * z[:, :1], z[:, :1])
        return torch.cat([s, z[:, 1:2], torch.zeros(len(z), 782, dtype=z.dtype)], 1)

    decoder = Decoder(f, D)
    sl = axis_slice(np.zeros(D), 0, 1, extent=2.0, resolution=33)
    cart = slice_cartogram(magnification_map(decoder, sl, "l2"), sl, cells=32)
    centres, areas = block_areas(cart, sl, 4)
    assert areas.sum() == pytest.approx(16.0, rel=1e-9)  # the frame is fixed
    assert areas[:, 2:].sum() > 1.3 * areas[:, :2].sum()
    assert (areas > 0).all()
    assert centres[0, 3, 0] > centres[0, 2, 0] > centres[0, 1, 0]
    np.testing.assert_allclose(cell_areas(cart.corners).sum(), 16.0, rtol=1e-9)


def test_map_cartogram_carries_every_point_inside_its_frame():
    rng = np.random.default_rng(4)
    pts = rng.standard_normal((500, 2))
    cart = map_cartogram(pts, np.where(pts[:, 0] > 0, 4.0, 1.0), cells=16)
    moved = cart.map_points(pts)
    x0, x1, y0, y1 = cart.extent
    assert np.all((moved[:, 0] >= x0) & (moved[:, 0] <= x1) & (moved[:, 1] >= y0) & (moved[:, 1] <= y1))
    # The heavier right half takes more room: the border between the halves moves left, and the right half's
    # points spread further apart than the left half's.
    border = np.abs(pts[:, 0]) < 0.1
    assert np.median(moved[border, 0]) < np.median(pts[border, 0]) - 0.1
    right, left = pts[:, 0] > 0, pts[:, 0] <= 0
    assert moved[right, 0].std() / moved[left, 0].std() > 1.2 * pts[right, 0].std() / pts[left, 0].std()


def test_grid_lines_draw_every_nth_row_and_column_and_the_frame():
    corners = np.stack(np.meshgrid(np.arange(6.0), np.arange(4.0)), -1)  # (4, 6, 2)
    xs, ys = grid_lines(corners, every=2)
    assert xs.count(None) == ys.count(None) == 3 + 4  # rows 0, 2, 3; columns 0, 2, 4, 5
    assert len(xs) == 3 * (6 + 1) + 4 * (4 + 1)
    assert xs[:6] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and ys[:6] == [0.0] * 6
    with pytest.raises(ValueError):
        grid_lines(corners[..., 0])


def test_magnification_weights_are_relative_mf_with_collapsed_items_at_the_floor():
    from latent.cartography import magnification_weights

    log_mf = np.array([-2.0, 0.5, -np.inf, 1.5, np.nan])
    w = magnification_weights(log_mf)
    finite = np.isfinite(log_mf)
    np.testing.assert_allclose(w[finite], np.exp(log_mf[finite]) / np.exp(1.5))
    assert w.max() == 1.0 and w[2] == w[4] == pytest.approx(np.exp(-2.0 - 1.5))
    assert magnification_weights(np.full(3, -np.inf)).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        magnification_weights(np.zeros((2, 2)))


def test_url_measure_names_match_the_geometry_measures_and_need_no_torch() -> None:
    import subprocess
    import sys

    from latent.cartography_url import MEASURE_NAMES
    from latent.geometry import MEASURES

    assert tuple(MEASURES) == MEASURE_NAMES
    # Every page reads the URL schema at start-up: it must not pull in torch or scipy.
    code = "import sys, latent.cartography_url; print(sorted({'torch', 'scipy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- numbers the page shows


def image_pixels(z: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """numpy copy of :func:`image_decoder`: sigmoid(scale * z W^T) for points (n, d) -> (n, 784), float64."""
    W = np.random.default_rng(5).standard_normal((784, D)) * 0.1
    return 1.0 / (1.0 + np.exp(-scale * (np.atleast_2d(z) @ W.T)))


def test_straight_path_length_is_the_sum_of_its_decoded_segments():
    rng = np.random.default_rng(11)
    za, zb = rng.standard_normal(D), rng.standard_normal(D)
    path = straight_path(image_decoder(3.0), za, zb, "l2")
    t = np.arange(CURVE_POINTS)[:, None] / (CURVE_POINTS - 1)
    curve = za + t * (zb - za)  # brute force: the K points, each decoded on its own
    np.testing.assert_allclose(path.curve, curve, rtol=0, atol=1e-15)
    f = image_pixels(curve, 3.0)
    # float64 sums of 31 segment norms over 784 pixels: a few ulps of the total, 1e-12 relative is generous.
    assert path.length == pytest.approx(sum(np.linalg.norm(f[k + 1] - f[k]) for k in range(CURVE_POINTS - 1)),
                                        rel=1e-12)
    assert path.chord == pytest.approx(np.linalg.norm(f[-1] - f[0]), rel=1e-12)
    assert path.chord <= path.length  # the triangle inequality: no path is shorter than the chord


def test_straight_path_under_bernoulli_kl_sums_root_two_kl():
    rng = np.random.default_rng(12)
    za, zb = rng.standard_normal(D), rng.standard_normal(D)
    path = straight_path(image_decoder(2.0), za, zb, "bernoulli_kl", n_points=5)
    f = image_pixels(np.linspace(za, zb, 5), 2.0)

    def root_two_kl(p, q):
        return np.sqrt(2 * np.sum(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))))

    assert path.length == pytest.approx(sum(root_two_kl(f[k], f[k + 1]) for k in range(4)), rel=1e-9)
    assert path.chord == pytest.approx(root_two_kl(f[0], f[-1]), rel=1e-9)


def test_other_items_drop_the_query_own_item_and_keep_the_order():
    mu = np.arange(12, dtype=np.float32).reshape(6, 2)
    z = mu[3].copy()
    assert other_items([3, 5, 0, 1], mu, z) == [5, 0, 1]
    assert other_items(np.array([3, 5, 0, 1]), mu, z, 2) == [5, 0]
    assert other_items([3], mu, z) == []
    mu[4] = z  # a second item with the same mean is the query too
    assert other_items([4, 3, 2], mu, z) == [2]


def test_max_difference_ignores_nan_cells():
    centres = np.zeros(2)
    a = MagnificationMap(np.array([[0.0, 1.0], [np.nan, 2.0]]), "grid", "l2", centres, centres)
    b = MagnificationMap(np.array([[0.5, 1.0], [7.0, -1.0]]), "exact", "l2", centres, centres)
    assert a.max_difference(b) == 3.0 and b.max_difference(a) == 3.0
    with pytest.raises(ValueError, match="different cells"):
        a.max_difference(MagnificationMap(np.zeros((3, 2)), "exact", "l2", np.zeros(2), np.zeros(3)))


def test_garment_sizes_fill_the_stretched_tiles_and_the_area_range():
    sl = axis_slice(np.zeros(D), 0, 1, extent=2.0, resolution=16)
    rng = np.random.default_rng(4)
    mag = MagnificationMap(rng.uniform(-1, 1, (15, 15)), "grid", "l2", sl.s[:-1], sl.t[:-1])
    cart = slice_cartogram(mag, sl, cells=16)
    centres, sides = garment_sizes(cart, sl, 4, fill=0.5)
    ref_centres, areas = block_areas(cart, sl, 4)
    np.testing.assert_array_equal(centres, ref_centres)
    np.testing.assert_allclose(sides ** 2, 0.25 * areas, rtol=1e-12)  # a square of half the side: a quarter of it
    target = cart.target_areas()
    assert area_range(cart) == pytest.approx(target.max() / target.min(), rel=1e-15)
    assert area_range(cart) >= 1.0
