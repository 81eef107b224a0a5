"""Plotly figures for the Learn page's steps: pure functions from arrays to ``go.Figure`` (no streamlit, no maths).

The numbers come from :mod:`latent.teaching`, :mod:`latent.uncertainty` and :mod:`latent.interpolation`;
these functions only draw them. Traces carry ``meta`` dicts (e.g. ``{"item": 12, "r": 1.0}``) so that tests
and exported HTML can tell what each trace shows. ``font`` is the base font size (larger when presenting).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from latent.data import CLASS_NAMES
from latent.uncertainty import mass_label
from ui.figures.map import class_traces, query_marker
from ui.palette import QUERY_COLOUR

#: Paul Tol's "bright" scheme, cycled over the top matches on the uncertainty map.
ITEM_COLOURS = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")
FONT_FAMILY = '"Source Sans Pro", "Source Sans 3", sans-serif'  # Streamlit's own
ACTIVE = "#0072B2"
INACTIVE = "#BBBBBB"
QUERY = QUERY_COLOUR
ITEM_A = "#0072B2"
ITEM_B = "#D55E00"
PRIOR = "#222222"


def _layout(fig: go.Figure, font: int, height: int, **kwargs) -> go.Figure:
    kwargs.setdefault("margin", dict(l=10, r=10, t=50, b=10))
    fig.update_layout(height=height, font=dict(size=font, family=FONT_FAMILY), template="plotly_white", **kwargs)
    return fig


def posterior_bars(mu: np.ndarray, sigma: np.ndarray, active: Sequence[bool], font: int = 13) -> go.Figure:
    """The posterior per dimension: a bar at mu_j with an error bar of +-sigma_j; unused dimensions in grey.

    Args:
        mu, sigma: (d,) one item's posterior.
        active: (d,) whether the model uses each dimension.
    """
    d = len(mu)
    names = [f"z{j}" for j in range(d)]
    fig = go.Figure(go.Bar(
        x=names, y=np.asarray(mu, np.float64), name="μ ± σ", meta={"what": "posterior"},
        marker_color=[ACTIVE if a else INACTIVE for a in active],
        error_y=dict(type="data", array=np.asarray(sigma, np.float64), visible=True, thickness=2.5, width=8,
                     color=PRIOR),
        hovertemplate="%{x}: μ = %{y:.3f}, σ = %{error_y.array:.3f}<extra></extra>"))
    fig.add_hrect(y0=-1, y1=1, fillcolor="#999999", opacity=0.12, line_width=0,
                  annotation_text="prior N(0, 1): ±1", annotation_position="top right")
    return _layout(fig, font, 380, title="Posterior q(z|x): bar μⱼ, error bar ±σⱼ (grey: unused)",
                   yaxis_title="latent value", showlegend=False)


@dataclass(frozen=True)
class Curve1D:
    """One item's posterior in one dimension, for :func:`two_gaussians`."""

    label: str
    mu: float
    sigma: float
    log_density_at_z: float
    colour: str


def two_gaussians(z: float, grid: np.ndarray, curves: Sequence[tuple[Curve1D, np.ndarray]], dim: int,
                  font: int = 13) -> go.Figure:
    """1-D posteriors in dimension ``dim`` (density curves on ``grid``), the query z_dim, and each density at z.

    Args:
        z: the query's value in this dimension.
        grid: (G,) x values; curves: (curve, density (G,)) pairs.
    """
    fig = go.Figure()
    for curve, density in curves:
        fig.add_trace(go.Scatter(x=grid, y=density, mode="lines", name=curve.label,
                                 line=dict(color=curve.colour, width=4),
                                 fill="tozeroy", opacity=0.35, meta={"mu": curve.mu, "sigma": curve.sigma}))
        height = float(np.exp(curve.log_density_at_z))
        fig.add_trace(go.Scatter(
            x=[z], y=[height], mode="markers",
            marker=dict(size=16, color=curve.colour, line=dict(width=2, color="white")),
            showlegend=False, meta={"mu": curve.mu, "at_z": True},
            hovertemplate=f"log N(z; μ, σ²) = {curve.log_density_at_z:.3f}<extra></extra>"))
    for k, (curve, _) in enumerate(curves):
        fig.add_annotation(xref="paper", yref="paper", x=0.99, y=0.97 - 0.1 * k, xanchor="right", showarrow=False,
                           text=f"log N at z: {curve.log_density_at_z:.2f}",
                           font=dict(size=font + 2, color=curve.colour))
    fig.add_vline(x=z, line=dict(color=QUERY, width=4, dash="dash"), annotation_text=f"query z{dim} = {z:.2f}",
                  annotation_position="top left")
    return _layout(fig, font, 400, title=f"Dimension z{dim}: a narrow and a broad posterior, and the query",
                   xaxis_title=f"z{dim}", yaxis_title="density",
                   legend=dict(orientation="h", y=-0.2))


