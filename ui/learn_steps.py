"""The seven steps of the Learn page, each a function of one :class:`Walk` that draws its widgets and figures.

The maths is :mod:`latent.teaching`, :mod:`latent.uncertainty` and :mod:`latent.interpolation`, cached across
sessions by :mod:`ui.learn_cache`; the figures are :mod:`ui.figures.learn`. Every choice is an extra of the
query (the URL keys are :data:`ui.state.LEARN_FIELDS`): a widget shows the query's value (:func:`bind`) and its
``on_change`` writes a user's change back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from latent import teaching, uncertainty
from latent.cartography import most_active
from latent.data import CLASS_NAMES
from latent.interpolation import straight_path
from latent.model import decode_images
from latent.render import png_bytes, strip
from latent.scores import default_spread
from latent.urlstate import QueryState
from ui import learn_cache, presentation, state
from ui.figures import learn as figures
from ui.resources import Resources, active_dimensions

TITLES = {
    "encode": "Encoding: an item becomes a Gaussian",
    "reparam": "The reparameterisation trick",
    "nearest": "Which item is nearest to my z?",
    "kl": "KL between Gaussians",
    "prior": "The KL term in training",
    "uncertainty": "Uncertainty on the map",
    "interpolate": "Interpolation",
}
# Widget keys of the steps (the URL keys they mirror are in ui.state.LEARN_FIELDS).
W_STEP, W_ITEM, W_CLASS = "w_learn_step", "w_learn_item", "w_learn_class"
W_VS, W_DIM, W_NB = "w_learn_vs", "w_learn_dim", "w_learn_nb"
W_DX, W_DY, W_COVER, W_LEVEL = "w_learn_dx", "w_learn_dy", "w_learn_cover", "w_learn_level"
W_TO = "w_learn_to"
N_SAMPLES = 8
N_FRAMES = 10
#: The rows of the broad-posterior table, in order, and the :class:`latent.teaching.Penalty` field of each.
PENALTY_ROWS = {"‖z − μ‖ (Euclidean)": "euclidean", "−Σ (z−μ)²/2σ² (distance)": "distance",
                "−Σ log σ (width)": "width", "−(d/2) log 2π": "constant", "log q(z|x)": "total"}


@dataclass(frozen=True)
class Walk:
    """What every step of one run shares.

    Attributes:
        x: the item of steps 1-2 (the query's item, else the item whose posterior explains z best);
            mu_x, sigma_x: (d,) float64 its posterior.
        eps_seed, eps, samples: the noise's seed, eps (N_SAMPLES, d) and z = mu_x + sigma_x eps (N_SAMPLES, d).
        top_items, top_values: the query's top-k by likelihood.
    """

    res: Resources
    index: Any  # latent.search.SearchIndex
    presenting: bool
    font: int
    active: np.ndarray
    q: QueryState
    x: int
    mu_x: np.ndarray
    sigma_x: np.ndarray
    eps_seed: int
    eps: np.ndarray
    samples: np.ndarray
    top_items: np.ndarray
    top_values: np.ndarray

    @property
    def z(self) -> np.ndarray:
        return self.q.z_array

    @property
    def d(self) -> int:
        return self.res.catalog.latent_dim

    def label(self, i: int) -> str:
        return f"#{i} {CLASS_NAMES[int(self.res.catalog.labels[i])]}"


def walk(res: Resources, index: Any, presenting: bool) -> Walk:
    """The shared values of this run, from the session's query."""
    q = state.query()
    z = q.z_array
    cat = res.catalog
    top_items, top_values = index.search(z, score="likelihood", k=q.k)
    x = q.item if q.item is not None else int(top_items[0])
    mu_x, sigma_x = cat.mu[x].astype(np.float64), cat.sigma[x].astype(np.float64)
    eps_seed = state.extra("eps")
    eps = teaching.draw_eps(eps_seed, N_SAMPLES, cat.latent_dim)  # (N_SAMPLES, d)
    return Walk(res, index, presenting, presentation.font_size(), active_dimensions(res), q, x, mu_x, sigma_x,
                eps_seed, eps, teaching.reparameterise(mu_x, sigma_x, eps), top_items, top_values)


# ----------------------------------------------------------------------------- shared widgets


def bind(widget_key: str, value) -> None:
    """Show the query's value in a widget drawn next (its on_change writes the value back)."""
    st.session_state[widget_key] = value


def picture(image: np.ndarray, caption: str, normal: int, large: int) -> None:
    """A 28x28 image as a crisp PNG, larger when presenting."""
    width = presentation.size(normal, large)
    st.image(png_bytes(image, scale=max(1, width // 28)), caption=caption, width=width, output_format="PNG")


def gallery(w: Walk, items: np.ndarray, captions: list[str], normal: int = 84, large: int = 140) -> None:
    width = presentation.size(normal, large)
    st.image([png_bytes(w.res.data.images[i], scale=max(1, width // 28)) for i in items], caption=captions,
             width=width, output_format="PNG")


def chart(w: Walk, fig, key: str) -> None:
    # Streamlit's chart theme sets its own (small) fonts; a projector needs the figure's.
    st.plotly_chart(fig, key=key, config={"displaylogo": False}, theme=None if w.presenting else "streamlit")


def item_controls(w: Walk) -> None:
    res, cat = w.res, w.res.catalog
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    bind(W_ITEM, w.x)
    c1.number_input("Item number", 0, len(cat) - 1, step=1, key=W_ITEM, help="The query becomes this item's mean.",
                    on_change=lambda: state.start_from_item(res, st.session_state[W_ITEM]))
    bind(W_CLASS, int(cat.labels[w.x]))
    c2.selectbox("Class", range(len(CLASS_NAMES)), format_func=lambda c: CLASS_NAMES[c], key=W_CLASS,
                 on_change=random_of_class, args=(res,), help="Jump to a random item of this class.")
    c3.button("Another", key="btn_learn_random", width="stretch", help="Another random item of this class",
              icon=":material/casino:", on_click=random_of_class, args=(res,))


def random_of_class(res: Resources) -> None:
    state.start_from_random_item_of_class(res, st.session_state[W_CLASS])


def sample_strip(w: Walk) -> np.ndarray:
    """Draw the decoded samples of q(z|x) as one strip; returns the frames (N_SAMPLES, 28, 28)."""
    frames = decode_images(w.res.model, w.samples)  # (N_SAMPLES, 28, 28)
    scale = presentation.size(4, 5)
    st.image(png_bytes(strip(frames, scale=scale, gap=2 * scale)), output_format="PNG",
             caption=f"{N_SAMPLES} samples z = μ + σ ⊙ ε, decoded (ε seed {w.eps_seed})")
    return frames


# ----------------------------------------------------------------------------- 1. encoding
def encode(w: Walk) -> None:
    res, x = w.res, w.x
    st.markdown("The encoder does not map an image to a point: it maps it to a **Gaussian** "
                "q(z|x) = N(μ(x), diag σ(x)²), a cloud of latent codes that all decode to plausible versions "
                "of the garment: a mean μ and a spread σ in every dimension.")
    if not w.presenting:
        item_controls(w)
    if w.q.item is None:
        st.caption(f"z is not an item's mean, so this shows the item whose posterior explains z best: {w.label(x)}.")
    left, right = st.columns([1, 3], gap="large")
    with left:
        picture(res.data.images[x], f"Item {w.label(x)}", 168, 252)
        picture(decode_images(res.model, w.mu_x), "Decoded from μ(x)", 168, 252)
    with right:
        chart(w, figures.posterior_bars(w.mu_x, w.sigma_x, w.active, w.font), "learn_bars")
    st.markdown("**How much does the garment vary within its posterior?** Decoded samples z ~ q(z|x), and where "
                "the pixels vary:")
    s1, s2 = st.columns([4, 1], gap="medium")
    with s1:
        frames = sample_strip(w)
    with s2:
        spread = teaching.pixel_spread(frames)  # (28, 28)
        top = float(spread.max())
        picture(spread / top if top > 0 else spread, f"Pixel std over the {N_SAMPLES} samples (white = {top:.3f})",
                112, 140)
    st.caption("Grey dimensions are unused: there μ ≈ 0 and σ ≈ 1, the posterior equals the prior, and the "
               "decoder ignores them. Small σ: the encoder is sure; large σ: many codes fit the image.")


# ----------------------------------------------------------------------------- 2. reparameterisation
def reparam(w: Walk) -> None:
    d, mu_x, sigma_x, eps = w.d, w.mu_x, w.sigma_x, w.eps
    st.markdown("Training needs gradients of an expectation over z ~ q(z|x). Sampling is not differentiable, "
                "so the randomness is moved into a fixed noise **ε ~ N(0, I)** and z becomes a smooth function "
                "of μ and σ:")
    st.latex(r"z = \mu(x) + \sigma(x) \odot \varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I)"
             r"\qquad\Rightarrow\qquad \frac{\partial z}{\partial \mu} = 1,"
             r"\ \ \frac{\partial z}{\partial \sigma} = \varepsilon")
    first = w.samples[0]
    shown = "\\\\".join(
        rf"z_{j} &= {teaching.num(mu_x[j])} + {teaching.num(sigma_x[j])} \times ({teaching.num(eps[0, j])})"
        rf" = {teaching.num(first[j])}" for j in range(min(3, d)))
    c1, c2 = st.columns([2, 3], gap="large")
    with c1:
        st.markdown(f"Sample 1 of item {w.label(w.x)}, first dimensions:")
        st.latex(r"\begin{aligned}" + shown + r"\end{aligned}")
        b1, b2 = st.columns(2)
        b1.button("Draw ε again", icon=":material/casino:", key="btn_eps_again", width="stretch",
                  on_click=lambda: state.set_extra("eps", state.new_seed()),
                  help="New noise ε from a fresh seed; the seed goes into the link.")
        if not w.presenting:
            b2.button("Use sample 1 as z", icon=":material/arrow_forward:", key="btn_use_sample", width="stretch",
                      on_click=use_sample, args=(w.res, tuple(float(v) for v in first)),
                      help="Make sample 1 the query and go on to step 3.")
    with c2:
        frame = pd.DataFrame({"dimension": [f"z{j}" for j in range(d)], "μ": mu_x, "σ": sigma_x, "ε": eps[0],
                              "z = μ + σε": first})
        st.dataframe(frame.style.format(precision=3), hide_index=True, key="learn_reparam_table",
                     height=presentation.size(35 * (d + 1) + 3, 420))
    st.markdown("Each sample is the mean shifted by **σ ⊙ ε**: far along the dimensions where the encoder is "
                "unsure, hardly at all where it is sure. *Draw ε again* for new samples:")
    sample_strip(w)


def use_sample(res: Resources, z: tuple[float, ...]) -> None:
    state.set_query(state.query().replace(z=z, item=None, seed=None), res)
    state.set_extra("step", "nearest")


# ----------------------------------------------------------------------------- 3. nearest
def nearest(w: Walk) -> None:
    res, cat, z, d, top_items, top_values = w.res, w.res.catalog, w.z, w.d, w.top_items, w.top_values
    st.markdown("Every item is a Gaussian, so *nearest to z* has a principled answer: the item whose posterior "
                "gives z the highest density, **log q(z|x)**. It needs only μ and σ of each item (no sampling, "
                "no ε): the formula is exact.")
    a = int(top_items[0])
    terms = teaching.likelihood_terms(z, cat.mu[a], cat.sigma[a])
    c1, c2 = st.columns([1, 4], gap="large")
    with c1:
        picture(decode_images(res.model, z), "The query z, decoded", 140, 224)
    with c2:
        if not w.presenting:
            st.slider("Neighbours (k)", 1, state.K_MAX, key=state.W_K)
        gallery(w, top_items, [f"{w.label(i)} · {v:.2f}" for i, v in zip(top_items, top_values, strict=True)])
        if not w.presenting:
            d1, d2 = st.columns(2)
            d1.download_button("Decoded z (PNG)", png_bytes(decode_images(res.model, z), scale=12),
                               file_name="latent-explorer-z.png", mime="image/png", icon=":material/download:",
                               key="dl_learn_z")
            d2.download_button("Neighbour strip (PNG)", png_bytes(strip(res.data.images[top_items], scale=4, gap=8)),
                               file_name="latent-explorer-neighbours.png", mime="image/png",
                               icon=":material/download:", key="dl_learn_strip")
    st.markdown(f"**The top match, {w.label(a)}**, with this query's numbers:")
    st.latex(teaching.likelihood_latex(terms, label=rf"x_{{\#{a}}}"))
    if not w.presenting:
        with st.expander("Term by term", icon=":material/table_view:"):
            st.dataframe(pd.DataFrame({
                "dimension": [f"z{j}" for j in range(d)], "z": terms.z, "μ": terms.mu, "σ": terms.sigma,
                "(z−μ)²/2σ²": terms.quadratic, "log σ": terms.log_sigma,
                "log N(z; μ, σ²)": terms.per_dimension,
            }).style.format(precision=4), hide_index=True, key="learn_terms")

    st.markdown("#### Why a broad posterior pays a penalty")
    euclid = w.index.search(z, score="euclidean", k=w.q.k)[0]
    options = [int(i) for i in dict.fromkeys([*top_items.tolist(), *euclid.tolist()]) if int(i) != a]
    if not options:
        st.info("Only one item in the ranking: increase k to compare it with another item.")
        return
    vs = state.extra("vs")
    b, j = teaching.widest_contrast(a, options, cat.sigma)
    if vs in options:
        b, j = vs, teaching.contrast_dimension(cat.sigma[a], cat.sigma[vs])
    if state.extra("dim") is not None:
        j = state.extra("dim")
    if not w.presenting:
        e1, e2 = st.columns(2)
        bind(W_VS, b)
        e1.selectbox("Compare the top match with", options, key=W_VS, format_func=w.label,
                     on_change=state.extra_from_widget, args=("vs", W_VS),
                     help="Items from the likelihood and the Euclidean top-k; the default is the one whose "
                          "posterior is broadest relative to the top match's, in some dimension.")
        bind(W_DIM, j)
        e2.selectbox("Dimension", range(d), key=W_DIM, format_func=lambda v: f"z{v}",
                     on_change=state.extra_from_widget, args=("dim", W_DIM))
    broad_penalty(w, a, b, j)


def broad_penalty(w: Walk, a: int, b: int, j: int) -> None:
    """Step 3's comparison of the top match a with item b: their 1-D posteriors in dimension j, and the table."""
    cat, z = w.res.catalog, w.z
    both = [(a, figures.ITEM_A), (b, figures.ITEM_B)]
    grid = teaching.density_window(float(z[j]), [cat.mu[i, j] for i, _ in both], [cat.sigma[i, j] for i, _ in both])
    curves = []
    for i, colour in both:
        t = teaching.likelihood_terms(z, cat.mu[i], cat.sigma[i])
        curve = figures.Curve1D(f"{w.label(i)}: σ = {cat.sigma[i, j]:.3f}", float(cat.mu[i, j]),
                                float(cat.sigma[i, j]), float(t.per_dimension[j]), colour)
        curves.append((curve, teaching.normal_pdf(grid, curve.mu, curve.sigma)))
    left, right = st.columns([3, 2], gap="large")
    with left:
        chart(w, figures.two_gaussians(float(z[j]), grid, curves, j, w.font), "learn_two_gaussians")
    with right:
        penalties = {w.label(i): teaching.penalty(z, cat.mu[i], cat.sigma[i]) for i, _ in both}
        table = {label: {row: getattr(p, field) for row, field in PENALTY_ROWS.items()}
                 for label, p in penalties.items()}
        st.dataframe(pd.DataFrame(table).style.format(precision=3), key="learn_penalty")
        gap = teaching.width_gap(cat.sigma[a, j], cat.sigma[b, j])
        broad, narrow = (b, a) if gap >= 0 else (a, b)
        st.markdown(f"In z{j}, #{broad}'s posterior is {np.exp(abs(gap)):.2f}× as broad as #{narrow}'s, so its peak "
                    f"is lower by **{abs(gap):.2f}** nats. A broad posterior spreads its density thin and pays "
                    "**−Σ log σ**; it wins only when z is far from the narrow posterior in units of *that* "
                    "posterior's σ (the distance row).")


# ----------------------------------------------------------------------------- 4. KL
def kl(w: Walk) -> None:
    res, cat, z, top_items, k = w.res, w.res.catalog, w.z, w.top_items, w.q.k
    st.markdown("Treat the query as a small Gaussian **N(z, s²)** instead of a point, and compare it with an item's "
                "posterior with the KL divergence, which has a closed form between Gaussians:")
    if not w.presenting:
        c1, c2 = st.columns(2)
        bind(W_NB, state.extra("nb") if state.extra("nb") in top_items else int(top_items[0]))
        c1.selectbox("Neighbour", [int(i) for i in top_items], key=W_NB, format_func=w.label,
                     on_change=state.extra_from_widget, args=("nb", W_NB), help="From the likelihood top-k.")
        c2.select_slider("Query spread s", options=state.SPREAD_CHOICES, key=state.W_SPREAD,
                         format_func=lambda v: "median σ" if v is None else f"{v:g}")
    nb = state.extra("nb") if state.extra("nb") in top_items else int(top_items[0])
    q_now = state.query()
    s = default_spread(cat.sigma) if q_now.s is None else q_now.s
    terms = teaching.kl_terms(z, s, cat.mu[nb], cat.sigma[nb])
    ident = teaching.kl_identity(z, s, cat.mu[nb], cat.sigma[nb])
    st.latex(teaching.kl_latex(terms, label=rf"x_{{\#{nb}}}"))
    st.markdown("Expand the square and collect what depends on the item: the KL is the negative log-likelihood "
                "plus a penalty that vanishes as s → 0, plus a constant that is the same for every item.")
    st.latex(teaching.identity_latex(ident))
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("KL", f"{ident.kl:.3f}")
    m2.metric("−log q(z|x)", f"{ident.neg_log_likelihood:.3f}")
    m3.metric("Σ s²/2σ²", f"{ident.spread_penalty:.3f}")
    m4.metric("c(s)", f"{ident.constant:.3f}")
    st.markdown(f"**So as s shrinks, the KL ranking becomes the likelihood ranking.** On the live ranking of this z "
                f"(top-{k}):")
    spreads = teaching.spread_grid()
    curve = learn_cache.overlap(res, z, k, spreads)
    left, right = st.columns([3, 2], gap="large")
    with left:
        chart(w, figures.overlap_chart(spreads, curve, k, q_now.s, w.font), "learn_overlap")
    with right:
        kl_items = w.index.search(z, score="kl", k=k, s=q_now.s)[0]
        st.markdown(f"At the current s: **{teaching.shared_items(kl_items, top_items)} of {k}** shared.")
        scale = 2 if not w.presenting else 3
        st.image(png_bytes(strip(res.data.images[top_items], scale=scale, gap=4)), caption="top-k by log q(z|x)",
                 output_format="PNG")
        st.image(png_bytes(strip(res.data.images[kl_items], scale=scale, gap=4)), caption="top-k by KL",
                 output_format="PNG")


# ----------------------------------------------------------------------------- 5. prior
def prior(w: Walk) -> None:
    pic = learn_cache.prior_picture(w.res)
    d, active = w.d, w.active
    n_active = int(sum(active))
    st.markdown("The ELBO's KL term pulls every posterior towards the prior **N(0, I)**. Individually they cannot "
                "all match it (then z would carry no information about x), but their **aggregate**, the mixture "
                "q(z) = 1/N Σᵢ q(z|xᵢ), should look like the prior. Per dimension: the histogram of the means μ, "
                "the aggregate posterior, and the prior.")
    m1, m2, m3 = st.columns(3)
    m1.metric("Active dimensions", f"{n_active} of {d}", help="Mean KL to the prior above 0.01 nats.")
    m2.metric("Mean KL per item (nats)", f"{pic.kl.sum():.2f}")
    m3.metric("Unused dimensions", ", ".join(f"z{j}" for j in range(d) if not active[j]) or "none")
    chart(w, figures.prior_panels(pic.edges, pic.density, pic.grid, pic.aggregate, pic.prior, pic.kl, active, w.font),
          "learn_prior")
    st.caption("An active dimension spreads its means out and gives each posterior a small σ; an unused one "
               "collapses every posterior onto the prior (all μ ≈ 0, σ ≈ 1): its KL is ≈ 0 and the decoder "
               "ignores it.")


# ----------------------------------------------------------------------------- 6. uncertainty map
def uncertainty_map(w: Walk) -> None:
    res, cat, z, d, top_items = w.res, w.res.catalog, w.z, w.d, w.top_items
    dims = state.extra("axes") or default_dims(res)
    level = float(state.extra("level"))
    cover = bool(state.extra("cover"))
    if not w.presenting:
        c1, c2, c3, c4, c5 = st.columns([1, 1, 2, 1, 1], vertical_alignment="bottom")
        bind(W_DX, dims[0])
        c1.selectbox("x axis", range(d), key=W_DX, format_func=lambda v: f"z{v}", on_change=set_dims, args=(res,))
        bind(W_DY, dims[1])
        c2.selectbox("y axis", range(d), key=W_DY, format_func=lambda v: f"z{v}", on_change=set_dims, args=(res,))
        c3.slider("Top matches (k)", 1, state.K_MAX, key=state.W_K)
        bind(W_COVER, cover)
        c4.toggle("Who covers z?", key=W_COVER, on_change=state.extra_from_widget, args=("cover", W_COVER),
                  help="Items whose posterior's central ellipsoid (all d dimensions) contains z.")
        bind(W_LEVEL, state.extra("level"))
        c5.selectbox("Level", state.COVER_LEVELS, key=W_LEVEL, format_func=lambda v: f"{float(v):.0%}",
                     on_change=state.extra_from_widget, args=("level", W_LEVEL))
    i, j = dims
    pair = [i, j]
    ellipses = [figures.Ellipse(int(item), int(cat.labels[item]), r,
                                uncertainty.ellipse_points(cat.mu[item, pair], cat.sigma[item, pair], r),
                                cat.mu[item, pair].astype(np.float64), cat.sigma[item, pair].astype(np.float64))
                for item in top_items for r in uncertainty.ELLIPSE_RADII]
    bg = learn_cache.background_items(res)
    covering_xy, note = None, ""
    if cover:
        mask = uncertainty.covering(z, cat.mu, cat.sigma, level)
        covering_xy = cat.mu[mask][:, pair]
        threshold = uncertainty.coverage_radius2(level, d)
        covered_top = int(mask[top_items].sum())
        count = int(mask.sum())
        plural = "s" if count != 1 else ""
        note = (f"**{count:,} item{plural}** cover z: z lies inside their central {level:.0%} posterior "
                f"ellipsoid, Σⱼ (zⱼ − μⱼ)²/σⱼ² ≤ {threshold:.2f}, the {level:.0%} quantile of χ² with {d} "
                f"degrees of freedom. The test uses all {d} dimensions, so an item can cover z where its 2-D "
                f"ellipse here does not. {covered_top} of the top-{len(top_items)} cover z.")
    fig = figures.uncertainty_map((i, j), cat.mu[bg][:, pair], cat.labels[bg], ellipses, z[pair], covering_xy, level,
                                  w.font, height=presentation.size(640, 760))
    chart(w, fig, "learn_map")
    if note:
        st.markdown(note)
    st.caption(f"Latent dimensions z{i} and z{j} at their true scale (no projection): {len(bg):,} catalog means as "
               f"dots, the query as a star, and the posterior of each of the top-{len(top_items)} matches by log "
               f"q(z|x) as its 1σ and 2σ ellipses. In two dimensions these hold 39% and 86% of the posterior "
               f"(1 − e^(−r²/2)), not the 68% and 95% of one dimension.")
    if not w.presenting:
        st.download_button("Map (interactive HTML)", lambda: fig.to_html(include_plotlyjs=True, full_html=True),
                           file_name=f"latent-explorer-uncertainty-z{i}-z{j}.html", mime="text/html",
                           icon=":material/download:", key="dl_learn_map")


def set_dims(res: Resources) -> None:
    """Both axes from their widgets; moving one axis onto the other swaps them, so they always differ."""
    i, j = int(st.session_state[W_DX]), int(st.session_state[W_DY])
    old_i, old_j = state.extra("axes") or default_dims(res)
    if i == j:
        i, j = (i, old_i) if i != old_i else (old_j, j)
    state.set_extra("axes", (i, j))


def default_dims(res: Resources) -> tuple[int, int]:
    """The two dimensions the model uses most (largest mean KL to the prior)."""
    return most_active(learn_cache.prior_picture(res).kl, 2)


# ----------------------------------------------------------------------------- 7. interpolation
def interpolate(w: Walk) -> None:
    res, cat, z = w.res, w.res.catalog, w.z
    label = int(cat.labels[w.x])
    to = state.extra("to")
    if to is None:
        to = learn_cache.prototype(res, teaching.contrasting_class(label))
    st.markdown(f"Walk from the query z to the mean μ of item {w.label(to)} in a straight line, and decode along "
                f"the way. A VAE's latent space is smooth, so every frame is a plausible garment.")
    if not w.presenting:
        c1, c3 = st.columns([1, 1], vertical_alignment="bottom")
        bind(W_TO, to)
        c1.number_input("End at item", 0, len(cat) - 1, step=1, key=W_TO,
                        on_change=lambda: state.set_extra("to", int(st.session_state[W_TO])))
        c3.button("Random item of another class", key="btn_learn_to_random", icon=":material/casino:",
                  on_click=random_target, args=(res, label))
    zb = cat.mu[to].astype(np.float64)
    line = straight_path(res.model, z, zb, N_FRAMES)
    ts = np.linspace(0.0, 1.0, N_FRAMES)
    left, right = st.columns([2, 3], gap="large")
    with left:
        chart(w, figures.interpolation_animation(line.frames, ts, "Straight line", w.font,
                                                 height=presentation.size(460, 560)), "learn_animation")
    with right:
        scale = presentation.size(3, 4)
        st.image(png_bytes(strip(line.frames, scale=scale, gap=2 * scale)), output_format="PNG",
                 caption=f"Straight line z(t) = (1 − t) z + t μ, t = 0 … 1 · decoded path length "
                         f"{line.length:.2f}")
        if state.extra("geo"):
            geo = learn_cache.geodesic(res, z, zb, N_FRAMES)
            st.image(png_bytes(strip(geo.frames, scale=scale, gap=2 * scale)), output_format="PNG",
                     caption=f"Geodesic under the decoder · decoded path length {geo.length:.2f} "
                             f"({100 * (1 - geo.length / line.length):.0f}% shorter)")
            st.caption("The geodesic bends the latent path so that the decoded garment changes at an even pace, "
                       "minimising the summed squared pixel change between frames.")
        else:
            st.button("Compute the geodesic beside it (about a second)", icon=":material/route:",
                      key="btn_geodesic", on_click=state.set_extra, args=("geo", True),
                      help="Minimises the decoded path's energy with L-BFGS; the link remembers it (geo=1).")
        if not w.presenting:
            st.download_button("Frames (PNG)", png_bytes(strip(line.frames, scale=4, gap=8)),
                               file_name="latent-explorer-interpolation.png", mime="image/png",
                               icon=":material/download:", key="dl_learn_frames")


def random_target(res: Resources, label: int) -> None:
    others = np.flatnonzero(res.catalog.labels != label)
    state.set_extra("to", int(st.session_state[state.RNG].choice(others)))


#: Each step's function, by its URL value.
STEPS = {"encode": encode, "reparam": reparam, "nearest": nearest, "kl": kl, "prior": prior,
         "uncertainty": uncertainty_map, "interpolate": interpolate}
