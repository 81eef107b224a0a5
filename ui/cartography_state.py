"""The Cartography page's widgets and their place in the per-session query.

The page's choices live in the query's extras (``QueryState.extras``, registered in :func:`ui.state.schema`
from :func:`latent.cartography.url_fields`), so they are in the URL like the core keys. Each widget is a
view of one extra: before it is drawn its key is set from the query (:func:`bind`), and only a user's change
(its ``on_change`` callback) writes back. So a default that depends on the query (the two most active
dimensions, the nearest items) stays a default, and follows the query, until the user picks something.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from ui import state

# Widget keys (constants, one place).
W_MEASURE = "w_carto_measure"
W_SPAN = "w_carto_span"
W_DIM_X = "w_carto_dim_x"
W_DIM_Y = "w_carto_dim_y"
W_VIA_X = "w_carto_via_x"
W_VIA_Y = "w_carto_via_y"
W_EXTENT = "w_carto_extent"
W_GRID = "w_carto_grid"
W_TARGET = "w_carto_target"
W_TARGET_ANY = "w_carto_target_any"
W_VIEW = "w_carto_view"
W_WEIGHT = "w_carto_weight"
BTN_MF = "btn_carto_mf"
MF_REQUESTED = "carto_mf_requested"  # set by the button, read once by the page
GRAPH_REQUESTED = "carto_graph_requested"
W_GARMENTS = "w_carto_garments"
BTN_EXACT = "btn_carto_exact"
BTN_GEODESIC = "btn_carto_geodesic"
BTN_GRAPH = "btn_carto_graph"
BTN_TARGET_ANY = "btn_carto_target_any"


def extra(name: str) -> Any:
    """The query's value for a page key (None when the schema gave it no value)."""
    return state.query().extras.get(name)


def set_extra(name: str, value: Any) -> None:
    st.session_state[state.QUERY] = state.query().with_extra(name, value)


def _store(key: str, name: str, convert: Callable[[Any], Any]) -> None:
    set_extra(name, convert(st.session_state[key]))


def bind(key: str, name: str, shown: Any, convert: Callable[[Any], Any] = lambda v: v) -> dict[str, Any]:
    """Show ``shown`` in the widget ``key``; a user's change stores ``convert(value)`` as the extra ``name``.

    Returns the keyword arguments for the widget call (``key``, ``on_change``, ``args``).
    """
    st.session_state[key] = shown
    return {"key": key, "on_change": _store, "args": (key, name, convert)}


def _store_pair(key: str, index: int, name: str, shown: tuple[Any, Any]) -> None:
    new = st.session_state[key]
    pair = list(shown)
    other = 1 - index
    if new == pair[other]:  # picking the other axis's value swaps the two
        pair[other] = pair[index]
    pair[index] = new
    set_extra(name, (pair[0], pair[1]))


def bind_pair(keys: tuple[str, str], name: str, shown: tuple[Any, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two widgets showing a pair of distinct values (two dimensions, two items) stored as one extra.

    Choosing for one widget the value the other shows swaps them, so the pair always stays distinct.
    """
    out = []
    for index, key in enumerate(keys):
        st.session_state[key] = shown[index]
        out.append({"key": key, "on_change": _store_pair, "args": (key, index, name, tuple(shown))})
    return out[0], out[1]


def request(flag: str) -> None:
    """Button callback: ask this run to do a heavy job (callbacks run before the script, so the request
    survives any rerun of the page, unlike a button's one-shot value)."""
    st.session_state[flag] = True


def take_request(flag: str) -> bool:
    """True once after :func:`request` set ``flag``."""
    return bool(st.session_state.pop(flag, False))


def with_current(options: list[int], current: Any) -> list[int]:
    """A selectbox's options with the current choice(s) appended when they are not among them (a link may
    hold any item, not only one of the nearest)."""
    return options + [int(i) for i in (current or ()) if int(i) not in options]
