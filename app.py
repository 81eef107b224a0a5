"""Latent Explorer: the Streamlit entry point (``streamlit run app.py``).

It only sets up the page and the navigation; each page lives in ``pages/`` and composes calls to
the ``latent`` library with widgets.
"""

import streamlit as st

st.set_page_config(page_title="Latent Explorer", page_icon="👗", layout="wide")

navigation = st.navigation([st.Page("pages/model.py", title="Model", icon=":material/memory:", default=True)])
navigation.run()
