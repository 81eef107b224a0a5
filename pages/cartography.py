"""Cartography: where the decoder stretches latent space, straight lines against geodesics, and cartograms."""

import base64

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from latent.cartography import (
    CURVE_POINTS,
    EXTENTS,
    GRIDS,
    MAP_WEIGHTS,
    SPANS,
    VIEWS,
    axis_offsets,
    block_areas,
    carry,
    curve_frames,
    extent_label,
    grid_lines,
    most_active,
    parse_extent,
    ranks_of,
    thumbnail_mosaic,
    top_k,
)
from latent.data import CLASS_NAMES
from latent.geodesic import straight_line
from latent.geometry import MEASURES, curve_length, segment_lengths, torch_threads
from latent.render import png_bytes, strip
from ui import cartography_state as cs
from ui import state
from ui.palette import CLASS_COLOURS, QUERY_COLOUR
from ui.geometry_resources import (
    build_catalog_magnification,
    build_graph,
    catalog_magnification,
    dimension_kl,
    exact_map,
    geodesic,
    get_decoder,
    get_graph,
    graph_distances,
    mf_stretched_map,
    request_exact,
    request_geodesic,
    slice_key,
    slice_of,
    slice_view,
    stretched_map,
    stretched_slice,
)
from ui.page import start_page
from ui.resources import active_dimensions, get_map, thumbnail_png

STRAIGHT_COLOUR = "#FFFFFF"
GEODESIC_COLOUR = "#FF5A36"
MEASURE_LABELS = {"l2": "L2 between decoded images", "bernoulli_kl": "Bernoulli KL (Fisher-Rao)"}
SPAN_LABELS = {"dims": "two latent dimensions", "neighbours": "two neighbours"}
WEIGHT_LABELS = {"stretch": "its stretch on the geodesic graph", "mf": "the magnification factor at its mean"}
VIEW_LABELS = {"slice": "the slice", "map": "the UMAP map of all items"}
CANDIDATES = 12  # nearest items offered as slice directions and geodesic targets
FRAMES = 10  # decoded frames per interpolation strip


res, index, presenting = start_page()  # presenting: no controls, only the pictures
decoder = get_decoder(res)
d = res.catalog.latent_dim
mu = res.catalog.mu
kl = dimension_kl(res)
active = active_dimensions(res)

q = state.query()
z = q.z_array
z64 = z.astype(np.float64)

# Nearest items by likelihood, never the query's own item: candidates for the slice's directions and the target.
near, _ = index.search(z, score="likelihood", k=min(CANDIDATES + 1, len(res.catalog)))
candidates = [int(i) for i in near if not np.array_equal(mu[i], z)][:CANDIDATES]


def item_label(i: int) -> str:
    return f"#{i} · {CLASS_NAMES[int(res.catalog.labels[i])]}"


def dim_label(j: int) -> str:
    return f"z{j} · KL {kl[j]:.2f} nats" if active[j] else f"z{j} · unused"


def with_current(options: list[int], current) -> list[int]:
    extra_items = [int(i) for i in (current or ()) if int(i) not in options]
    return options + extra_items


measure = cs.extra("measure") or "l2"
span = cs.extra("span") or "dims"
dims = tuple(cs.extra("dims") or most_active(kl, 2))
via = tuple(cs.extra("via") or candidates[:2])
extent = cs.extra("extent") or "auto"
grid = int(cs.extra("grid") or GRIDS[0])
target = cs.extra("target")
if target is None or np.array_equal(mu[target], z):
    target = candidates[0] if candidates else None
view = cs.extra("view") or "slice"
weight = cs.extra("weight") or "stretch"

