"""Compare: one query ranked under every score, how much the rankings agree, and why they differ."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from latent.rankings import agreement, neighbour_table
from latent.render import png_bytes, strip
from latent.scores import SCORES
from ui import state
from ui.page import start_page


res, index, presenting = start_page()

st.title("Compare the scores")
q = state.query()
top, controls = st.columns([1, 4], gap="large")
with top:
    st.image(png_bytes(res.decoder.decode_mean(q.z_array), scale=5), caption="The query z, decoded", width=140, output_format="PNG")
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
                 caption=" · ".join(f"#{i} {v:.2f}" for i, v in zip(rows["item"], rows["value"])), output_format="PNG")

st.subheader("How much do the rankings agree?")
overlap, tau = agreement(index, z, names, q.k, q.s)
h1, h2 = st.columns(2)


def heatmap(frame, title, zmin):
    fig = go.Figure(go.Heatmap(z=frame.to_numpy(), x=list(frame.columns), y=list(frame.index), zmin=zmin, zmax=1,
                               colorscale="Cividis", text=np.round(frame.to_numpy(), 2), texttemplate="%{text}",
                               hovertemplate="%{y} vs %{x}: %{z:.2f}<extra></extra>"))
    fig.update_layout(title=title, height=420, margin=dict(l=10, r=10, t=40, b=10), yaxis_autorange="reversed")
    return fig


h1.plotly_chart(heatmap(overlap, f"Top-{q.k} overlap (shared items / k)", 0), key="overlap")
h2.plotly_chart(heatmap(tau, "Kendall's tau over the union of both top-k sets", -1), key="tau")

st.subheader("Why they differ: distance against log-likelihood")
euclid = index.scores_all(z, score="euclidean")
loglik = index.scores_all(z, score="likelihood")
near = np.argsort(euclid, kind="stable")[:3000]
top_like = table.loc[table["score"] == "likelihood", "item"].to_numpy()
top_eucl = table.loc[table["score"] == "euclidean", "item"].to_numpy()
shown = np.union1d(near, np.concatenate([top_like, top_eucl]))
sigma_mean = res.catalog.sigma[shown].mean(1)
fig = go.Figure()
fig.add_trace(go.Scattergl(
    x=euclid[shown], y=loglik[shown], mode="markers", name="items",
    marker=dict(size=5, color=sigma_mean, colorscale="Viridis", colorbar=dict(title="mean sigma"), opacity=0.7),
    customdata=np.stack([shown, res.catalog.labels[shown]], 1),
    hovertemplate="#%{customdata[0]}<br>||z - mu|| = %{x:.3f}<br>log q(z|x) = %{y:.2f}<extra></extra>"))
for items, name, symbol in ((top_like, "top-k likelihood", "diamond-open"), (top_eucl, "top-k Euclidean", "square-open")):
    fig.add_trace(go.Scattergl(x=euclid[items], y=loglik[items], mode="markers", name=name,
                               marker=dict(size=13, symbol=symbol, color="#D55E00", line=dict(width=2))))
fig.update_layout(height=480, xaxis_title="Euclidean distance ||z - mu(x)||", yaxis_title="log q(z|x)",
                  margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=1.05))
st.plotly_chart(fig, key="why")
st.caption("The 3,000 items nearest by Euclidean distance, plus both top-k sets. At equal distance, a narrow "
           "posterior (small sigma, dark) is penalised more steeply by the quadratic term, while a broad one "
           "(large sigma, light) pays the -log sigma normaliser: so the likelihood's nearest are not simply the "
           "closest means.")
state.sync_url()
