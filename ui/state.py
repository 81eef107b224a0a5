"""Per-session state: the one query of this browser session, its widgets, and its mirror in the URL.

The canonical query is a :class:`latent.urlstate.QueryState` kept under :data:`QUERY` in
``st.session_state``, so each session has its own and no two users see each other's z. Widgets
(keys starting with ``w_``) are views of it: Streamlit forgets a widget's value when a page that
does not draw it runs, so widgets are re-seeded from the query whenever their key is missing.
Actions (reset, random draw, pick an item, a click on the Atlas) replace the query in callbacks,
before any widget is drawn. At the end of every run the URL is set to the query, so a link
reopens exactly the same view (the schema lives in :mod:`latent.urlstate`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import streamlit as st

from latent.scores import SCORES
from latent.urlstate import (
    CORE_SCHEMA,
    SEED_LIMIT,
    FieldSpec,
    QueryState,
    UrlSchema,
    bool_field,
    choice_field,
    index_pair_field,
    int_field,
    parse_query_params,
    slider_bound,
    to_query_params,
)
from ui.resources import Resources

# Session-state keys (constants, one place).
QUERY = "query"
URL_WARNINGS = "url_warnings"
RNG = "rng"
W_K = "w_k"
W_SPREAD = "w_spread"
W_SCORE = "w_score"
W_ITEM = "w_item"
W_CLASS = "w_class"

K_MAX = 50
DEFAULT_K = 8
#: The three rankings shown side by side on Explore.
EXPLORE_SCORES = ("likelihood", "euclidean", "kl")
#: Choices for the query spread s (None: the catalog's median sigma per dimension).
SPREAD_CHOICES: tuple[float | None, ...] = (None, 0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
S_RANGE = (1e-3, 10.0)


def slider_key(j: int) -> str:
    return f"w_z{j}"


def schema() -> UrlSchema:
    """The URL schema of this app (later pages register their keys here)."""
    return _extended(_cartography_fields(CORE_SCHEMA), PRESENTATION_FIELDS + LEARN_FIELDS)


def _cartography_fields(base: UrlSchema) -> UrlSchema:
    """``base`` plus the Cartography page's keys (measure, span, dims, via, extent, grid, target, view)."""
    from latent.cartography_url import url_fields

    for spec in url_fields():
        base = base.with_field(spec)
    return base


def _extended(base: UrlSchema, fields: Iterable[FieldSpec]) -> UrlSchema:
    for spec in fields:
        base = base.with_field(spec)
    return base


# --------------------------------------------------------------------------- presentation mode and the Learn page
# Their URL keys; the values land in QueryState.extras (read with extra(), write with set_extra()).
PRESENT = "present"
W_PRESENT = "w_present"
PRESENTATION_FIELDS = (bool_field(PRESENT, help="presentation mode: no controls, large pictures for a projector"),)

#: The Learn page's steps, in order (the ``step`` key).
LEARN_STEPS = ("encode", "reparam", "nearest", "kl", "prior", "uncertainty", "interpolate")
#: Coverage levels offered on the uncertainty map (the ``level`` key).
COVER_LEVELS = ("0.5", "0.9", "0.95", "0.99")
LEARN_FIELDS = (
    choice_field("step", LEARN_STEPS, LEARN_STEPS[0], help="the Learn page's step"),
    int_field("eps", 0, SEED_LIMIT - 1, default=0, help="the seed of the eps draws on the Learn page"),
    int_field("vs", 0, lambda ctx: ctx.n_items - 1, help="the item compared with the top match (Learn)"),
    int_field("dim", 0, lambda ctx: ctx.latent_dim - 1, help="the dimension of the 1-D picture (Learn)"),
    int_field("nb", 0, lambda ctx: ctx.n_items - 1, help="the neighbour the KL is computed against (Learn)"),
    int_field("to", 0, lambda ctx: ctx.n_items - 1, help="the item the interpolation ends at (Learn)"),
    index_pair_field("axes", help="the two latent dimensions of the uncertainty map (Learn)"),
    choice_field("level", COVER_LEVELS, "0.95", help="the coverage level of the uncertainty map (Learn)"),
    bool_field("cover", help="show which posteriors cover z on the uncertainty map (Learn)"),
    bool_field("geo", help="show the decoder geodesic beside the straight interpolation (Learn)"),
)


def extra(name: str) -> Any:
    """The value of a registered URL key other than the core ones (see :data:`LEARN_FIELDS`)."""
    return query().extras.get(name)


def set_extra(name: str, value: Any) -> None:
    """Set a registered URL key in the query (from a callback, or before the widgets that show it)."""
    st.session_state[QUERY] = query().with_extra(name, value)


def extra_from_widget(name: str, widget_key: str) -> None:
    """``on_change`` callback: copy a widget's value into the URL key ``name``."""
    set_extra(name, st.session_state[widget_key])


def new_seed() -> int:
    """A fresh seed from this session's generator, in 0..2**32-1."""
    return int(st.session_state[RNG].integers(0, SEED_LIMIT))


def bound(res: Resources) -> float:
    """The slider half-range a: 5, widened so that every catalog mean fits."""
    return _bound_for(res.catalog.key, res.catalog.mu)


@st.cache_resource(show_spinner=False)
def _bound_for(key: str, _mu: np.ndarray) -> float:
    return slider_bound(_mu)