# ----------------------------------------------------------------------------- controls (sidebar)
if not presenting:  # the projector layout draws no controls; the link holds every choice
    with st.sidebar:
        st.subheader("Slice through the query")
        st.radio("Spanned by", SPANS, format_func=SPAN_LABELS.get, horizontal=True,
                 help="Two latent axes through z, or the plane through z and two of its nearest items.",
                 **cs.bind(cs.W_SPAN, "span", span))
        if span == "dims":
            kx, ky = cs.bind_pair((cs.W_DIM_X, cs.W_DIM_Y), "dims", dims)
            st.selectbox("Horizontal axis", range(d), format_func=dim_label, **kx,
                         help="Each dimension with its mean KL to the prior: how much the model uses it.")
            st.selectbox("Vertical axis", range(d), format_func=dim_label, **ky)
        else:
            options = with_current(candidates, via)
            kx, ky = cs.bind_pair((cs.W_VIA_X, cs.W_VIA_Y), "via", via)
            st.selectbox("Horizontal: towards item", options, format_func=item_label, **kx)
            st.selectbox("Vertical: towards item", options, format_func=item_label, **ky,
                         help="The vertical axis is the part of this direction orthogonal to the first.")
        st.select_slider("Half-width", EXTENTS, format_func=extent_label, **cs.bind(cs.W_EXTENT, "extent", extent),
                         help="The window around z: auto is ±3 for two dimensions, 1.25 x the farther item for two items.")
        st.radio("Grid", GRIDS, format_func=lambda g: f"{g} × {g}", horizontal=True,
                 help="Nodes per side of the magnification map. 64 × 64 is finer and about four times slower.",
                 **cs.bind(cs.W_GRID, "grid", str(grid)))
        st.subheader("Measure")
        st.radio("Distance between decoded garments", list(MEASURES), format_func=MEASURE_LABELS.get,
                 help="L2: the pullback metric JᵀJ of the decoder mean. Bernoulli KL: √(2 KL) between the decoded "
                      "pixel distributions, whose small-step limit is the Fisher-Rao metric.",
                 **cs.bind(cs.W_MEASURE, "measure", measure))
        st.slider("Neighbours (k)", 1, state.K_MAX, key=state.W_K)
        st.page_link("pages/explore.py", label="Set z on Explore", icon=":material/tune:")

# ----------------------------------------------------------------------------- the slice
via_points = tuple(tuple(float(v) for v in mu[i]) for i in via) if span == "neighbours" else None
key = slice_key(span, q.z, dims, via_points, parse_extent(extent), grid, measure)
try:
    sl = slice_of(key)
except ValueError as exc:
    st.warning(f"These items do not span a plane through z ({exc}); showing the two most active dimensions.",
               icon=":material/warning:")
    span, via_points = "dims", None
    dims = most_active(kl, 2)
    key = slice_key(span, q.z, dims, None, parse_extent(extent), grid, measure)
    sl = slice_of(key)
ox, oy = axis_offsets(sl, span)
grid_mag, tiles = slice_view(res, key)
with st.spinner("Computing the exact magnification (two JVPs per cell) ..."):
    exact = exact_map(res, key)
mag = exact if exact is not None else grid_mag

zb = tuple(float(v) for v in mu[target]) if target is not None else None
with st.spinner("Computing the geodesic (about a second) ..."):
    geo = geodesic(res, q.z, zb, measure) if zb is not None else None
if zb is not None:
    straight = straight_line(z64, np.array(zb), CURVE_POINTS)
    with torch_threads(1):
        straight_len = curve_length(decoder, straight, measure)
        chord = float(segment_lengths(decoder, np.stack([z64, np.array(zb)]), measure)[0])

k = q.k
like_items, like_values = index.search(z, score="likelihood", k=k)


def to_axes(points: np.ndarray) -> np.ndarray:
    return sl.project(points) + np.array([ox, oy])


st.title("Cartography of the latent space")
st.caption("Where does the decoder stretch latent space? The **magnification factor** MF₂ = √det(BᵀJᵀJB) is how much "
           "decoded area one unit of slice area covers: bright ridges are class borders, where garments change fast; "
           "dark plains are flat. Geodesics follow the decoded garments rather than the latent coordinates.")

s_lo, s_hi, t_lo, t_hi = sl.extent
if span == "dims":
    x_title, y_title = f"z{dims[0]}", f"z{dims[1]}"
