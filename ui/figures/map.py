"""The class-coloured map of the catalog, and the query's marker, drawn the same way on every page.

:func:`class_traces` is the one scatter of catalog points coloured (and shaped) by class: the Atlas draws
it over the UMAP embedding, the Cartography page over the stretched map, the Learn page's uncertainty map
over two latent dimensions. :func:`atlas_map` is the Atlas's whole figure.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from latent.data import CLASS_NAMES
from ui.palette import CLASS_COLOURS, CLASS_SYMBOLS, QUERY_COLOUR


def class_traces(xy: np.ndarray, labels: np.ndarray, *, items: np.ndarray | None = None, size: float = 3,
                 opacity: float = 0.55, shapes: bool = True, legend: str | None = None,
                 meta: dict | None = None) -> list[go.Scattergl]:
    """One WebGL scatter trace per class, in class order, of the points ``xy`` (N, 2) with ``labels`` (N,).

    Args:
        items: (N,) the item number of each point: the traces' ``customdata`` (what a click selects) and
            their hover text; None draws the points without item numbers.
        size, opacity: the markers'; shapes: each class also has its own marker shape (colour is not alone).
        legend: one legend entry with this name for all classes; None gives each class its own entry.
        meta: merged into each trace's ``meta`` (which also holds ``"class"``), for tests and exports.
    """
    xy = np.asarray(xy)
    labels = np.asarray(labels)
    traces = []
    for c, name in enumerate(CLASS_NAMES):
        members = np.flatnonzero(labels == c)
        marker = dict(size=size, color=CLASS_COLOURS[c], opacity=opacity)
        if shapes:
            marker["symbol"] = CLASS_SYMBOLS[c]
        kwargs: dict = dict(name=name) if legend is None else dict(name=legend, showlegend=c == 0,
                                                                   legendgroup="classes")
        if items is None:
            kwargs["hovertemplate"] = f"{name}<extra></extra>"
        else:
            kwargs["customdata"] = np.asarray(items)[members]
            kwargs["hovertemplate"] = f"{name} #%{{customdata}}<extra></extra>"
        traces.append(go.Scattergl(x=xy[members, 0], y=xy[members, 1], mode="markers", marker=marker,
                                   meta={**(meta or {}), "class": c}, **kwargs))
    return traces


def query_marker(size: float, line: float = 1.5) -> dict:
    """The query's marker (an orange star with a black rim) as a plotly ``marker`` dict."""
    return dict(size=size, symbol="star", color=QUERY_COLOUR, line=dict(width=line, color="#000000"))


def atlas_map(embedding: np.ndarray, labels: np.ndarray, neighbours: np.ndarray, where: np.ndarray,
              label: str, height: int, font: int) -> go.Figure:
    """The Atlas: every item on the map by class, rings on the query's neighbours, and the query as a star.

    Args:
        embedding: (N, 2) map positions of all items; labels: (N,) their classes.
        neighbours: (k,) item numbers to ring; label: their legend entry (e.g. "top-8 (likelihood)").
        where: (2,) the query's map position.
        height, font: the figure's height in pixels and base font size.
    """
    fig = go.Figure(class_traces(embedding, labels, items=np.arange(len(embedding))))
    fig.add_trace(go.Scattergl(
        x=embedding[neighbours, 0], y=embedding[neighbours, 1], mode="markers", name=label,
        marker=dict(size=13, symbol="circle-open", color="#000000", line=dict(width=2)),
        customdata=neighbours, hovertemplate="neighbour #%{customdata}<extra></extra>"))
    fig.add_trace(go.Scattergl(x=[where[0]], y=[where[1]], mode="markers", name="query z",
                               marker=query_marker(22, 2), hovertemplate="the query z<extra></extra>"))
    fig.update_layout(
        height=height, margin=dict(l=0, r=0, t=10, b=0), dragmode="pan", uirevision="atlas", font=dict(size=font),
        legend=dict(itemsizing="constant", orientation="h", y=-0.02), clickmode="event+select",
        xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
    return fig
