"""Latent Explorer: the Streamlit entry point (``streamlit run app.py``).

It only sets up the page and the navigation (``ui/navigation.py``); each page lives in ``pages/``
and composes calls to the ``latent`` library with widgets (Streamlit glue shared by pages is in
``ui/``).
"""

from ui.navigation import run_app

run_app()
