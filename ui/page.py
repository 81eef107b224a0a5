"""The start of every query page: routing, shared resources, the session's query, presentation mode."""

from __future__ import annotations

from typing import Any, NamedTuple

from ui import presentation, state
from ui.navigation import require_app
from ui.resources import Resources, get_index, get_resources, prepare_spread


class PageStart(NamedTuple):
    res: Resources
    index: Any  # latent.search.SearchIndex
    presenting: bool


def start_page() -> PageStart:
    """Route through app.py, load the cached resources, read the query (URL on a first run), show
    what was wrong with the link, seed the widgets from the query, and set up presentation mode.
    Call it first on every page that uses the query, before any widget."""
    require_app()
    res = get_resources()
    index = get_index(res)
    state.init_session_state(res)
    state.show_url_warnings()
    state.sync_widgets(res)
    prepare_spread(index, state.query().s)
    return PageStart(res, index, presentation.setup())
