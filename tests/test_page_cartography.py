"""The Cartography page (AppTest): what it shows equals independent computations through the geometry library."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from latent.data import CLASS_NAMES
from latent.geodesic import LatentGraph, continuous_geodesic, straight_line
from latent.geometry import (
    axis_slice,
    curve_length,
    decode_grid,
    grid_magnification,
    slice_through,
    torch_threads,
    vae_decoder,
)
from tests.apptest_support import captions_with, load_expected, new_app, param, params, plotly_array

PAGE = "pages/cartography.py"
Z = "0.5,-1,1.5,0,0.25,-0.5,0,0,1,-2"

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def expected(real_data):
    return load_expected(real_data)


@pytest.fixture(scope="module")
def decoder(expected):
    return vae_decoder(expected.model)


@pytest.fixture(autouse=True)
def graph_folder(tmp_path, monkeypatch):
    """Keep the page's geodesic graph in a folder of this test (never the user's cache)."""
    import ui.geometry_resources as gr

    folder = tmp_path / "graphs"
    monkeypatch.setattr(gr, "graph_file", lambda key: folder / f"graph-{abs(hash(key))}.npz")
    return folder


def chain(mu: np.ndarray) -> LatentGraph:
    """A fitted-state LatentGraph whose edges join the items in the order of their first coordinate."""
    from scipy import sparse

    order = np.argsort(mu[:, 0], kind="stable")
    edges = np.sort(np.stack([order[:-1], order[1:]], axis=1), axis=1)
    weights = np.linalg.norm(mu[edges[:, 0]].astype(np.float64) - mu[edges[:, 1]], axis=1) + 1e-6
    graph = LatentGraph(k=10, measure="l2")
    graph.means_, graph.edges_, graph.weights_ = mu, edges, weights
    graph.threshold_, graph.n_pruned_, graph.n_bridges_ = np.inf, 0, 0
    graph.graph_ = sparse.csr_matrix((weights, (edges[:, 0], edges[:, 1])), shape=(len(mu), len(mu)))
    return graph


def query_z(at) -> np.ndarray:
    return np.array([float(v) for v in param(at, "z").split(",")], np.float32)


def chart(at, key: str) -> dict:
    (element,) = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    return json.loads(element.proto.spec)


def metric(at, label: str) -> float:
    (m,) = [m for m in at.metric if m.label == label]
    return float(m.value)


def kl_order(expected) -> tuple[int, int]:
    from latent.catalog import kl_per_dimension

    kl = kl_per_dimension(expected.catalog)
    order = sorted(range(len(kl)), key=lambda j: (-kl[j], j))
    return order[0], order[1]


def nearest_other_item(expected, z: np.ndarray) -> int:
    """The top likelihood neighbour whose mean is not z itself (brute force over the catalog)."""
    scores = expected.index.scores_all(z, score="likelihood")
    for i in np.lexsort((np.arange(len(scores)), -scores)):
        if not np.array_equal(expected.catalog.mu[i], z):
            return int(i)
    raise AssertionError("no other item")


def test_heatmap_is_the_grid_magnification_of_the_slice_through_the_two_most_active_dimensions(expected, decoder):
    at = new_app(PAGE, z=Z).run()
    assert not at.exception
    z = query_z(at).astype(np.float64)
    i, j = kl_order(expected)
    heat = chart(at, "carto_heatmap")["data"][0]
    assert heat["type"] == "heatmap"
    sl = axis_slice(z, i, j, extent=3.0, resolution=32)
    with torch_threads(1):
        mf = grid_magnification(decode_grid(decoder, sl), sl.spacing, "l2")
    np.testing.assert_allclose(plotly_array(heat["z"]).astype(float), np.log(mf), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(plotly_array(heat["x"]).astype(float), 0.5 * (sl.s[1:] + sl.s[:-1]) + z[i])
    np.testing.assert_allclose(plotly_array(heat["y"]).astype(float), 0.5 * (sl.t[1:] + sl.t[:-1]) + z[j])
    layout = chart(at, "carto_heatmap")["layout"]
    assert layout["xaxis"]["title"]["text"] == f"z{i}" and layout["yaxis"]["title"]["text"] == f"z{j}"


def test_neighbour_slice_under_bernoulli_kl_on_a_fine_grid(expected, decoder):
    via = (61234, 4321)
    at = new_app(PAGE, z=Z, span="neighbours", via=f"{via[0]},{via[1]}", measure="bernoulli_kl", grid="64",
                 extent="2").run()
    assert not at.exception
    z = query_z(at).astype(np.float64)
    mu = expected.catalog.mu.astype(np.float64)
    sl = slice_through(z, mu[via[0]], mu[via[1]], extent=2.0, resolution=64)
    with torch_threads(1):
        mf = grid_magnification(decode_grid(decoder, sl), sl.spacing, "bernoulli_kl")
    heat = chart(at, "carto_heatmap")["data"][0]
    np.testing.assert_allclose(plotly_array(heat["z"]).astype(float), np.log(mf), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(plotly_array(heat["x"]).astype(float), 0.5 * (sl.s[1:] + sl.s[:-1]))


def test_straight_line_length_and_geodesic(expected, decoder):
    at = new_app(PAGE, z=Z).run()
    z = query_z(at).astype(np.float64)
    target = nearest_other_item(expected, query_z(at))
    assert at.selectbox(key="w_carto_target").value == target
    zb = expected.catalog.mu[target].astype(np.float64)
    with torch_threads(1):
        straight = curve_length(decoder, straight_line(z, zb, 32), "l2")
    assert metric(at, "Straight line") == pytest.approx(straight, abs=5e-4)
    assert not [m for m in at.metric if m.label == "Geodesic"]

    at.button(key="btn_carto_geodesic").click().run()
    assert not at.exception
    with torch_threads(1):
        reference = continuous_geodesic(decoder, z, zb, n_points=32, measure="l2")
    assert metric(at, "Geodesic") == pytest.approx(reference.length, rel=1e-5, abs=5e-4)
    assert metric(at, "Geodesic") <= metric(at, "Straight line") + 1e-3
    names = [t.get("name", "") for t in chart(at, "carto_heatmap")["data"]]
    assert any(n.startswith("geodesic") for n in names) and any(n.startswith("straight line") for n in names)
    (_, _), = captions_with(at, r"^Geodesic \(constant decoded speed\)")
    # A rerun shows the same geodesic without asking again.
    at.run()
    assert metric(at, "Geodesic") == pytest.approx(reference.length, rel=1e-5, abs=5e-4)


def test_choices_change_the_view_and_the_link(expected):
    at = new_app(PAGE, z=Z).run()
    _, j = kl_order(expected)
    at.selectbox(key="w_carto_dim_x").set_value(3).run()
    assert param(at, "dims") == f"3,{j}"
    at.selectbox(key="w_carto_dim_y").set_value(3).run()  # picking the other axis's dimension swaps them
    assert param(at, "dims") == f"{j},3"
    at.radio(key="w_carto_span").set_value("neighbours").run()
    assert not at.exception and param(at, "span") == "neighbours"
    first, second = at.selectbox(key="w_carto_via_x").value, at.selectbox(key="w_carto_via_y").value
    at.selectbox(key="w_carto_via_y").set_value(at.selectbox(key="w_carto_via_y").options[4]).run()
    assert not at.exception and param(at, "via").startswith(f"{first},") and param(at, "via") != f"{first},{second}"
    at.radio(key="w_carto_measure").set_value("bernoulli_kl").run()
    at.select_slider(key="w_carto_extent").set_value("1").run()
    at.radio(key="w_carto_view").set_value("map").run()
    assert not at.exception
    assert any("not built yet" in i.value for i in at.info)
    assert {k: param(at, k) for k in ("measure", "extent", "view")} == {"measure": "bernoulli_kl", "extent": "1",
                                                                       "view": "map"}
    at.number_input(key="w_carto_target_any").set_value(12345).run()
    at.button(key="btn_carto_target_any").click().run()
    assert not at.exception and param(at, "target") == "12345"


def test_a_link_round_trips_and_reopens_the_same_view():
    link = {"z": Z, "measure": "bernoulli_kl", "span": "neighbours", "dims": "2,5", "via": "100,200",
            "extent": "3", "target": "300", "k": "5"}
    defaults = {"grid": "32", "view": "slice"}
    first = new_app(PAGE, **link, **defaults).run()
    assert not first.exception and not first.warning
    shown = params(first)
    assert {k: shown.get(k) for k in link} == link
    assert not set(defaults) & set(shown)  # defaults stay out of the link
    second = new_app(PAGE, **shown).run()
    assert params(second) == shown and not second.warning
    assert second.radio(key="w_carto_measure").value == "bernoulli_kl"
    assert (second.selectbox(key="w_carto_via_x").value, second.selectbox(key="w_carto_via_y").value) == (100, 200)
    assert second.selectbox(key="w_carto_target").value == 300
    assert chart(first, "carto_heatmap") == chart(second, "carto_heatmap")


def test_bad_link_values_warn_and_fall_back():
    at = new_app(PAGE, z=Z, dims="4,4", measure="kll", via="7", target="-3", grid="48", view="globe").run()
    assert not at.exception
    (warning,) = at.warning
    for key in ("dims", "measure", "via", "target", "grid", "view"):
        assert key in warning.value, key
    shown = params(at)
    assert not {"dims", "measure", "via", "target", "grid", "view"} & set(shown)


def test_geodesic_ranking_is_dijkstra_on_the_cached_graph(expected, decoder, graph_folder, monkeypatch):
    at = new_app(PAGE, z=Z, k="6").run()
    assert any("not built yet" in i.value for i in at.info)
    assert at.button(key="btn_carto_graph")
    # A cheap stand-in graph saved where the page looks for the real one: a chain through all items in the order
    # of their first coordinate, weighed by latent distance (building the real one takes about a minute).
    import ui.geometry_resources as gr

    key = LatentGraph(k=gr.GRAPH_K, measure="l2").cache_key(expected.catalog.key)
    chain(expected.catalog.mu).save(gr.graph_file(key), key)
    at.run()
    assert not at.exception and not at.info
    z = query_z(at)
    graph = LatentGraph.load(gr.graph_file(key), key)
    with torch_threads(1):
        distances = graph.query(decoder, z.astype(np.float64)).distances
    order = np.lexsort((np.arange(len(distances)), distances))[:6]
    shown = [(int(m.group(1)), float(m.group(2)), int(m.group(3))) for c, _ in captions_with(at, "likelihood #")
             for m in [re.search(r"#(\d+) · ([\d.]+) · likelihood #(\d+)", c)]]
    assert [s[0] for s in shown] == order.tolist()
    np.testing.assert_allclose([s[1] for s in shown], distances[order], atol=0.005)
    loglik = expected.index.scores_all(z, score="likelihood")
    like_order = np.lexsort((np.arange(len(loglik)), -loglik))
    assert [s[2] for s in shown] == [int(np.flatnonzero(like_order == i)[0]) + 1 for i in order]
    first = next(c for c, _ in captions_with(at, "geodesic #"))
    assert first.startswith(CLASS_NAMES[int(expected.catalog.labels[like_order[0]])])


def test_items_that_span_no_plane_fall_back_to_the_two_most_active_dimensions(expected):
    item, other = 4321, 61234
    at = new_app(PAGE, item=str(item), span="neighbours", via=f"{item},{other}").run()  # z is item's own mean
    assert not at.exception
    (warning,) = at.warning
    assert "do not span a plane" in warning.value
    i, j = kl_order(expected)
    layout = chart(at, "carto_heatmap")["layout"]
    assert layout["xaxis"]["title"]["text"] == f"z{i}" and layout["yaxis"]["title"]["text"] == f"z{j}"
    assert param(at, "via") == f"{item},{other}"  # the user's choice stays in the link



def test_map_weighted_by_magnification_offers_the_computation_until_it_exists(expected, graph_folder):
    at = new_app(PAGE, z=Z, view="map", weight="mf").run()
    assert not at.exception
    assert any("magnification factor at every one of the 70,000 means" in i.value for i in at.info)
    assert at.button(key="btn_carto_mf").label == "Compute the magnification at every mean"
    assert param(at, "weight") == "mf" and param(at, "view") == "map"
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("carto_map")]


def test_build_buttons_ask_for_the_work_through_a_request_that_survives_reruns(expected, graph_folder, monkeypatch):
    """The heavy jobs run when their button is clicked (here with the job replaced by a recorder: the real
    ones take minutes and are tested in the library)."""
    import ui.geometry_resources as gr

    asked = []
    monkeypatch.setattr(gr, "build_catalog_magnification", lambda res: asked.append("mf") or None)
    at = new_app(PAGE, z=Z, view="map", weight="mf").run()
    at.button(key="btn_carto_mf").click().run()
    assert not at.exception
    assert asked == ["mf"]
    at.run()
    assert asked == ["mf"], "a request is taken once"
