"""ui/figures/map.py: one trace per class holding exactly that class's items, and the query highlighted."""

from __future__ import annotations

import numpy as np
import pytest

from latent.data import CLASS_NAMES
from ui.figures.map import atlas_map, class_traces, query_marker
from ui.palette import CLASS_COLOURS, CLASS_SYMBOLS, QUERY_COLOUR


@pytest.fixture
def points():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    labels[:10] = np.arange(10)  # every class present
    return rng.standard_normal((500, 2)), labels


def test_class_traces_hold_each_class_once_with_its_items(points):
    xy, labels = points
    traces = class_traces(xy, labels, items=np.arange(len(xy)) + 1000)
    assert [t.name for t in traces] == list(CLASS_NAMES)
    assert sum(len(t.x) for t in traces) == len(xy)
    for c, t in enumerate(traces):
        items = np.asarray(t.customdata) - 1000
        assert (labels[items] == c).all() and len(items) == (labels == c).sum()
        np.testing.assert_array_equal(np.c_[t.x, t.y], xy[items])
        assert t.marker.color == CLASS_COLOURS[c] and t.marker.symbol == CLASS_SYMBOLS[c]
        assert t.type == "scattergl" and CLASS_NAMES[c] in t.hovertemplate and "customdata" in t.hovertemplate


def test_one_legend_entry_and_no_items(points):
    xy, labels = points
    traces = class_traces(xy, labels, size=5, opacity=0.45, shapes=False, legend="catalog means",
                          meta={"what": "background"})
    assert {t.name for t in traces} == {"catalog means"}
    assert [bool(t.showlegend) for t in traces] == [True] + [False] * 9
    assert all(t.customdata is None and t.marker.symbol is None for t in traces)
    assert [t.meta for t in traces] == [{"what": "background", "class": c} for c in range(10)]
    assert all(t.marker.size == 5 and t.marker.opacity == 0.45 for t in traces)


def test_atlas_map_rings_the_neighbours_and_stars_the_query(points):
    xy, labels = points
    neighbours = np.array([4, 17, 250])
    fig = atlas_map(xy, labels, neighbours, np.array([0.25, -1.5]), "top-3 (kl)", height=700, font=13)
    traces = {t.name: t for t in fig.data}
    assert len(fig.data) == 12
    rings = traces["top-3 (kl)"]
    assert list(rings.customdata) == neighbours.tolist()
    np.testing.assert_array_equal(np.c_[rings.x, rings.y], xy[neighbours])
    star = traces["query z"]
    assert (star.x, star.y) == ((0.25,), (-1.5,))
    assert star.marker.symbol == "star" and star.marker.color == QUERY_COLOUR
    assert fig.data[-1].name == "query z", "the query is drawn last, on top"
    assert fig.layout.height == 700 and fig.layout.clickmode == "event+select"


def test_query_marker():
    m = query_marker(20)
    assert m == dict(size=20, symbol="star", color=QUERY_COLOUR, line=dict(width=1.5, color="#000000"))
