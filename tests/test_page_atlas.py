"""The Atlas page (AppTest): the 70k-point WebGL map, the query placed on it, and its neighbours."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from latent import paths
from latent.data import CLASS_NAMES
from tests.apptest_support import load_expected, new_app, param, plotly_array

PAGE = "pages/atlas.py"


@pytest.fixture(scope="module")
def expected(real_data):
    return load_expected(real_data)


@pytest.fixture(scope="module")
def shipped_map(expected):
    with np.load(paths.MODELS_DIR / "umap.npz", allow_pickle=False) as npz:
        assert str(npz["key"]) == expected.catalog.key, "models/umap.npz was made for another model or dataset"
        return npz["embedding"]


def figure(at) -> dict:
    (chart,) = [c for c in at.get("plotly_chart") if c.proto.id.endswith("atlas_map")]
    return json.loads(chart.proto.spec)


def test_map_shows_every_item_by_class_in_webgl(expected, shipped_map):
    at = new_app(PAGE).run()
    assert not at.exception
    traces = figure(at)["data"]
    classes = traces[: len(CLASS_NAMES)]
    assert [t["name"] for t in classes] == list(CLASS_NAMES)
    assert {t["type"] for t in traces} == {"scattergl"}
    assert sum(len(plotly_array(t["x"])) for t in classes) == 70000
    assert len({t["marker"]["symbol"] for t in classes}) == 10, "class must not rely on colour alone"
    for c, trace in enumerate(classes):
        items = plotly_array(trace["customdata"]).astype(int)
        assert (expected.catalog.labels[items] == c).all()
        np.testing.assert_allclose(plotly_array(trace["x"]), shipped_map[items, 0], rtol=1e-6)
        assert CLASS_NAMES[c] in trace["hovertemplate"] and "customdata" in trace["hovertemplate"]


@pytest.mark.parametrize("score, k", [("likelihood", 8), ("euclidean", 5), ("kl", 12)])
def test_query_and_neighbours_are_placed_right(expected, shipped_map, score, k):
    z_text = "1,-0.5,0.25,2,0,0.5,0,0,-1,0.75"
    at = new_app(PAGE, z=z_text, score=score, k=str(k)).run()
    assert not at.exception
    z = np.array([float(v) for v in param(at, "z").split(",")])
    traces = {t["name"]: t for t in figure(at)["data"]}
    rings = traces[f"top-{k} ({score})"]
    items, _ = expected.index.search(z.astype(np.float32), score=score, k=k)
    assert plotly_array(rings["customdata"]).astype(int).tolist() == items.tolist()
    # Independent placement: inverse-distance weights over the 10 nearest means (scipy distances).
    distances = cdist(z[None], expected.catalog.mu.astype(np.float64))[0]
    nearest = np.argsort(distances, kind="stable")[:10]
    weights = 1.0 / distances[nearest]
    reference = (weights[:, None] * shipped_map[nearest]).sum(0) / weights.sum()
    star = traces["query z"]
    np.testing.assert_allclose([plotly_array(star["x"])[0], plotly_array(star["y"])[0]], reference,
                               rtol=1e-4, atol=1e-4)


def test_a_catalog_item_sits_exactly_on_its_own_point(expected, shipped_map):
    item = 777
    at = new_app(PAGE, item=str(item)).run()
    star = {t["name"]: t for t in figure(at)["data"]}["query z"]
    np.testing.assert_allclose([plotly_array(star["x"])[0], plotly_array(star["y"])[0]], shipped_map[item], atol=1e-5)
