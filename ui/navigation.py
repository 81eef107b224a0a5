"""The app's pages and the guard that keeps every run going through ``app.py``.

Streamlit has a legacy multipage mode for apps with a ``pages/`` folder: on a fresh server, before
``app.py`` has ever called ``st.navigation``, a deep link such as ``/compare?z=...`` runs
``pages/compare.py`` on its own (no page config, no navigation, file names in the sidebar). Every
page therefore starts with :func:`require_app`: when it finds itself outside ``app.py``, it
registers the app's navigation (which turns the legacy mode off for the process) and reruns, so the
same URL is served by ``app.py`` with the right page.
"""

from __future__ import annotations

import threading

import streamlit as st

from ui import timing

_RUN = threading.local()  # per script-runner thread: are we inside app.py's navigation?


def app_pages() -> list:
    """The dashboard's pages, in menu order (paths are relative to the repository root)."""
    return [
        st.Page("pages/explore.py", title="Explore", icon=":material/tune:", default=True),
        st.Page("pages/atlas.py", title="Atlas", icon=":material/map:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/cartography.py", title="Cartography", icon=":material/landscape:"),
        st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
        st.Page("pages/model.py", title="Model", icon=":material/memory:"),
    ]


def run_app() -> None:
    """The whole of ``app.py``: page config, navigation, and the chosen page (timed)."""
    st.set_page_config(page_title="Latent Explorer", page_icon=":material/apparel:", layout="wide")
    page = st.navigation(app_pages())
    st.set_page_config(page_title=f"{page.title} · Latent Explorer")
    _RUN.inside = True
    try:
        with timing.measure(page.title):
            page.run()
    finally:
        _RUN.inside = False


def require_app() -> None:
    """First call of every page: reroute a run that did not start in ``app.py`` (see the module doc)."""
    if not getattr(_RUN, "inside", False):
        st.navigation(app_pages())
        st.rerun()