else:
    x_title, y_title = f"towards #{via[0]} (latent units)", f"towards #{via[1]}, orthogonalised"

fig = go.Figure(go.Heatmap(
    x=mag.s_centres + ox, y=mag.t_centres + oy, z=mag.log_mf, colorscale="Viridis", zsmooth="best",
    colorbar=dict(title=dict(text="log MF₂", side="right"), thickness=14),
    hovertemplate=f"{x_title} %{{x:.2f}}<br>{y_title} %{{y:.2f}}<br>log MF₂ %{{z:.2f}}<extra></extra>"))
in_window = [int(i) for i in like_items if not np.array_equal(mu[i], z)]
if in_window:
    p = to_axes(mu[in_window].astype(np.float64))
    fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", name=f"top-{k} likelihood (projected)",
                             marker=dict(size=8, symbol="circle-open", color="#FFFFFF", line=dict(width=1.5)),
                             customdata=in_window, hovertemplate="#%{customdata} (projected)<extra></extra>"))
if zb is not None:
    p = to_axes(straight)
    fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", name=f"straight line · {straight_len:.2f}",
                             line=dict(color=STRAIGHT_COLOUR, width=2.5, dash="dash"), hoverinfo="skip"))
    if geo is not None:
        p = to_axes(geo.curve)
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", name=f"geodesic · {geo.length:.2f}",
                                 line=dict(color=GEODESIC_COLOUR, width=3.5), hoverinfo="skip"))
    p = to_axes(np.array(zb)[None])
    fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", name=f"target {item_label(target)}",
                             marker=dict(size=14, symbol="diamond", color=GEODESIC_COLOUR,
                                         line=dict(width=1.5, color="#000000")),
                             hovertemplate=f"target {item_label(target)}<extra></extra>"))
fig.add_trace(go.Scatter(x=[ox], y=[oy], mode="markers", name="query z",
                         marker=dict(size=20, symbol="star", color=QUERY_COLOUR, line=dict(width=1.5, color="#000000")),
                         hovertemplate="the query z<extra></extra>"))
fig.update_layout(height=540, margin=dict(l=10, r=10, t=10, b=10), plot_bgcolor="#FFFFFF", showlegend=False,
                  xaxis=dict(title=x_title, range=[s_lo + ox, s_hi + ox], showgrid=False, zeroline=False),
                  yaxis=dict(title=y_title, range=[t_lo + oy, t_hi + oy], showgrid=False, zeroline=False))
key_text = [":orange[★] the query z"]
if zb is not None:
    key_text.append(f":red[◆] the target {item_label(target)}")
    key_text.append(f"white dashes: the straight line ({straight_len:.2f})")
    if geo is not None:
        key_text.append(f":red[━] the geodesic ({geo.length:.2f}), projected")
if in_window:
    key_text.append(f"○ the top-{k} likelihood neighbours, projected")

map_col, tiles_col = st.columns([6, 5], gap="medium")
with map_col:
    st.plotly_chart(fig, key="carto_heatmap", config={"displaylogo": False})
    st.caption(" · ".join(key_text))
with tiles_col:
    mosaic = thumbnail_mosaic(tiles, gap=2, background=0.25)
    st.image(png_bytes(mosaic, scale=2), output_format="PNG",
             caption=f"The same window, decoded: {tiles.shape[0]} × {tiles.shape[1]} garments, z at the centre.")
    method = ("exact: 0.5 log det G₂ from two JVPs per cell" if exact is not None else
              "grid-difference estimate: the area of each decoded cell, √(|a|²|b|² − (a·b)²) / (Δs Δt)")
    st.caption(f"{grid - 1} × {grid - 1} cells, {MEASURE_LABELS[measure]}; {method}.")
    if exact is None:
        if not presenting:
            st.button("Exact magnification (JVPs, a few seconds)", key=cs.BTN_EXACT, on_click=request_exact,
                      args=(res, key), icon=":material/functions:")
    else:
        diff = np.nanmax(np.abs(exact.log_mf - grid_mag.log_mf))
        st.caption(f"The grid estimate differs from the exact value by at most {diff:.3f} in log MF₂ here.")

