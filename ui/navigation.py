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

from ui import preload, timing

_RUN = threading.local()  # per script-runner thread: are we inside app.py's navigation?


#: The dashboard's pages in menu order: (script relative to the repository root, title, icon).
PAGES = (
    ("pages/explore.py", "Explore", ":material/tune:"),
    ("pages/atlas.py", "Atlas", ":material/map:"),
    ("pages/compare.py", "Compare", ":material/compare_arrows:"),
    ("pages/cartography.py", "Cartography", ":material/landscape:"),
    ("pages/learn.py", "Learn", ":material/school:"),
    ("pages/model.py", "Model", ":material/memory:"),
)
PAGE_FILES = tuple(file for file, _, _ in PAGES)


def app_pages() -> list:
    """The dashboard's pages as ``st.Page`` objects; the first is the default."""
    return [st.Page(file, title=title, icon=icon, default=i == 0) for i, (file, title, icon) in enumerate(PAGES)]


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
    preload.start(PAGE_FILES)  # after the first page is shown: the other pages' imports


def require_app() -> None:
    """First call of every page: reroute a run that did not start in ``app.py`` (see the module doc)."""
    if not getattr(_RUN, "inside", False):
        st.navigation(app_pages())
        st.rerun()
