"""Plotly figures the dashboard draws from arrays the library returned (no computation here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def heatmap(z: np.ndarray, x: Sequence[Any], y: Sequence[Any], title: str, colorbar: str,
            text: np.ndarray | None = None, zmin: float | None = None,
            zmax: float | None = None, colorscale: str = "Viridis", x_title: str = "",
            y_title: str = "", clickable: bool = False, height: int | None = None):
    """A heatmap of z [len(y), len(x)]; `text` is written in the cells; `clickable` overlays an
    invisible marker per cell so that clicking one selects it (heatmaps emit no selections)."""
    import plotly.graph_objects as go

    z = np.asarray(z, dtype=float)
    fig = go.Figure(go.Heatmap(z=np.where(np.isfinite(z), z, None), x=list(x), y=list(y),
                               colorscale=colorscale, zmin=zmin, zmax=zmax,
                               colorbar={"title": colorbar},
                               text=None if text is None else np.asarray(text).tolist(),
                               texttemplate="%{text}" if text is not None else None,
                               hovertemplate="%{y} | %{x}<br>%{z:.3g}<extra></extra>"))
    if clickable:
        xs, ys = np.meshgrid(np.arange(len(x)), np.arange(len(y)))
        fig.add_trace(go.Scatter(x=[list(x)[i] for i in xs.ravel()],
                                 y=[list(y)[j] for j in ys.ravel()], mode="markers",
                                 marker={"size": 18, "opacity": 0.01}, showlegend=False,
                                 hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title,
                      template="plotly_white", height=height or max(320, 28 * len(y) + 140))
    return fig


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str,
          x_title: str, y_title: str, y_range: tuple[float, float] | None = None):
    """One line per named (x, y) series."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=list(x), y=[float(v) for v in y], mode="lines+markers",
                                name=name) for name, (x, y) in series.items()])
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title,
                      template="plotly_white", height=340,
                      yaxis={"range": list(y_range)} if y_range else {})
    return fig
