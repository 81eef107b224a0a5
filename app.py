"""Latent Explorer: the Streamlit entry point (``streamlit run app.py``).

It only sets up the page and the navigation; each page lives in ``pages/`` and composes calls to
the ``latent`` library with widgets (shared Streamlit glue lives in ``ui/``).
"""

import streamlit as st

st.set_page_config(page_title="Latent Explorer", page_icon=":material/apparel:", layout="wide")

PAGES = [
    st.Page("pages/explore.py", title="Explore", icon=":material/tune:", default=True),
    st.Page("pages/atlas.py", title="Atlas", icon=":material/map:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/model.py", title="Model", icon=":material/memory:"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
]
st.navigation(PAGES).run()
