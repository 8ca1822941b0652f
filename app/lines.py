"""Small line charts for the Swap page's probe and morph: they only arrange numbers core/ computed."""
from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.colors import qualitative

__all__ = ["Line", "line_figure"]


@dataclass
class Line:
    name: str
    x: list[float]
    y: list[float]
    colour: int = 0  # index into the palette: lines of one stage share a colour
    dashed: bool = False


def line_figure(lines: list[Line], *, title: str, x_title: str, y_title: str, height: int = 280,
                y_range: tuple[float, float] | None = None, marker_x: float | None = None) -> go.Figure:
    """Lines with markers; `marker_x` draws a vertical rule (e.g. the chosen shift or t)."""
    palette = qualitative.D3
    data = [dict(type="scatter", x=line.x, y=line.y, name=line.name, mode="lines+markers",
                 line=dict(color=palette[line.colour % len(palette)], dash="dot" if line.dashed else "solid"),
                 marker=dict(size=5), hovertemplate="%{x}: %{y:.3f}<extra>" + line.name + "</extra>")
            for line in lines]
    layout = dict(height=height, margin=dict(l=48, r=8, t=34, b=40), title=dict(text=title, font=dict(size=14)),
                  xaxis=dict(title=x_title), yaxis=dict(title=y_title), legend=dict(font=dict(size=11)),
                  plot_bgcolor="white", paper_bgcolor="white")
    if y_range is not None:
        layout["yaxis"]["range"] = list(y_range)
    if marker_x is not None:
        layout["shapes"] = [dict(type="line", x0=marker_x, x1=marker_x, yref="paper", y0=0, y1=1,
                                 line=dict(color="#888", width=1, dash="dash"))]
    layout["xaxis"].update(gridcolor="#eee")
    layout["yaxis"].update(gridcolor="#eee")
    return go.Figure(data=data, layout=layout)