# ----------------------------------------------------------------------------- straight line or geodesic
st.subheader("Straight line or geodesic?")
if zb is None:
    st.info("No other item is near enough to draw a path to.")
else:
    left, right = st.columns([2, 5], gap="large")
    with left:
        if presenting:
            st.markdown(f"Towards **{item_label(target)}**")
        else:
            st.selectbox("Towards item", with_current(candidates, (target,)), format_func=item_label,
                         help="One of the nearest items by likelihood.", **cs.bind(cs.W_TARGET, "target", target))
            a1, a2 = st.columns([3, 2], vertical_alignment="bottom")
            a1.number_input("Or any item", 0, len(res.catalog) - 1, value=int(target), step=1, key=cs.W_TARGET_ANY)
            a2.button("Use", key=cs.BTN_TARGET_ANY, width="stretch",
                      on_click=lambda: cs.set_extra("target", int(st.session_state[cs.W_TARGET_ANY])))
        if geo is None and not presenting:
            st.button("Compute the geodesic", key=cs.BTN_GEODESIC, on_click=request_geodesic,
                      args=(res, q.z, zb, measure), icon=":material/route:", type="primary",
                      help=f"Minimises the energy of a {CURVE_POINTS}-point latent curve with L-BFGS (about a second).")
        m1, m2 = st.columns(2)
        m1.metric("Straight line", f"{straight_len:.3f}")
        if geo is not None:
            m2.metric("Geodesic", f"{geo.length:.3f}", f"{100 * (geo.length / straight_len - 1):+.1f} %",
                      delta_color="off")
        st.caption(f"Lengths are Σ D(f(c_k), f(c_k+1)) over {CURVE_POINTS} points under {MEASURE_LABELS[measure]}; "
                   f"no path can be shorter than the direct distance D(f(z), f(z_b)) = {chord:.3f}.")
    with right:
        st.image(png_bytes(strip(curve_frames(decoder, straight, FRAMES), scale=2, gap=4)), output_format="PNG",
                 caption=f"Straight line in latent space · length {straight_len:.3f}")
        if geo is not None:
            st.image(png_bytes(strip(curve_frames(decoder, geo.curve, FRAMES), scale=2, gap=4)), output_format="PNG",
                     caption=f"Geodesic (constant decoded speed) · length {geo.length:.3f} · "
                             f"{geo.n_evaluations} evaluations, {geo.seconds:.2f} s")
        else:
            st.caption("The geodesic's frames appear here.")

# ----------------------------------------------------------------------------- rankings
st.subheader("Nearest by likelihood, nearest along the manifold")
if cs.take_request(cs.GRAPH_REQUESTED) and get_graph(res, measure) is None:
    build_graph(res, measure)  # asked for with the button below (a progress bar here, then cached on disk)
graph = get_graph(res, measure)
distances = graph_distances(res, graph, measure, q.z) if graph is not None else None
like_col, geo_col = st.columns(2, gap="large")
with like_col:
    st.markdown("#### Log-likelihood log q(z|x)")
    st.caption("The posterior density of each item at z. Higher is nearer."
               + (" *geodesic #r*: the item's rank by graph geodesic distance." if distances is not None else ""))
    captions = [f"{CLASS_NAMES[int(res.catalog.labels[i])]} #{i} · {v:.2f}" for i, v in zip(like_items, like_values)]
    if distances is not None:
        captions = [f"{c} · geodesic #{r}" for c, r in zip(captions, ranks_of(distances, like_items, False))]
    st.image([thumbnail_png(res, i, 3) for i in like_items], caption=captions, width=84,
             output_format="PNG")