def init_session_state(res: Resources) -> None:
    """On a session's first run, read the query from the URL (with warnings); set per-session defaults."""
    if QUERY in st.session_state:
        return
    params = [(key, value) for key in st.query_params for value in st.query_params.get_all(key)]
    state, warnings = parse_query_params(
        params, latent_dim=res.catalog.latent_dim, bound=bound(res), score_names=tuple(SCORES),
        n_items=len(res.catalog), k_max=K_MAX, default_score="likelihood", default_k=DEFAULT_K,
        s_range=S_RANGE, schema=schema(),
    )
    if state.item is not None and state.z != _z_of_item(res, state.item) and not any(
            key == "z" for key, _ in params):
        state = state.replace(z=_z_of_item(res, state.item))  # a link with only ?item=N starts there
    st.session_state[QUERY] = state
    st.session_state[URL_WARNINGS] = warnings
    st.session_state[RNG] = np.random.default_rng()  # per session, created here, never at import


def query() -> QueryState:
    return st.session_state[QUERY]


def _z_of_item(res: Resources, item: int) -> tuple[float, ...]:
    return tuple(float(v) for v in res.catalog.mu[item])


def _forget_widgets(keys: Iterable[str]) -> None:
    for key in keys:
        st.session_state.pop(key, None)


def set_query(state: QueryState, res: Resources) -> None:
    """Replace the query and re-seed its widgets from it (call from callbacks, before widgets)."""
    st.session_state[QUERY] = state
    _forget_widgets(_widget_keys(res.catalog.latent_dim))


# --------------------------------------------------------------------------- actions (callbacks)


def reset_to_origin(res: Resources) -> None:
    set_query(query().replace(z=(0.0,) * res.catalog.latent_dim, item=None, seed=None), res)


def draw_from_prior(res: Resources) -> None:
    """z ~ N(0, I) from a fresh seed, which goes into the URL so the link reproduces the draw."""
    seed = int(st.session_state[RNG].integers(0, 2**32))
    set_query(query().replace(z=prior_draw(seed, res.catalog.latent_dim, bound(res)), item=None, seed=seed), res)


def prior_draw(seed: int, d: int, a: float) -> tuple[float, ...]:
    """The prior draw behind ``seed``: z ~ N(0, I_d) from numpy's PCG64, clipped to [-a, a]."""
    z = np.random.default_rng(seed).standard_normal(d)
    return tuple(float(v) for v in np.clip(z, -a, a))


def start_from_item(res: Resources, item: int) -> None:
    set_query(query().replace(z=_z_of_item(res, int(item)), item=int(item), seed=None), res)


def start_from_random_item_of_class(res: Resources, label: int) -> None:
    candidates = np.flatnonzero(res.catalog.labels == label)
    start_from_item(res, int(st.session_state[RNG].choice(candidates)))


# --------------------------------------------------------------------------- widgets <-> query


def _widget_keys(d: int) -> list[str]:
    return [slider_key(j) for j in range(d)] + [W_K, W_SPREAD, W_SCORE]


def sync_widgets(res: Resources) -> None:
    """Fold the user's latest widget values into the query, then set every widget key from the query.

    Call at the top of each page, before any widget is drawn. Folding first keeps what the user just
    did; assigning afterwards makes a widget on a page drawn for the first time (or again) show the
    query rather than its own default, which Streamlit would otherwise use for a key last drawn on
    another page. An item stays in the query only while z is still its mean, and a seed only while z
    is still its prior draw.
    """
    q = query()
    ss = st.session_state
    d = res.catalog.latent_dim
    changes: dict = {}
    if all(slider_key(j) in ss for j in range(d)):
        z = tuple(float(ss[slider_key(j)]) for j in range(d))
        moved = q.replace(z=z)
        if moved.z != q.z:
            changes["z"] = z
            if q.item is not None and moved.z != _z_of_item(res, q.item):
                changes["item"] = None
            if q.seed is not None and moved.z != prior_draw(q.seed, d, bound(res)):
                changes["seed"] = None
    if W_K in ss:
        changes["k"] = int(ss[W_K])
    if W_SPREAD in ss:
        changes["s"] = ss[W_SPREAD]
    if W_SCORE in ss:
        changes["score"] = ss[W_SCORE]
    if changes:
        q = q.replace(**changes)
        ss[QUERY] = q
    for j, value in enumerate(q.z):
        ss[slider_key(j)] = float(value)
    ss[W_K] = q.k
    ss[W_SPREAD] = q.s if q.s in SPREAD_CHOICES else _nearest_spread(q.s)
    ss[W_SCORE] = q.score or "likelihood"


def _nearest_spread(s: float | None) -> float | None:
    """The spread choice nearest to ``s`` on a log scale (a link may carry any positive s)."""
    if s is None:
        return None
    options = [v for v in SPREAD_CHOICES if v is not None]
    return min(options, key=lambda v: abs(np.log(v) - np.log(s)))


def sync_url() -> None:
    """Mirror the query in the URL (only when it differs, to avoid needless browser updates)."""
    params = to_query_params(query(), schema=schema())
    current = {key: st.query_params.get(key) for key in st.query_params}
    if current != params:
        st.query_params.from_dict(params)


def show_url_warnings() -> None:
    """Show, once per session, what was ignored or clamped in the link that opened it."""
    warnings = st.session_state.pop(URL_WARNINGS, None)
    if warnings:
        st.warning("Some values in the link were not usable and were changed:\n\n"
                   + "\n".join(f"- {w}" for w in warnings), icon=":material/link_off:")
