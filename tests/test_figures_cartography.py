"""ui/figures/cartography.py: the figures draw what they are given where the page's axes say."""

from __future__ import annotations

import numpy as np

from latent.cartography import MagnificationMap
from latent.data import CLASS_NAMES
from ui.figures.cartography import Path, SliceAxes, magnification_heatmap, map_cartogram, slice_cartogram

AXES = SliceAxes(offset=(0.5, -1.0), extent=(-3.0, 3.0, -2.0, 2.0), x_title="z2", y_title="z7")


def mag_map() -> MagnificationMap:
    rng = np.random.default_rng(1)
    return MagnificationMap(rng.standard_normal((4, 5)), "grid", "l2", np.linspace(-2.4, 2.4, 5),
                            np.linspace(-1.5, 1.5, 4))


def test_heatmap_is_the_log_mf_on_shifted_axes_with_the_query_at_the_offset():
    mag = mag_map()
    straight = Path(np.array([[0.0, 0.0], [1.0, 1.0]]), 2.5)
    geodesic = Path(np.array([[0.0, 0.0], [0.5, 1.2], [1.0, 1.0]]), 2.25)
    fig = magnification_heatmap(mag, AXES, neighbours=np.array([[0.1, 0.2]]), neighbour_items=[42], k=5,
                                straight=straight, geodesic=geodesic, target=np.array([[1.0, 1.0]]),
                                target_label="#9 · Bag")
    heat = fig.data[0]
    np.testing.assert_array_equal(heat.z, mag.log_mf)
    np.testing.assert_allclose(heat.x, mag.s_centres + 0.5)
    np.testing.assert_allclose(heat.y, mag.t_centres - 1.0)
    names = [t.name for t in fig.data[1:]]
    assert names == ["top-5 likelihood (projected)", "straight line · 2.50", "geodesic · 2.25", "target #9 · Bag",
                     "query z"]
    lines = {t.name: t for t in fig.data[1:]}
    np.testing.assert_allclose(np.c_[lines["geodesic · 2.25"].x, lines["geodesic · 2.25"].y],
                               geodesic.points + np.array([0.5, -1.0]))
    assert (fig.data[-1].x, fig.data[-1].y) == ((0.5,), (-1.0,))
    assert list(fig.data[1].customdata) == [42]
    assert list(fig.layout.xaxis.range) == [-2.5, 3.5] and list(fig.layout.yaxis.range) == [-3.0, 1.0]
    assert fig.layout.xaxis.title.text == "z2" and fig.layout.yaxis.title.text == "z7"


def test_heatmap_without_a_target_shows_only_the_map_and_the_query():
    fig = magnification_heatmap(mag_map(), AXES)
    assert [t.type for t in fig.data] == ["heatmap", "scatter"] and fig.data[1].name == "query z"


def test_slice_cartogram_places_each_garment_at_its_tile():
    tiles = np.random.default_rng(2).uniform(0, 1, (2, 2, 28, 28))
    centres = np.array([[[-1.0, -1.0], [1.0, -1.0]], [[-1.0, 1.0], [1.0, 1.0]]])
    sides = np.array([[0.5, 1.0], [1.5, 2.0]])
    fig = slice_cartogram([0.0, 1.0, None, 2.0], [0.0, 1.0, None, 0.0], AXES, np.array([[0.0, 0.0]]), tiles=tiles,
                          centres=centres, sides=sides, straight=np.array([[0.0, 0.0], [np.nan, np.nan]]))
    grid = fig.data[0]
    np.testing.assert_array_equal(grid.x, [0.5, 1.5, np.nan, 2.5])  # None: a break between lines
    images = fig.layout.images
    assert len(images) == 4
    for image, (r, c) in zip(images, [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
        assert (image.x, image.y) == (centres[r, c, 0] + 0.5, centres[r, c, 1] - 1.0)
        assert image.sizex == image.sizey == sides[r, c]
        assert image.source.startswith("data:image/png;base64,")
    assert [t.name for t in fig.data] == ["grid lines", "straight line", "query z"]
    assert fig.layout.yaxis.scaleanchor == "x"
    assert not slice_cartogram([0.0], [0.0], AXES, np.zeros((1, 2))).layout.images


def test_map_cartogram_draws_every_item_by_class_and_the_query():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), 7)
    moved = rng.standard_normal((70, 2))
    fig = map_cartogram([0.0, 1.0], [0.0, 1.0], moved, labels, np.array([[0.3, 0.4]]))
    assert [t.name for t in fig.data] == ["grid lines", *CLASS_NAMES, "query z"]
    for c, t in enumerate(fig.data[1:11]):
        assert (labels[np.asarray(t.customdata)] == c).all()
        np.testing.assert_array_equal(np.c_[t.x, t.y], moved[np.asarray(t.customdata)])
    assert (fig.data[-1].x, fig.data[-1].y) == ((0.3,), (0.4,))