with geo_col:
    st.markdown("#### Graph geodesic distance")
    st.caption("Shortest path from z through the 10-nearest-neighbour graph of all item means, each edge weighed by "
               "the decoded distance along it (Dijkstra). Lower is nearer. *likelihood #r*: the item's rank by "
               "likelihood.")
    if graph is None:
        st.info(f"The geodesic graph for this measure is not built yet. Building it decodes all "
                f"{len(res.catalog):,} means once (about a minute here); it is then cached on disk.",
                icon=":material/hub:")
        if not presenting:
            st.button("Build the geodesic graph", key=cs.BTN_GRAPH, icon=":material/hub:", on_click=cs.request,
                      args=(cs.GRAPH_REQUESTED,))
    else:
        geo_items, geo_dist = top_k(distances, k)
        like_rank = ranks_of(index.scores_all(z, score="likelihood"), geo_items, True)
        captions = [f"{CLASS_NAMES[int(res.catalog.labels[i])]} #{i} · {v:.2f} · likelihood #{r}"
                    for i, v, r in zip(geo_items, geo_dist, like_rank)]
        st.image([thumbnail_png(res, i, 3) for i in geo_items], caption=captions, width=84,
                 output_format="PNG")

# ----------------------------------------------------------------------------- cartogram
st.subheader("Cartogram: latent space stretched by the measure")
if not presenting:
    st.radio("Stretch", VIEWS, format_func=VIEW_LABELS.get, horizontal=True, **cs.bind(cs.W_VIEW, "view", view))
view_col, note_col = st.columns([3, 1], gap="large")


def png_uri(image: np.ndarray, scale: int) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, scale=scale)).decode()


if view == "slice":
    cart = stretched_slice(res, key, mag)
    xs, ys = grid_lines(cart.corners, every=4)
    cfig = go.Figure(go.Scatter(x=np.array(xs, dtype=float) + ox, y=np.array(ys, dtype=float) + oy, mode="lines",
                                line=dict(color="#9AA0A6", width=1), name="grid lines", hoverinfo="skip"))
    show_garments = st.session_state.setdefault(cs.W_GARMENTS, True)
    if show_garments:  # each garment at the centre of its stretched tile, as large as the tile's area allows
        centres, areas = block_areas(cart, sl, tiles.shape[0])
        sides = 0.92 * np.sqrt(np.maximum(areas, 0.0))
        cfig.update_layout(images=[
            dict(source=png_uri(tiles[r, c], 3), xref="x", yref="y", x=centres[r, c, 0] + ox, y=centres[r, c, 1] + oy,
                 sizex=sides[r, c], sizey=sides[r, c], xanchor="center", yanchor="middle", sizing="stretch",
                 layer="below")
            for r in range(tiles.shape[0]) for c in range(tiles.shape[1])])
    if zb is not None:
        p = carry(cart, sl.project(straight)) + np.array([ox, oy])
        cfig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", name="straight line",
                                  line=dict(color="#1F77B4", width=2.5, dash="dash"), hoverinfo="skip"))
        if geo is not None:
            p = carry(cart, sl.project(geo.curve)) + np.array([ox, oy])
            cfig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", name="geodesic",
                                      line=dict(color=GEODESIC_COLOUR, width=3.5), hoverinfo="skip"))
    p = carry(cart, np.zeros((1, 2))) + np.array([ox, oy])
    cfig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", name="query z",
                              marker=dict(size=18, symbol="star", color=QUERY_COLOUR,
                                          line=dict(width=1.5, color="#000000")), hoverinfo="skip"))
    cfig.update_layout(height=620, margin=dict(l=10, r=10, t=10, b=10), plot_bgcolor="#111111",
                       legend=dict(orientation="h", y=-0.08, x=0),
                       xaxis=dict(title=x_title, range=[s_lo + ox, s_hi + ox], showgrid=False, zeroline=False,
                                  constrain="domain"),
                       yaxis=dict(title=y_title, range=[t_lo + oy, t_hi + oy], showgrid=False, zeroline=False,
                                  scaleanchor="x", constrain="domain"))
    with view_col:
        st.plotly_chart(cfig, key="carto_cartogram", config={"displaylogo": False})
    with note_col:
        if not presenting:
            st.toggle("Garments on the map", key=cs.W_GARMENTS)
        target_area = cart.target_areas()
        st.markdown("Each cell's area now follows MF₂ (after clipping to the 1st-99th percentiles, γ = 0.5 and a "
                    "blur of 2 cells): regions where the decoder changes fast are **enlarged**, flat ones "
                    "**shrunk**. Each garment is drawn at the size of its stretched tile.")
        st.caption(f"Largest to smallest cell area: {target_area.max() / target_area.min():.1f} : 1 · "
                   f"{cart.density.shape[0]} × {cart.density.shape[1]} cells · {cart.n_steps} flow steps · "
                   f"{cart.seconds:.2f} s. A cartogram equalises area, not distance: curved metrics cannot be "
                   "flattened without distortion.")