def overlap_chart(spreads: np.ndarray, overlap: np.ndarray, k: int, current: float | None,
                  font: int = 13) -> go.Figure:
    """Top-k overlap of the KL and likelihood rankings against the query spread s (log axis, s falling to the right)."""
    fig = go.Figure(go.Scatter(x=np.asarray(spreads, np.float64), y=np.asarray(overlap, np.float64),
                               mode="lines+markers", line=dict(color=ACTIVE, width=4), marker=dict(size=10),
                               name="overlap", meta={"what": "overlap"},
                               hovertemplate="s = %{x:.3g}: %{y:.0%} shared<extra></extra>"))
    if current is not None:
        fig.add_vline(x=current, line=dict(color=QUERY, width=3, dash="dash"), annotation_text=f"s = {current:g}")
    return _layout(fig, font, 360, title=f"Top-{k} by KL ∩ top-{k} by log q(z|x)",
                   xaxis=dict(title="query spread s (shrinking →)", type="log", autorange="reversed"),
                   yaxis=dict(title="overlap", tickformat=".0%", range=[-0.03, 1.05]), showlegend=False)


def prior_panels(edges: np.ndarray, density: np.ndarray, grid: np.ndarray, aggregate: np.ndarray,
                 prior: np.ndarray, kl: np.ndarray, active: Sequence[bool], font: int = 13) -> go.Figure:
    """Small multiples, one per dimension: histogram of mu_j, the aggregate posterior and the prior N(0, 1).

    Args:
        edges: (B + 1,) bin edges; density: (d, B) histogram densities.
        grid: (G,) x values; aggregate: (d, G) aggregate posterior densities; prior: (G,) prior density.
        kl: (d,) mean KL to the prior per dimension (nats); active: (d,) flags.
    """
    d = len(density)
    cols = 5
    rows = int(np.ceil(d / cols))
    titles = [f"z{j} · KL {kl[j]:.2f}{'' if active[j] else ' · unused'}" for j in range(d)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.16)
    # One y range for all panels that fits the prior and every aggregate; an unused dimension's histogram (all
    # means near 0) is a spike that runs off the top, which is the point.
    top = 1.15 * float(max(np.max(prior), np.max(aggregate)))
    centres = 0.5 * (edges[:-1] + edges[1:])
    width = float(edges[1] - edges[0])
    for j in range(d):
        r, c = j // cols + 1, j % cols + 1
        first = j == 0
        fig.add_trace(go.Bar(x=centres, y=density[j], width=width, marker_color=ACTIVE if active[j] else INACTIVE,
                             opacity=0.6, name="histogram of μ", legendgroup="hist", showlegend=first,
                             meta={"dim": j, "what": "histogram"}), row=r, col=c)
        fig.add_trace(go.Scatter(x=grid, y=aggregate[j], mode="lines", line=dict(color=ITEM_B, width=2.5),
                                 name="aggregate posterior", legendgroup="agg", showlegend=first,
                                 meta={"dim": j, "what": "aggregate"}), row=r, col=c)
        fig.add_trace(go.Scatter(x=grid, y=prior, mode="lines", line=dict(color=PRIOR, width=2, dash="dot"),
                                 name="prior N(0, 1)", legendgroup="prior", showlegend=first,
                                 meta={"dim": j, "what": "prior"}), row=r, col=c)
    fig.update_annotations(font_size=font)
    fig.update_xaxes(range=[float(edges[0]), float(edges[-1])])
    fig.update_yaxes(range=[0.0, top])
    return _layout(fig, font, 300 * rows + 80, bargap=0, legend=dict(orientation="h", y=-0.12),
                   margin=dict(l=10, r=10, t=40, b=10))


@dataclass(frozen=True)
class Ellipse:
    """One contour to draw: ``points`` (n, 2) of item ``item`` at ``r`` sigmas."""

    item: int
    label: int
    r: float
    points: np.ndarray
    centre: np.ndarray
    sigma: np.ndarray


