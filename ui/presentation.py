"""Presentation mode: no controls, large pictures and readable fonts, for an audience watching one screen.

The mode is the URL key ``present=1`` (:data:`ui.state.PRESENTATION_FIELDS`), so a link opens a view
straight in presentation mode and every view stays shareable. Each page calls :func:`setup` once, right
after ``state.sync_widgets``; it draws the switch at the top of the sidebar, or, when presenting, hides
the sidebar and the header, enlarges the fonts and offers a small "Exit presentation" button. Pages then
draw their own controls only when :func:`presenting` is False, and size their pictures with :func:`size`.
"""

from __future__ import annotations

import streamlit as st

from ui import state

#: Set by the exit button, so that the next run opens the sidebar again.
_EXITED = "present_exited"

#: Projector styling: the sidebar, its toggle and the header are hidden, the page uses the full width and
#: text is larger. Scoped by Streamlit's test ids, so it only touches the app's own chrome.
CSS = """
<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stExpandSidebarButton"],
[data-testid="stHeader"], [data-testid="stToolbar"], [data-testid="stDecoration"] { display: none !important; }
[data-testid="stMainBlockContainer"] { padding: 1.25rem 2.5rem 2rem 2.5rem; max-width: 100%; }
[data-testid="stMain"] [data-testid="stMarkdownContainer"] p,
[data-testid="stMain"] [data-testid="stMarkdownContainer"] li { font-size: 1.45rem; line-height: 1.45; }
[data-testid="stMain"] [data-testid="stCaptionContainer"] p,
[data-testid="stMain"] [data-testid="stImageCaption"] { font-size: 1.15rem; }
[data-testid="stMain"] h1 { font-size: 2.9rem; padding-top: 0; }
[data-testid="stMain"] h2 { font-size: 2.3rem; }
[data-testid="stMain"] h3, [data-testid="stMain"] h4 { font-size: 1.8rem; }
[data-testid="stMain"] .katex { font-size: 1.55em; }
[data-testid="stMain"] [data-testid="stMetricValue"],
[data-testid="stMain"] [data-testid="stMetricValue"] * { font-size: 2.6rem !important; line-height: 1.2; }
</style>
"""


def presenting() -> bool:
    """True when the session's query has ``present=1``."""
    return bool(state.extra(state.PRESENT))


def set_presenting(on: bool) -> None:
    """Switch presentation mode (a callback: the URL follows at the end of the run)."""
    state.set_extra(state.PRESENT, bool(on))
    if not on:
        st.session_state[_EXITED] = True


def _from_toggle() -> None:
    set_presenting(bool(st.session_state[state.W_PRESENT]))


def setup() -> bool:
    """Draw the switch (normal mode) or apply the projector layout (presentation mode); returns presenting.

    Call once per page, after ``state.sync_widgets`` and before the page draws anything else.
    """
    if presenting():
        st.set_page_config(initial_sidebar_state="collapsed")
        st.html(CSS)
        _, right = st.columns([6, 1])
        right.button("Exit presentation", icon=":material/close_fullscreen:", key="btn_present_exit", type="tertiary",
                     on_click=set_presenting, args=(False,),
                     help="Show the controls again (drops present=1 from the link)")
        return True
    if st.session_state.pop(_EXITED, False):
        st.set_page_config(initial_sidebar_state="expanded")
    st.session_state[state.W_PRESENT] = False
    st.sidebar.toggle("Presentation mode", key=state.W_PRESENT, on_change=_from_toggle,
                      help="Hide the controls and enlarge the pictures for a projector. The link keeps it "
                           "(present=1), so a prepared view can be opened straight in this mode.")
    return False


def size(normal: int, large: int) -> int:
    """A picture's width in pixels: ``large`` when presenting, else ``normal``."""
    return large if presenting() else normal


def font_size() -> int:
    """The base font size for plotly figures: larger when presenting."""
    return 20 if presenting() else 13
