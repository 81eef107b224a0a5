"""The sections of the Cartography page below its controls: each draws widgets and figures for one :class:`View`.

The page (``pages/cartography.py``) reads the choices, computes the slice and the paths through
:mod:`ui.geometry_resources` and :mod:`latent.cartography`, and hands them over as one :class:`View`; the
figures are :mod:`ui.figures.cartography`. Nothing here computes: it only lays out what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

from latent.cartography import (
    CURVE_POINTS,
    MAP_WEIGHTS,
    VIEWS,
    MagnificationMap,
    StraightPath,
    area_range,
    carry,
    curve_frames,
    garment_sizes,
    grid_lines,
    ranks_of,
    thumbnail_mosaic,
    top_k,
)
from latent.data import CLASS_NAMES
from latent.geodesic import GeodesicResult
from latent.geometry import Decoder, LatentSlice
from latent.render import png_bytes, strip
from latent.urlstate import QueryState
from ui import cartography_state as cs
from ui import geometry_resources as gr
from ui.figures import cartography as figures
from ui.resources import Resources, get_map, thumbnail_png

if TYPE_CHECKING:
    from latent.geodesic import LatentGraph

MEASURE_LABELS = {"l2": "L2 between decoded images", "bernoulli_kl": "Bernoulli KL (Fisher-Rao)"}
WEIGHT_LABELS = {"stretch": "its stretch on the geodesic graph", "mf": "the magnification factor at its mean"}
VIEW_LABELS = {"slice": "the slice", "map": "the UMAP map of all items"}
FRAMES = 10  # decoded frames per interpolation strip


def item_label(res: Resources, i: int) -> str:
    return f"#{i} · {CLASS_NAMES[int(res.catalog.labels[i])]}"


@dataclass(frozen=True)
class View:
    """What the sections share in one run of the page.

    Attributes:
        sl, key, axes: the slice, its cache key and how its coordinates are drawn.
        grid_mag, exact: the grid-difference log MF_2 and the exact one (None until asked for); tiles: the
            (8, 8, 28, 28) garments over the window.
        candidates: the nearest other items (slice directions and targets); target: the path's target item.
        straight, geo: the straight line to the target and the geodesic (None until asked for).
        like_items, like_values: the query's top-k by likelihood; in_window: those that are not the query's own
            item (drawn on the slice, projected).
    """

    res: Resources
    index: Any  # latent.search.SearchIndex
    presenting: bool
    decoder: Decoder
    q: QueryState
    measure: str
    grid: int
    sl: LatentSlice
    key: gr.SliceKey
    axes: figures.SliceAxes
    grid_mag: MagnificationMap
    exact: MagnificationMap | None
    tiles: np.ndarray
    candidates: list[int]
    target: int | None
    straight: StraightPath | None
    geo: GeodesicResult | None
    like_items: np.ndarray
    like_values: np.ndarray
    in_window: list[int]

    @property
    def mag(self) -> MagnificationMap:
        """The magnification shown: exact when computed, else the grid estimate."""
        return self.exact if self.exact is not None else self.grid_mag

    @property
    def zb(self) -> tuple[float, ...] | None:
        """The target's mean (the geodesic's end), or None without a target."""
        return None if self.target is None else tuple(float(v) for v in self.res.catalog.mu[self.target])

    def label(self, i: int) -> str:
        return item_label(self.res, i)


def slice_section(v: View) -> None:
    """The magnification heatmap with the paths, and the decoded garments over the same window."""
    k = v.q.k
    target_label = v.label(v.target) if v.target is not None else ""
    fig = figures.magnification_heatmap(
        v.mag, v.axes, neighbours=v.sl.project(v.res.catalog.mu[v.in_window].astype(np.float64)) if v.in_window
        else None, neighbour_items=v.in_window, k=k,
        straight=figures.Path(v.sl.project(v.straight.curve), v.straight.length) if v.straight else None,
        geodesic=figures.Path(v.sl.project(v.geo.curve), v.geo.length) if v.geo is not None else None,
        target=v.sl.project(np.array(v.zb)[None]) if v.zb is not None else None, target_label=target_label)
    key_text = [":orange[★] the query z"]
    if v.straight is not None:
        key_text.append(f":red[◆] the target {target_label}")
        key_text.append(f"white dashes: the straight line ({v.straight.length:.2f})")
        if v.geo is not None:
            key_text.append(f":red[━] the geodesic ({v.geo.length:.2f}), projected")
    if v.in_window:
        key_text.append(f"○ the top-{k} likelihood neighbours, projected")

    map_col, tiles_col = st.columns([6, 5], gap="medium")
    with map_col:
        st.plotly_chart(fig, key="carto_heatmap", config={"displaylogo": False})
        st.caption(" · ".join(key_text))
    with tiles_col:
        mosaic = thumbnail_mosaic(v.tiles, gap=2, background=0.25)
        st.image(png_bytes(mosaic, scale=2), output_format="PNG",
                 caption=f"The same window, decoded: {v.tiles.shape[0]} × {v.tiles.shape[1]} garments, z at the "
                         "centre.")
        method = ("exact: 0.5 log det G₂ from two JVPs per cell" if v.exact is not None else
                  "grid-difference estimate: the area of each decoded cell, √(|a|²|b|² − (a·b)²) / (Δs Δt)")
        st.caption(f"{v.grid - 1} × {v.grid - 1} cells, {MEASURE_LABELS[v.measure]}; {method}.")
        if v.exact is None:
            if not v.presenting:
                st.button("Exact magnification (JVPs, a few seconds)", key=cs.BTN_EXACT, on_click=gr.request_exact,
                          args=(v.res, v.key), icon=":material/functions:")
        else:
            st.caption(f"The grid estimate differs from the exact value by at most "
                       f"{v.exact.max_difference(v.grid_mag):.3f} in log MF₂ here.")


def paths_section(v: View) -> None:
    """Straight line or geodesic to the target: the choice of target, the two lengths and their frames."""
    st.subheader("Straight line or geodesic?")
    if v.straight is None:
        st.info("No other item is near enough to draw a path to.")
        return
    left, right = st.columns([2, 5], gap="large")
    with left:
        if v.presenting:
            st.markdown(f"Towards **{v.label(v.target)}**")
        else:
            st.selectbox("Towards item", cs.with_current(v.candidates, (v.target,)), format_func=v.label,
                         help="One of the nearest items by likelihood.", **cs.bind(cs.W_TARGET, "target", v.target))
            a1, a2 = st.columns([3, 2], vertical_alignment="bottom")
            a1.number_input("Or any item", 0, len(v.res.catalog) - 1, value=int(v.target), step=1,
                            key=cs.W_TARGET_ANY)
            a2.button("Use", key=cs.BTN_TARGET_ANY, width="stretch",
                      on_click=lambda: cs.set_extra("target", int(st.session_state[cs.W_TARGET_ANY])))
        if v.geo is None and not v.presenting:
            st.button("Compute the geodesic", key=cs.BTN_GEODESIC, on_click=gr.request_geodesic,
                      args=(v.res, v.q.z, v.zb, v.measure), icon=":material/route:", type="primary",
                      help=f"Minimises the energy of a {CURVE_POINTS}-point latent curve with L-BFGS (about a second).")
        m1, m2 = st.columns(2)
        m1.metric("Straight line", f"{v.straight.length:.3f}")
        if v.geo is not None:
            m2.metric("Geodesic", f"{v.geo.length:.3f}", f"{100 * (v.geo.length / v.straight.length - 1):+.1f} %",
                      delta_color="off")
        st.caption(f"Lengths are Σ D(f(c_k), f(c_k+1)) over {CURVE_POINTS} points under {MEASURE_LABELS[v.measure]}; "
                   f"no path can be shorter than the direct distance D(f(z), f(z_b)) = {v.straight.chord:.3f}.")
    with right:
        st.image(png_bytes(strip(curve_frames(v.decoder, v.straight.curve, FRAMES), scale=2, gap=4)),
                 output_format="PNG", caption=f"Straight line in latent space · length {v.straight.length:.3f}")
        if v.geo is not None:
            st.image(png_bytes(strip(curve_frames(v.decoder, v.geo.curve, FRAMES), scale=2, gap=4)),
                     output_format="PNG",
                     caption=f"Geodesic (constant decoded speed) · length {v.geo.length:.3f} · "
                             f"{v.geo.n_evaluations} evaluations, {v.geo.seconds:.2f} s")
        else:
            st.caption("The geodesic's frames appear here.")


def _gallery(res: Resources, items: np.ndarray, captions: list[str]) -> None:
    st.image([thumbnail_png(res, i, 3) for i in items], caption=captions, width=84, output_format="PNG")


def rankings_section(v: View) -> LatentGraph | None:
    """Nearest by likelihood beside nearest along the manifold (the graph geodesic); returns the graph or None."""
    res, k = v.res, v.q.k
    st.subheader("Nearest by likelihood, nearest along the manifold")
    if cs.take_request(cs.GRAPH_REQUESTED) and gr.get_graph(res, v.measure) is None:
        gr.build_graph(res, v.measure)  # asked for with the button below (a progress bar here, then cached on disk)
    graph = gr.get_graph(res, v.measure)
    distances = gr.graph_distances(res, graph, v.measure, v.q.z) if graph is not None else None
    like_col, geo_col = st.columns(2, gap="large")
    with like_col:
        st.markdown("#### Log-likelihood log q(z|x)")
        st.caption("The posterior density of each item at z. Higher is nearer."
                   + (" *geodesic #r*: the item's rank by graph geodesic distance." if distances is not None else ""))
        captions = [f"{CLASS_NAMES[int(res.catalog.labels[i])]} #{i} · {x:.2f}"
                    for i, x in zip(v.like_items, v.like_values, strict=True)]
        if distances is not None:
            geo_rank = ranks_of(distances, v.like_items, False)
            captions = [f"{c} · geodesic #{r}" for c, r in zip(captions, geo_rank, strict=True)]
        _gallery(res, v.like_items, captions)
    with geo_col:
        st.markdown("#### Graph geodesic distance")
        st.caption("Shortest path from z through the 10-nearest-neighbour graph of all item means, each edge weighed "
                   "by the decoded distance along it (Dijkstra). Lower is nearer. *likelihood #r*: the item's rank by "
                   "likelihood.")
        if graph is None:
            st.info(f"The geodesic graph for this measure is not built yet. Building it decodes all "
                    f"{len(res.catalog):,} means once (about a minute here); it is then cached on disk.",
                    icon=":material/hub:")
            if not v.presenting:
                st.button("Build the geodesic graph", key=cs.BTN_GRAPH, icon=":material/hub:", on_click=cs.request,
                          args=(cs.GRAPH_REQUESTED,))
        else:
            geo_items, geo_dist = top_k(distances, k)
            like_rank = ranks_of(v.index.scores_all(v.q.z_array, score="likelihood"), geo_items, True)
            _gallery(res, geo_items, [f"{CLASS_NAMES[int(res.catalog.labels[i])]} #{i} · {x:.2f} · likelihood #{r}"
                                      for i, x, r in zip(geo_items, geo_dist, like_rank, strict=True)])
    return graph


def cartogram_section(v: View, view: str, weight: str, graph: LatentGraph | None) -> None:
    """The slice or the map of all items, stretched by the measure."""
    st.subheader("Cartogram: latent space stretched by the measure")
    if not v.presenting:
        st.radio("Stretch", VIEWS, format_func=VIEW_LABELS.get, horizontal=True, **cs.bind(cs.W_VIEW, "view", view))
    view_col, note_col = st.columns([3, 1], gap="large")
    if view == "slice":
        _slice_cartogram(v, view_col, note_col)
    else:
        _map_cartogram(v, weight, graph, view_col, note_col)


def _slice_cartogram(v: View, view_col, note_col) -> None:
    cart = gr.stretched_slice(v.res, v.key, v.mag)
    xs, ys = grid_lines(cart.corners, every=4)
    garments = {}
    if st.session_state.setdefault(cs.W_GARMENTS, True):  # each garment at its stretched tile's size
        centres, sides = garment_sizes(cart, v.sl, v.tiles.shape[0])
        garments = dict(tiles=v.tiles, centres=centres, sides=sides)
    fig = figures.slice_cartogram(
        xs, ys, v.axes, carry(cart, np.zeros((1, 2))), **garments,
        straight=carry(cart, v.sl.project(v.straight.curve)) if v.straight is not None else None,
        geodesic=carry(cart, v.sl.project(v.geo.curve)) if v.geo is not None else None)
    with view_col:
        st.plotly_chart(fig, key="carto_cartogram", config={"displaylogo": False})
    with note_col:
        if not v.presenting:
            st.toggle("Garments on the map", key=cs.W_GARMENTS)
        st.markdown("Each cell's area now follows MF₂ (after clipping to the 1st-99th percentiles, γ = 0.5 and a "
                    "blur of 2 cells): regions where the decoder changes fast are **enlarged**, flat ones "
                    "**shrunk**. Each garment is drawn at the size of its stretched tile.")
        st.caption(f"Largest to smallest cell area: {area_range(cart):.1f} : 1 · "
                   f"{cart.density.shape[0]} × {cart.density.shape[1]} cells · {cart.n_steps} flow steps · "
                   f"{cart.seconds:.2f} s. A cartogram equalises area, not distance: curved metrics cannot be "
                   "flattened without distortion.")


def _map_cartogram(v: View, weight: str, graph: LatentGraph | None, view_col, note_col) -> None:
    res = v.res
    projector = get_map(res)
    if not v.presenting:
        with note_col:
            st.radio("Weigh each item by", MAP_WEIGHTS, format_func=WEIGHT_LABELS.get,
                     **cs.bind(cs.W_WEIGHT, "weight", weight))
    mcart = moved = None
    if weight == "mf":
        log_mf = gr.catalog_magnification(res)
        if log_mf is None and cs.take_request(cs.MF_REQUESTED):
            with view_col:
                log_mf = gr.build_catalog_magnification(res)
        if log_mf is None:
            with view_col:
                st.info("The magnification factor at every one of the 70,000 means takes 10 JVPs each: about four "
                        "minutes on 2 cores, once per model (then it is cached on disk).", icon=":material/functions:")
                if not v.presenting:
                    st.button("Compute the magnification at every mean", key=cs.BTN_MF, icon=":material/functions:",
                              on_click=cs.request, args=(cs.MF_REQUESTED,))
        else:
            mcart, moved = gr.mf_stretched_map(res, log_mf, projector.embedding_)
            explanation = ("The UMAP map of all items, stretched so that each region's area follows the total "
                           "**magnification factor** MF = √det G of its items, computed exactly at every mean: "
                           "regions grow where the decoder stretches latent space (and where items are many).")
    elif graph is None:
        with view_col:
            st.info("The map cartogram weighs each item by its local stretch, read off the geodesic graph: build the "
                    "graph above first.", icon=":material/hub:")
    else:
        mcart, moved = gr.stretched_map(res, graph, v.measure, projector.embedding_)
        explanation = ("The UMAP map of all items, stretched so that each region's area follows the total "
                       "**squared stretch** of its items. An item's stretch is the mean decoded distance per unit of "
                       "latent distance along its graph edges (this project's finite-difference measure, a stand-in "
                       "for √MF₂): regions grow where the decoder changes fast, and where items are many.")
    if mcart is None:
        return
    xs, ys = grid_lines(mcart.corners, every=4)
    fig = figures.map_cartogram(xs, ys, moved, res.catalog.labels, carry(mcart, projector.place(v.q.z_array)[None]))
    with view_col:
        st.plotly_chart(fig, key="carto_map", config={"displaylogo": False, "scrollZoom": True})
    with note_col:
        st.markdown(explanation)
        st.caption(f"{mcart.density.shape[0]} × {mcart.density.shape[1]} cells · {mcart.n_steps} flow steps.")
