"""Compare: one query ranked under every score, how much the rankings agree, and why they differ."""

import streamlit as st

from latent.rankings import agreement, nearest_with, neighbour_table
from latent.render import png_bytes, strip
from latent.scores import SCORES
from ui import state
from ui.figures.compare import agreement_heatmap, distance_likelihood
from ui.page import start_page

res, index, presenting = start_page()

st.title("Compare the scores")
q = state.query()
top, controls = st.columns([1, 4], gap="large")
with top:
    st.image(png_bytes(res.decoder.decode_mean(q.z_array), scale=5), caption="The query z, decoded", width=140,
             output_format="PNG")
with controls:
    st.markdown("The same query ranked under every score in the registry. Distances and divergences rank "
                "smallest first; the log-likelihood ranks largest first. Set z on **Explore** or **Atlas**.")
    if not presenting:
        c1, c2 = st.columns(2)
        c1.slider("Neighbours per score (k)", 1, state.K_MAX, key=state.W_K)
        c2.select_slider("Query spread s", options=state.SPREAD_CHOICES, key=state.W_SPREAD,
                         format_func=lambda v: "median sigma" if v is None else f"{v:g}",
                         help="Used by the scores that treat the query as a Gaussian N(z, s^2).")
q = state.query()
z = q.z_array
names = list(SCORES)
table = neighbour_table(index, res.catalog, z, names, q.k, q.s)

st.subheader("Top-k under each score")
with st.expander("The formulas", icon=":material/function:"):
    for name in names:
        st.markdown(f"**{name}**: {SCORES[name].summary}")
        st.latex(SCORES[name].formula)
for name in names:
    rows = table[table["score"] == name]
    score = SCORES[name]
    c_name, c_strip = st.columns([1, 4], vertical_alignment="center")
    with c_name:
        st.markdown(f"**{name}**")
        st.caption(("Higher" if score.higher_is_nearer else "Lower") + " is nearer.")
    with c_strip:
        st.image(png_bytes(strip(res.data.images[rows["item"].to_numpy()], scale=2, gap=4)),
                 caption=" · ".join(f"#{i} {v:.2f}" for i, v in zip(rows["item"], rows["value"], strict=True)),
                 output_format="PNG")

st.subheader("How much do the rankings agree?")
overlap, tau = agreement(index, z, names, q.k, q.s)
h1, h2 = st.columns(2)
h1.plotly_chart(agreement_heatmap(overlap, f"Top-{q.k} overlap (shared items / k)", 0), key="overlap")
h2.plotly_chart(agreement_heatmap(tau, "Kendall's tau over the union of both top-k sets", -1), key="tau")

st.subheader("Why they differ: distance against log-likelihood")
euclid = index.scores_all(z, score="euclidean")
loglik = index.scores_all(z, score="likelihood")
top_like = table.loc[table["score"] == "likelihood", "item"].to_numpy()
top_eucl = table.loc[table["score"] == "euclidean", "item"].to_numpy()
shown = nearest_with(euclid, 3000, (top_like, top_eucl))
tops = [(top_like, "top-k likelihood", "diamond-open"), (top_eucl, "top-k Euclidean", "square-open")]
fig = distance_likelihood(euclid, loglik, shown, res.catalog.sigma[shown].mean(1), res.catalog.labels[shown], tops)
st.plotly_chart(fig, key="why")
st.caption("The 3,000 items nearest by Euclidean distance, plus both top-k sets. At equal distance, a narrow "
           "posterior (small sigma, dark) is penalised more steeply by the quadratic term, while a broad one "
           "(large sigma, light) pays the -log sigma normaliser: so the likelihood's nearest are not simply the "
           "closest means.")
state.sync_url()
