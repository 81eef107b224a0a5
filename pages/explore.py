"""Explore: set z with sliders, see the decoded garment and its neighbours under three scores."""

import numpy as np
import streamlit as st

from latent.data import CLASS_NAMES
from latent.rankings import neighbour_table
from latent.render import png_bytes, sheet
from latent.scores import SCORES
from ui import presentation, state
from ui.page import start_page
from ui.resources import active_dimensions, thumbnail_png

#: Headings of the three galleries.
GALLERY_TITLES = {"likelihood": "Log-likelihood log q(z|x)", "euclidean": "Euclidean ‖z − μ(x)‖",
                  "kl": "KL( N(z, s²) ‖ q(z|x) )"}

res, index, presenting = start_page()
a = state.bound(res)
d = res.catalog.latent_dim
active = active_dimensions(res)

# ----------------------------------------------------------------------------- the query (sidebar)
if not presenting:  # presentation mode draws no controls
    with st.sidebar:
        st.subheader("Latent vector z")
        b1, b2 = st.columns(2)
        b1.button("Origin", icon=":material/restart_alt:", on_click=state.reset_to_origin, args=(res,),
                  help="Set z = 0, the centre of the prior.", width="stretch", key="btn_origin")
        b2.button("Random", icon=":material/casino:", on_click=state.draw_from_prior, args=(res,),
                  help="Draw z ~ N(0, I) from the prior; the seed goes into the link.", width="stretch",
                  key="btn_random")
        for j in range(d):
            label = f"z{j}" if active[j] else f"z{j} · unused"
            st.slider(label, -a, a, step=0.01, format="%.2f", key=state.slider_key(j),
                      help=None if active[j] else "The model does not use this dimension (mean KL to the prior "
                      "< 0.01 nats): moving it barely changes the garment.")
        st.divider()
        st.subheader("Start from an item")
        c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
        c1.number_input("Item number", 0, len(res.catalog) - 1, value=state.query().item or 0, step=1, key=state.W_ITEM)
        c2.button("Use", key="btn_item", on_click=lambda: state.start_from_item(res, st.session_state[state.W_ITEM]),
                  width="stretch")
        c3, c4 = st.columns([3, 2], vertical_alignment="bottom")
        c3.selectbox("Class", range(len(CLASS_NAMES)), format_func=lambda c: CLASS_NAMES[c], key=state.W_CLASS)
        c4.button("Random", key="btn_class", help="A random item of this class",
                  on_click=lambda: state.start_from_random_item_of_class(res, st.session_state[state.W_CLASS]),
                  width="stretch")


# ----------------------------------------------------------------------------- the garment
q = state.query()
z = q.z_array
decoded = res.decoder.decode_mean(z)

st.title("Explore the latent space")
left, right = st.columns([2, 3], gap="large")
with left:
    st.image(png_bytes(decoded, scale=presentation.size(12, 16)), caption="Decoded garment: the decoder mean for z",
             width=presentation.size(336, 448), output_format="PNG")
    if not presenting:  # the PNG is made on click (a callable), not on every rerun
        st.download_button("Download PNG", lambda: png_bytes(decoded, scale=12, compress_level=6),
                           file_name="latent-explorer-z.png", mime="image/png", icon=":material/download:",
                           key="dl_png")
with right:
    if q.item is not None:
        st.markdown(f"**Item #{q.item}** · {CLASS_NAMES[int(res.catalog.labels[q.item])]} · "
                    f"{'test' if res.catalog.is_test[q.item] else 'train'} split. z is its posterior mean mu(x).")
        i1, i2 = st.columns(2)
        i1.image(png_bytes(res.data.images[q.item], scale=6), caption="Original", width=168, output_format="PNG")
        i2.image(png_bytes(res.decoder.decode_mean(res.catalog.mu[q.item]), scale=6),
                 caption="Reconstruction from mu(x)", width=168, output_format="PNG")
    st.markdown("**Neighbours**: which dataset items are nearest to z? Each item is a Gaussian "
                "q(z|x) = N(mu(x), sigma(x)^2), so *nearest* depends on the score.")
    if not presenting:
        k1, k2 = st.columns(2)
        k1.slider("Neighbours per score (k)", 1, state.K_MAX, key=state.W_K)
        k2.select_slider(
            "Query spread s for KL", options=state.SPREAD_CHOICES, key=state.W_SPREAD,
            format_func=lambda v: "median sigma" if v is None else f"{v:g}",
            help="KL compares the query as a small Gaussian N(z, s^2) with each item's posterior. "
                 "As s shrinks, the KL ranking approaches the likelihood ranking.")
        st.caption("KL treats the query as N(z, s²): small s ranks like the likelihood; large s favours broad "
                   "posteriors. *median sigma* uses the catalog's median sigma per dimension.")

q = state.query()
table = neighbour_table(index, res.catalog, z, state.EXPLORE_SCORES, q.k, q.s)

# ----------------------------------------------------------------------------- neighbours
columns = st.columns(len(state.EXPLORE_SCORES), gap="medium")
for column, name in zip(columns, state.EXPLORE_SCORES, strict=True):
    score = SCORES[name]
    rows = table[table["score"] == name]
    with column:
        st.markdown(f"#### {GALLERY_TITLES[name]}")
        st.caption(score.summary + (" Higher is nearer." if score.higher_is_nearer else " Lower is nearer."))
        thumbs = [thumbnail_png(res, i, presentation.size(3, 4)) for i in rows["item"]]
        captions = [f"{c} #{i} · {v:.2f}" for c, i, v in zip(rows["class"], rows["item"], rows["value"], strict=True)]
        st.image(thumbs, caption=captions, width=presentation.size(84, 112), output_format="PNG")

if not presenting:
    d1, d2, _ = st.columns([1, 1, 2])
    d1.download_button("Download rankings (CSV)", table.to_csv(index=False).encode(),
                       file_name="latent-explorer-rankings.csv", mime="text/csv", icon=":material/table_view:",
                       key="dl_csv")
    sheet_items = [table.loc[table["score"] == n, "item"].to_numpy() for n in state.EXPLORE_SCORES]
    d2.download_button("Download neighbours (PNG)", lambda: png_bytes(sheet(np.stack(
        [res.data.images[items] for items in sheet_items]), scale=3), compress_level=6),
        file_name="latent-explorer-neighbours.png", mime="image/png", icon=":material/download:", key="dl_strip",
        help="One row per score: " + ", ".join(state.EXPLORE_SCORES))
state.sync_url()
