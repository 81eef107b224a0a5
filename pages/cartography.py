"""Cartography: where the decoder stretches latent space, straight lines against geodesics, and cartograms."""

import streamlit as st

from latent.cartography import (
    EXTENTS,
    GRIDS,
    SPANS,
    axis_offsets,
    extent_label,
    most_active,
    other_items,
    parse_extent,
    straight_path,
)
from latent.geometry import MEASURES, torch_threads
from ui import cartography_sections as sections
from ui import cartography_state as cs
from ui import state
from ui.figures.cartography import SliceAxes
from ui.geometry_resources import (
    dimension_kl,
    exact_map,
    geodesic,
    get_decoder,
    slice_key,
    slice_of,
    slice_view,
)
from ui.page import start_page
from ui.resources import active_dimensions

SPAN_LABELS = {"dims": "two latent dimensions", "neighbours": "two neighbours"}
CANDIDATES = 12  # nearest items offered as slice directions and geodesic targets


res, index, presenting = start_page()  # presenting: no controls, only the pictures
decoder = get_decoder(res)
d = res.catalog.latent_dim
mu = res.catalog.mu
kl = dimension_kl(res)
active = active_dimensions(res)

q = state.query()
z = q.z_array

# Nearest items by likelihood, never the query's own item: candidates for the slice's directions and the target.
near, _ = index.search(z, score="likelihood", k=min(CANDIDATES + 1, len(res.catalog)))
candidates = other_items(near, mu, z, CANDIDATES)


def item_label(i: int) -> str:
    return sections.item_label(res, i)


def dim_label(j: int) -> str:
    return f"z{j} · KL {kl[j]:.2f} nats" if active[j] else f"z{j} · unused"


measure = cs.extra("measure") or "l2"
span = cs.extra("span") or "dims"
dims = tuple(cs.extra("dims") or most_active(kl, 2))
via = tuple(cs.extra("via") or candidates[:2])
extent = cs.extra("extent") or "auto"
grid = int(cs.extra("grid") or GRIDS[0])
target = cs.extra("target")
if target is None or not other_items([target], mu, z):  # never the query's own item
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
            options = cs.with_current(candidates, via)
            kx, ky = cs.bind_pair((cs.W_VIA_X, cs.W_VIA_Y), "via", via)
            st.selectbox("Horizontal: towards item", options, format_func=item_label, **kx)
            st.selectbox("Vertical: towards item", options, format_func=item_label, **ky,
                         help="The vertical axis is the part of this direction orthogonal to the first.")
        st.select_slider("Half-width", EXTENTS, format_func=extent_label, **cs.bind(cs.W_EXTENT, "extent", extent),
                         help="The window around z: auto is ±3 for two dimensions, 1.25 x the farther item for two "
                              "items.")
        st.radio("Grid", GRIDS, format_func=lambda g: f"{g} × {g}", horizontal=True,
                 help="Nodes per side of the magnification map. 64 × 64 is finer and about four times slower.",
                 **cs.bind(cs.W_GRID, "grid", str(grid)))
        st.subheader("Measure")
        st.radio("Distance between decoded garments", list(MEASURES), format_func=sections.MEASURE_LABELS.get,
                 help="L2: the pullback metric JᵀJ of the decoder mean. Bernoulli KL: √(2 KL) between the decoded "
                      "pixel distributions, whose small-step limit is the Fisher-Rao metric.",
                 **cs.bind(cs.W_MEASURE, "measure", measure))
        st.slider("Neighbours (k)", 1, state.K_MAX, key=state.W_K)
        st.page_link("pages/explore.py", label="Set z on Explore", icon=":material/tune:")

# ----------------------------------------------------------------------------- the slice and the paths
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
grid_mag, tiles = slice_view(res, key)
with st.spinner("Computing the exact magnification (two JVPs per cell) ..."):
    exact = exact_map(res, key)

zb = tuple(float(v) for v in mu[target]) if target is not None else None
with st.spinner("Computing the geodesic (about a second) ..."):
    geo = geodesic(res, q.z, zb, measure) if zb is not None else None
straight = None
if zb is not None:
    with torch_threads(1):  # as the geodesic, so that both lengths are computed alike
        straight = straight_path(decoder, z, zb, measure)

like_items, like_values = index.search(z, score="likelihood", k=q.k)
if span == "dims":
    titles = f"z{dims[0]}", f"z{dims[1]}"
else:
    titles = f"towards #{via[0]} (latent units)", f"towards #{via[1]}, orthogonalised"
v = sections.View(res, index, presenting, decoder, q, measure, grid, sl, key,
                  SliceAxes(axis_offsets(sl, span), sl.extent, *titles), grid_mag, exact, tiles, candidates, target,
                  straight, geo, like_items, like_values, other_items(like_items, mu, z))

# ----------------------------------------------------------------------------- the page
st.title("Cartography of the latent space")
st.caption("Where does the decoder stretch latent space? The **magnification factor** MF₂ = √det(BᵀJᵀJB) is how much "
           "decoded area one unit of slice area covers: bright ridges are class borders, where garments change fast; "
           "dark plains are flat. Geodesics follow the decoded garments rather than the latent coordinates.")
sections.slice_section(v)
sections.paths_section(v)
graph = sections.rankings_section(v)
sections.cartogram_section(v, view, weight, graph)
state.sync_url()