else:
    projector = get_map(res)
    if not presenting:
        with note_col:
            st.radio("Weigh each item by", MAP_WEIGHTS, format_func=WEIGHT_LABELS.get,
                     **cs.bind(cs.W_WEIGHT, "weight", weight))
    mcart = moved = None
    if weight == "mf":
        log_mf = catalog_magnification(res)
        if log_mf is None and cs.take_request(cs.MF_REQUESTED):
            with view_col:
                log_mf = build_catalog_magnification(res)
        if log_mf is None:
            with view_col:
                st.info("The magnification factor at every one of the 70,000 means takes 10 JVPs each: about four "
                        "minutes on 2 cores, once per model (then it is cached on disk).", icon=":material/functions:")
                if not presenting:
                    st.button("Compute the magnification at every mean", key=cs.BTN_MF, icon=":material/functions:",
                              on_click=cs.request, args=(cs.MF_REQUESTED,))
        else:
            mcart, moved = mf_stretched_map(res, log_mf, projector.embedding_)
            explanation = ("The UMAP map of all items, stretched so that each region's area follows the total "
                           "**magnification factor** MF = √det G of its items, computed exactly at every mean: "
                           "regions grow where the decoder stretches latent space (and where items are many).")
    elif graph is None:
        with view_col:
            st.info("The map cartogram weighs each item by its local stretch, read off the geodesic graph: build the "
                    "graph above first.", icon=":material/hub:")
    else:
        mcart, moved = stretched_map(res, graph, measure, projector.embedding_)
        explanation = ("The UMAP map of all items, stretched so that each region's area follows the total "
                       "**squared stretch** of its items. An item's stretch is the mean decoded distance per unit of "
                       "latent distance along its graph edges (this project's finite-difference measure, a stand-in "
                       "for √MF₂): regions grow where the decoder changes fast, and where items are many.")
    if mcart is not None:
        xs, ys = grid_lines(mcart.corners, every=4)
        mfig = go.Figure(go.Scattergl(x=xs, y=ys, mode="lines", line=dict(color="#B0B4B8", width=1),
                                      name="grid lines", hoverinfo="skip"))
        labels = res.catalog.labels
        for c, name in enumerate(CLASS_NAMES):
            members = np.flatnonzero(labels == c)
            mfig.add_trace(go.Scattergl(x=moved[members, 0], y=moved[members, 1], mode="markers", name=name,
                                        marker=dict(size=3, color=CLASS_COLOURS[c], opacity=0.6),
                                        customdata=members, hovertemplate=f"{name} #%{{customdata}}<extra></extra>"))
        p = carry(mcart, projector.place(z)[None])
        mfig.add_trace(go.Scattergl(x=p[:, 0], y=p[:, 1], mode="markers", name="query z",
                                    marker=dict(size=20, symbol="star", color=QUERY_COLOUR,
                                                line=dict(width=1.5, color="#000000"))))
        mfig.update_layout(height=640, margin=dict(l=0, r=0, t=10, b=0), legend=dict(orientation="h", y=-0.02),
                           xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
        with view_col:
            st.plotly_chart(mfig, key="carto_map", config={"displaylogo": False, "scrollZoom": True})
        with note_col:
            st.markdown(explanation)
            st.caption(f"{mcart.density.shape[0]} × {mcart.density.shape[1]} cells · {mcart.n_steps} flow steps.")

state.sync_url()
