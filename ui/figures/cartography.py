"""Plotly figures for the Cartography page: the magnification heatmap of a slice and the two cartograms.

Points come in slice coordinates (s, t) (:meth:`latent.geometry.LatentSlice.project`, carried through a
cartogram with :func:`latent.cartography.carry` where the figure is one); :class:`SliceAxes` says how the
page labels them. The maths is in :mod:`latent.cartography` and docs/cartography.md.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from latent.render import png_bytes
from ui.figures.map import class_traces, query_marker

if TYPE_CHECKING:
    from latent.cartography import MagnificationMap

STRAIGHT_COLOUR = "#FFFFFF"
GEODESIC_COLOUR = "#FF5A36"
CARTOGRAM_STRAIGHT_COLOUR = "#1F77B4"  # the straight line on the cartogram's dark background and light garments


@dataclass(frozen=True)
class SliceAxes:
    """How slice coordinates are drawn: shifted by ``offset``, over the slice's window, with axis titles.

    Attributes:
        offset: added to (s, t): the query's own coordinates (z0_i, z0_j) on a slice spanned by two latent axes,
            so that the axes read z_i and z_j; (0, 0) otherwise (:func:`latent.cartography.axis_offsets`).
        extent: the slice's window (s_min, s_max, t_min, t_max).
        x_title, y_title: the axis titles.
    """

    offset: tuple[float, float]
    extent: tuple[float, float, float, float]
    x_title: str
    y_title: str

    def shift(self, points: np.ndarray) -> np.ndarray:
        """Slice coordinates (n, 2) as drawn on the axes: (n, 2)."""
        return np.asarray(points, dtype=np.float64).reshape(-1, 2) + np.asarray(self.offset)

    def layout(self, **kwargs) -> dict:
        """The x and y axis layouts: the titles, and the window as the ranges (``kwargs`` go to both)."""
        s_lo, s_hi, t_lo, t_hi = self.extent
        ox, oy = self.offset
        return dict(xaxis=dict(title=self.x_title, range=[s_lo + ox, s_hi + ox], showgrid=False, zeroline=False,
                               **kwargs),
                    yaxis=dict(title=self.y_title, range=[t_lo + oy, t_hi + oy], showgrid=False, zeroline=False,
                               **kwargs))


@dataclass(frozen=True)
class Path:
    """A latent path on the slice: its points (K, 2) in slice coordinates and its decoded length."""

    points: np.ndarray
    length: float


def _line(points: np.ndarray, name: str, **line) -> go.Scatter:
    return go.Scatter(x=points[:, 0], y=points[:, 1], mode="lines", name=name, line=line, hoverinfo="skip")


def magnification_heatmap(mag: MagnificationMap, axes: SliceAxes, *, neighbours: np.ndarray | None = None,
                          neighbour_items: list[int] | None = None, k: int = 0, straight: Path | None = None,
                          geodesic: Path | None = None, target: np.ndarray | None = None,
                          target_label: str = "") -> go.Figure:
    """log MF_2 over the slice's cells, with the paths, the target, the neighbours and the query (at the origin).

    Args:
        mag: the magnification map ((n_t - 1, n_s - 1) cells).
        neighbours: (n, 2) the top-``k`` likelihood neighbours projected onto the slice; neighbour_items: (n,)
            their item numbers.
        straight, geodesic: the paths to the target; target: (2,) the target projected, ``target_label`` its name.
    """
    x_title, y_title = axes.x_title, axes.y_title
    ox, oy = axes.offset
    fig = go.Figure(go.Heatmap(
        x=mag.s_centres + ox, y=mag.t_centres + oy, z=mag.log_mf, colorscale="Viridis", zsmooth="best",
        colorbar=dict(title=dict(text="log MF₂", side="right"), thickness=14),
        hovertemplate=f"{x_title} %{{x:.2f}}<br>{y_title} %{{y:.2f}}<br>log MF₂ %{{z:.2f}}<extra></extra>"))
    if neighbours is not None and len(neighbours):
        p = axes.shift(neighbours)
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", name=f"top-{k} likelihood (projected)",
                                 marker=dict(size=8, symbol="circle-open", color="#FFFFFF", line=dict(width=1.5)),
                                 customdata=neighbour_items, hovertemplate="#%{customdata} (projected)<extra></extra>"))
    if straight is not None:
        fig.add_trace(_line(axes.shift(straight.points), f"straight line · {straight.length:.2f}",
                            color=STRAIGHT_COLOUR, width=2.5, dash="dash"))
    if geodesic is not None:
        fig.add_trace(_line(axes.shift(geodesic.points), f"geodesic · {geodesic.length:.2f}", color=GEODESIC_COLOUR,
                            width=3.5))
    if target is not None:
        p = axes.shift(target)
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", name=f"target {target_label}",
                                 marker=dict(size=14, symbol="diamond", color=GEODESIC_COLOUR,
                                             line=dict(width=1.5, color="#000000")),
                                 hovertemplate=f"target {target_label}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[ox], y=[oy], mode="markers", name="query z", marker=query_marker(20),
                             hovertemplate="the query z<extra></extra>"))
    fig.update_layout(height=540, margin=dict(l=10, r=10, t=10, b=10), plot_bgcolor="#FFFFFF", showlegend=False,
                      **axes.layout())
    return fig


def _png_uri(image: np.ndarray, scale: int) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, scale=scale)).decode()


def slice_cartogram(grid_x: list[float | None], grid_y: list[float | None], axes: SliceAxes, query: np.ndarray, *,
                    tiles: np.ndarray | None = None, centres: np.ndarray | None = None, sides: np.ndarray | None = None,
                    straight: np.ndarray | None = None, geodesic: np.ndarray | None = None) -> go.Figure:
    """The slice window stretched by MF_2: its deformed grid lines, the garments, the paths and the query.

    Args:
        grid_x, grid_y: the carried grid lines in slice coordinates (:func:`latent.cartography.grid_lines`:
            None between lines).
        query: (1, 2) the query carried.
        tiles: (n, n, 28, 28) decoded garments [t index, s index], each drawn at its carried tile centre
            ``centres`` (n, n, 2) as a square of side ``sides`` (n, n) (:func:`latent.cartography.garment_sizes`).
        straight, geodesic: (K, 2) the two paths carried (NaN where they leave the window).
    """
    ox, oy = axes.offset
    fig = go.Figure(go.Scatter(x=np.array(grid_x, dtype=float) + ox, y=np.array(grid_y, dtype=float) + oy,
                               mode="lines", line=dict(color="#9AA0A6", width=1), name="grid lines", hoverinfo="skip"))
    if tiles is not None:
        fig.update_layout(images=[
            dict(source=_png_uri(tiles[r, c], 3), xref="x", yref="y", x=centres[r, c, 0] + ox, y=centres[r, c, 1] + oy,
                 sizex=sides[r, c], sizey=sides[r, c], xanchor="center", yanchor="middle", sizing="stretch",
                 layer="below")
            for r in range(tiles.shape[0]) for c in range(tiles.shape[1])])
    if straight is not None:
        fig.add_trace(_line(axes.shift(straight), "straight line", color=CARTOGRAM_STRAIGHT_COLOUR, width=2.5,
                            dash="dash"))
    if geodesic is not None:
        fig.add_trace(_line(axes.shift(geodesic), "geodesic", color=GEODESIC_COLOUR, width=3.5))
    p = axes.shift(query)
    fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", name="query z", marker=query_marker(18),
                             hoverinfo="skip"))
    fig.update_layout(height=620, margin=dict(l=10, r=10, t=10, b=10), plot_bgcolor="#111111",
                      legend=dict(orientation="h", y=-0.08, x=0), **axes.layout(constrain="domain"))
    fig.update_layout(yaxis=dict(scaleanchor="x"))
    return fig


def map_cartogram(grid_x: list[float | None], grid_y: list[float | None], moved: np.ndarray, labels: np.ndarray,
                  query: np.ndarray) -> go.Figure:
    """The map of all items stretched by a weight: deformed grid lines, every item by class, the query.

    Args:
        grid_x, grid_y: the carried grid lines (None between lines).
        moved: (N, 2) every item's carried map position; labels: (N,) their classes.
        query: (1, 2) the query's carried map position.
    """
    fig = go.Figure(go.Scattergl(x=grid_x, y=grid_y, mode="lines", line=dict(color="#B0B4B8", width=1),
                                 name="grid lines", hoverinfo="skip"))
    fig.add_traces(class_traces(moved, labels, items=np.arange(len(moved)), opacity=0.6, shapes=False))
    fig.add_trace(go.Scattergl(x=query[:, 0], y=query[:, 1], mode="markers", name="query z",
                               marker=query_marker(20)))
    fig.update_layout(height=640, margin=dict(l=0, r=0, t=10, b=0), legend=dict(orientation="h", y=-0.02),
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
    return fig