def uncertainty_map(dims: tuple[int, int], background: np.ndarray, background_labels: np.ndarray,
                    ellipses: Sequence[Ellipse], z: np.ndarray, covering: np.ndarray | None = None,
                    level: float | None = None, font: int = 13, height: int = 640) -> go.Figure:
    """Two latent dimensions at their true scale: catalog means, the top matches' posterior ellipses, the query.

    Args:
        dims: the two dimensions (i, j) on the x and y axes.
        background: (M, 2) a sample of catalog means in those dimensions; background_labels: (M,) classes.
        ellipses: contours to draw (1- and 2-sigma of each top match), labelled with their 2-D mass.
        z: (2,) the query in those dimensions.
        covering: (C, 2) means of the items whose posterior covers z (drawn when given).
        level: the coverage level, for the legend.
    """
    i, j = dims
    fig = go.Figure()
    fig.add_traces(class_traces(background, background_labels, size=5, opacity=0.45,
                                legend="catalog means (colour: class)", meta={"what": "background"}))
    if covering is not None:
        fig.add_trace(go.Scattergl(
            x=covering[:, 0], y=covering[:, 1], mode="markers", name=f"posterior covers z ({level:.0%})",
            marker=dict(size=7, symbol="circle-open", color="#000000", line=dict(width=1.5)),
            meta={"what": "covering"}, hoverinfo="skip"))
    order = list(dict.fromkeys(e.item for e in ellipses))  # items in rank order
    colour = {item: ITEM_COLOURS[n % len(ITEM_COLOURS)] for n, item in enumerate(order)}
    for e in ellipses:
        outer = e.r > 1
        fig.add_trace(go.Scatter(
            x=e.points[:, 0], y=e.points[:, 1], mode="lines",
            name=f"#{e.item} {CLASS_NAMES[e.label]} · {mass_label(e.r)}",
            line=dict(color=colour[e.item], width=2 if outer else 3.5, dash="dash" if outer else "solid"),
            legendgroup=f"item{e.item}", showlegend=False,
            meta={"what": "ellipse", "item": e.item, "r": e.r},
            hovertemplate=f"#{e.item} {CLASS_NAMES[e.label]}: {mass_label(e.r)} of q(z|x) in this view<extra></extra>"))
    if ellipses:
        first = {}
        for e in ellipses:
            first.setdefault(e.item, e)
        for rank, (item, e) in enumerate(first.items(), start=1):
            fig.add_trace(go.Scatter(
                x=[e.centre[0]], y=[e.centre[1]], mode="markers", name=f"{rank}. #{item} {CLASS_NAMES[e.label]}",
                legendgroup=f"item{item}",
                marker=dict(size=11, color=colour[item], line=dict(width=1.5, color="white")),
                meta={"what": "centre", "item": item}, hovertemplate=f"μ of #{item}<extra></extra>"))
        # Two legend entries that explain the line styles.
        for r, dash in ((1.0, "solid"), (2.0, "dash")):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color="#444444", dash=dash, width=3),
                                     name=f"{mass_label(r)} of the posterior (2-D)", meta={"what": "legend"}))
    fig.add_trace(go.Scatter(x=[float(z[0])], y=[float(z[1])], mode="markers", name="query z",
                             marker=query_marker(24, 2),
                             meta={"what": "query"}))
    xr, yr = view_ranges(z, ellipses)
    return _layout(fig, font, height, xaxis=dict(title=f"z{i}", zeroline=True, range=xr),
                   yaxis=dict(title=f"z{j}", scaleanchor="x", scaleratio=1, zeroline=True, range=yr),
                   legend=dict(orientation="v", x=1.01, y=1), margin=dict(l=10, r=10, t=20, b=10))


def view_ranges(z: np.ndarray, ellipses: Sequence[Ellipse], margin: float = 1.3,
                minimum: float = 0.25) -> tuple[list[float], list[float]]:
    """Square axis ranges centred on the query that show every ellipse (x ``margin``), at least +-``minimum``."""
    half = minimum
    for e in ellipses:
        half = max(half, float(np.abs(e.points - np.asarray(z, np.float64)).max()) * margin)
    return [float(z[0]) - half, float(z[0]) + half], [float(z[1]) - half, float(z[1]) + half]


def interpolation_animation(frames: np.ndarray, ts: np.ndarray, title: str, font: int = 13,
                            height: int = 460) -> go.Figure:
    """The decoded frames (K, 28, 28) as one image with a play button and a slider over t (K values)."""
    z0 = np.asarray(frames[0], np.float64)
    heat = dict(colorscale="gray", zmin=0.0, zmax=1.0, showscale=False, hovertemplate="%{z:.2f}<extra></extra>")
    fig = go.Figure(go.Heatmap(z=z0, **heat), frames=[
        go.Frame(data=[go.Heatmap(z=np.asarray(f, np.float64), **heat)], name=f"{t:.2f}")
        for f, t in zip(frames, ts, strict=True)])
    steps = [dict(method="animate", label=f"{t:.2f}",
                  args=[[f"{t:.2f}"], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                           transition=dict(duration=0))]) for t in ts]
    fig.update_layout(
        updatemenus=[dict(type="buttons", direction="left", showactive=False, x=1.0, y=1.0, xanchor="right",
                          yanchor="bottom", pad=dict(b=6),
                          buttons=[dict(label="▶ Play", method="animate",
                                        args=[None, dict(frame=dict(duration=350, redraw=True), fromcurrent=True,
                                                         transition=dict(duration=0))]),
                                   dict(label="❚❚ Pause", method="animate",
                                        args=[[None], dict(mode="immediate", frame=dict(duration=0, redraw=False))])])],
        sliders=[dict(active=0, steps=steps, x=0.0, len=1.0, y=0.0, yanchor="top", pad=dict(t=8),
                      currentvalue=dict(prefix="t = ", font=dict(size=font)))],
    )
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", constrain="domain")
    return _layout(fig, font, height, title=title, margin=dict(l=10, r=10, t=60, b=100))
