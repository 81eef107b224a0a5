"""Latent Explorer: the library behind the dashboard (data, model, training, catalog, scores, search).

Nothing here imports streamlit, and importing the package does no work.
"""

__version__ = "0.1.0"
