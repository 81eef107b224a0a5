"""Plotly figures, one module per area: pure functions from arrays to ``go.Figure`` (no streamlit, no maths).

* :mod:`ui.figures.map`: the class-coloured map of the catalog (Atlas, and the Cartography page's map
  cartogram), and the query's marker on every figure;
* :mod:`ui.figures.cartography`: the magnification heatmap of a slice and the two cartograms;
* :mod:`ui.figures.compare`: the agreement heatmaps and the distance-against-likelihood scatter;
* :mod:`ui.figures.learn`: the figures of the Learn page's steps.

The numbers come from :mod:`latent`; these modules only draw them. Importing the package imports none of
them (each page imports the module it draws with).
"""
