"""Atlas: a WebGL UMAP map of all encoded means, the query and its neighbours on it; click to set z."""

import streamlit as st

from latent.data import CLASS_NAMES
from latent.render import png_bytes
from latent.scores import SCORES
from ui import presentation, state
from ui.figures.map import atlas_map
from ui.page import start_page
from ui.resources import get_map

MAP_KEY = "atlas_map"

res, index, presenting = start_page()
projector = get_map(res)


def on_map_select() -> None:
    """A click (or box/lasso) on the map: the first selected item's mean becomes the query."""
    event = st.session_state.get(MAP_KEY)
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", [])
    for point in points:
        data = point.get("customdata")
        if data is None:
            continue
        item = int(data[0] if isinstance(data, (list, tuple)) else data)
        if 0 <= item < len(res.catalog):
            state.start_from_item(res, item)
            return


st.title("Atlas of the latent space")
side, main = st.columns([1, 3], gap="large")
if not presenting:
    with side:
        st.selectbox("Neighbours under", list(SCORES), key=state.W_SCORE, format_func=lambda n: n.replace("_", " "),
                     help="The score used to pick the highlighted neighbours.")
        st.slider("Neighbours (k)", 1, state.K_MAX, key=state.W_K)
q = state.query()
z = q.z_array
items, values = index.search(z, score=q.score, k=q.k, s=q.s)
where = projector.place(z)  # (2,) kNN-weighted map position, no umap needed

with side:
    st.image(png_bytes(res.decoder.decode_mean(z), scale=presentation.size(6, 10)), output_format="PNG",
             width=presentation.size(168, 280),
             caption=f"The query z{f' = item #{q.item}' if q.item is not None else ''}")
    if not presenting:
        st.caption("Click any point to make that item's mean the query; **Explore** follows.")
        st.page_link("pages/explore.py", label="Open in Explore", icon=":material/tune:")
    st.markdown("**Nearest items**")
    st.markdown("\n".join(f"{r + 1}. {CLASS_NAMES[int(res.catalog.labels[i])]} #{i} · {v:.2f}"
                          for r, (i, v) in enumerate(zip(items, values, strict=True))))

fig = atlas_map(projector.embedding_, res.catalog.labels, items, where, f"top-{q.k} ({q.score})",
                height=presentation.size(720, 820), font=presentation.font_size())
with main:
    st.plotly_chart(fig, key=MAP_KEY, on_select=on_map_select, selection_mode="points",
                    config={"scrollZoom": True, "displaylogo": False}, theme=None if presenting else "streamlit")
    st.caption(f"UMAP of all {len(projector.embedding_):,} encoded means mu(x), coloured and shaped by class. "
               "The star is the query, placed by the distance-weighted average map position of its 10 nearest "
               "means; rings mark its neighbours.")
    if not presenting:
        st.download_button("Download the map (interactive HTML)", lambda: fig.to_html(include_plotlyjs=True),
                           file_name="latent-explorer-atlas.html", mime="text/html", icon=":material/download:",
                           key="dl_atlas_html", help="A self-contained page (works offline), about 8 MB.")
state.sync_url()
