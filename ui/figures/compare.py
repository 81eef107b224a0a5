"""Plotly figures for the Compare page: how much the scores' rankings agree, and why they differ."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

#: The colour of the top-k markers on the distance-likelihood scatter (Okabe-Ito vermilion).
TOP_COLOUR = "#D55E00"


def agreement_heatmap(frame: pd.DataFrame, title: str, zmin: float) -> go.Figure:
    """A square table of agreement between scores (from :func:`latent.rankings.agreement`) as an annotated
    heatmap from ``zmin`` to 1, the first score on top."""
    values = frame.to_numpy()
    fig = go.Figure(go.Heatmap(z=values, x=list(frame.columns), y=list(frame.index), zmin=zmin, zmax=1,
                               colorscale="Cividis", text=np.round(values, 2), texttemplate="%{text}",
                               hovertemplate="%{y} vs %{x}: %{z:.2f}<extra></extra>"))
    fig.update_layout(title=title, height=420, margin=dict(l=10, r=10, t=40, b=10), yaxis_autorange="reversed")
    return fig


def distance_likelihood(euclid: np.ndarray, loglik: np.ndarray, shown: np.ndarray, sigma_mean: np.ndarray,
                        labels: np.ndarray, tops: Sequence[tuple[np.ndarray, str, str]]) -> go.Figure:
    """Each shown item at (Euclidean distance, log-likelihood), coloured by its mean sigma, with the top-k sets.

    Args:
        euclid, loglik: (N,) both scores of every item.
        shown: (m,) the items to draw; sigma_mean, labels: (m,) their mean sigma and class.
        tops: (items, legend name, marker symbol) for each top-k set to ring.
    """
    fig = go.Figure()
    fig.add_trace(go.Scattergl(
        x=euclid[shown], y=loglik[shown], mode="markers", name="items",
        marker=dict(size=5, color=sigma_mean, colorscale="Viridis", colorbar=dict(title="mean sigma"), opacity=0.7),
        customdata=np.stack([shown, labels], 1),
        hovertemplate="#%{customdata[0]}<br>||z - mu|| = %{x:.3f}<br>log q(z|x) = %{y:.2f}<extra></extra>"))
    for items, name, symbol in tops:
        fig.add_trace(go.Scattergl(x=euclid[items], y=loglik[items], mode="markers", name=name,
                                   marker=dict(size=13, symbol=symbol, color=TOP_COLOUR, line=dict(width=2))))
    fig.update_layout(height=480, xaxis_title="Euclidean distance ||z - mu(x)||", yaxis_title="log q(z|x)",
                      margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=1.05))
    return fig
