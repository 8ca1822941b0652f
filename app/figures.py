"""Plotly figures (and static tables) for the pages. They only arrange what core/ computed; no model math here.

Panels are laid out by hand (axis domains) rather than with make_subplots, which costs tens of milliseconds
per figure; a mosaic of C channels is one heatmap trace, never C subplots.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go

from core.analysis import Mosaic

__all__ = ["Panel", "panel_figure", "gray_panel", "rgb_panel", "mosaic_panel", "where_panel", "signed_panel",
           "channel_targets", "scale_strip", "probability_bars_html", "tile_outline", "HIGHLIGHT", "swap_matrix_figure", "MSE_SCALE", "emphasised", "static_table", "GRAY", "SIGNED"]

GRAY = [[0.0, "black"], [1.0, "white"]]
HIGHLIGHT = "#00d5ff"  # the chosen tile or window, outlined
SIGNED = "RdBu_r"  # blue negative, white 0, red positive
# Errors: white at 0 darkening to deep blue (ColorBrewer Blues): lightness falls monotonically as the error grows, so
# the best cells are the lightest and the worst the darkest.
MSE_SCALE = [[0.0, "#f7fbff"], [0.125, "#deebf7"], [0.25, "#c6dbef"], [0.375, "#9ecae1"], [0.5, "#6baed6"],
             [0.625, "#4292c6"], [0.75, "#2171b5"], [0.875, "#08519c"], [1.0, "#08306b"]]
_IMAGE_HOVER = "x %{x}, y %{y}<br>%{z:.3f}<extra></extra>"


@dataclass
class Panel:
    title: str
    traces: list[dict] = field(default_factory=list)  # plotly trace dicts, without axis references


def gray_panel(title: str, image: np.ndarray, coloraxis: str = "coloraxis") -> Panel:
    """An (H, W) image in [0, 1] (RGB (H, W, 3) goes to rgb_panel)."""
    if image.ndim == 3:
        return rgb_panel(title, image)
    return Panel(title, [dict(type="heatmap", z=image, coloraxis=coloraxis, hovertemplate=_IMAGE_HOVER)])


def rgb_panel(title: str, image: np.ndarray, customdata: np.ndarray | None = None, hovertemplate: str | None = None
              ) -> Panel:
    """(H, W, 3) float in [0, 1] drawn as pixels; NaN becomes white."""
    pixels = (np.clip(np.nan_to_num(image, nan=1.0), 0, 1) * 255).round().astype(np.uint8)
    trace = dict(type="image", z=pixels, hovertemplate=hovertemplate or "x %{x}, y %{y}<extra></extra>")
    if customdata is not None:
        trace["customdata"] = customdata
    return Panel(title, [trace])


def signed_panel(title: str, values: np.ndarray, coloraxis: str = "coloraxis2", background: np.ndarray | None = None,
                 opacity: float = 1.0) -> Panel:
    """A signed (H, W) map on a diverging scale, optionally over a grayscale image (attribution overlays)."""
    traces = []
    if background is not None:
        traces.append(dict(type="heatmap", z=background, colorscale=GRAY, zmin=0, zmax=1, showscale=False,
                           hoverinfo="skip"))
    traces.append(dict(type="heatmap", z=values, coloraxis=coloraxis, opacity=opacity,
                       hovertemplate="x %{x}, y %{y}<br>%{z:.3g}<extra></extra>"))
    return Panel(title, traces)


def mosaic_panel(title: str, layout: Mosaic, coloraxis: str = "coloraxis") -> Panel:
    """Channels tiled in one heatmap; hover names the channel and the position inside it."""
    tops = (layout.channel // layout.columns) * (layout.tile[0] + layout.pad)
    lefts = (layout.channel % layout.columns) * (layout.tile[1] + layout.pad)
    rows, cols = np.indices(layout.channel.shape)
    custom = np.stack([layout.channel, rows - tops, cols - lefts], axis=-1).astype(np.int16)  # (R, W, 3)
    return Panel(title, [dict(type="heatmap", z=layout.image, coloraxis=coloraxis, customdata=custom,
                              hovertemplate="channel %{customdata[0]}, (%{customdata[1]}, %{customdata[2]})"
                                            "<br>%{z:.3f}<extra></extra>")])


def where_panel(title: str, colors: Mosaic, custom: np.ndarray) -> Panel:
    """Where mosaic (RGB by position in the window) with hover (channel, cell, switch offset, what value)."""
    return rgb_panel(title, colors.image, custom,
                     "channel %{customdata[0]:.0f}, cell (%{customdata[1]:.0f}, %{customdata[2]:.0f})<br>"
                     "switch at (%{customdata[3]:.2f}, %{customdata[4]:.2f}) in the window<br>"
                     "what %{customdata[5]:.3f}<extra></extra>")


def channel_targets(panel: Panel, targets: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Panel:
    """`panel` with an invisible marker at the centre of each channel's tile, so a click on the tile selects it.

    Streamlit's selection events do not report clicks on heatmaps (streamlit/streamlit#8760), but they do on
    scatter points: the marker's customdata is its channel. targets: (x, y, peak) per channel from
    core.analysis.tile_targets. The markers are small on purpose: Plotly gives every marker under the cursor the same
    hover distance (the first one wins), but outside them the nearest centre wins, which is the tile under the
    cursor; a marker within hoverdistance (20 px) of the cursor beats the heatmap, so tiles up to ~40 px work.
    """
    x, y, peaks = targets
    marker = dict(size=4, color="rgba(0,0,0,0)", line=dict(width=0), maxdisplayed=1)  # see TARGET_NOTE
    trace = dict(type="scatter", mode="markers", x=x, y=y, customdata=np.arange(len(x)), text=peaks,
                 marker=marker, selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
                 hovertemplate="channel %{customdata}, largest %{text:.3f}<br>click: open this unit<extra></extra>",
                 showlegend=False)
    return Panel(panel.title, panel.traces + [trace])


# TARGET_NOTE: invisible click targets set `marker.maxdisplayed=1`: Plotly then draws one of them, but hovers and
# click-selects every point (both work on the data, not on the drawn marks). Drawing and styling a mark per target
# cost the browser more than the rest of the figure (196 marks: 52 ms a redraw; with maxdisplayed: 22 ms).
STRIP_AXIS = "99"  # the axis suffix a scale strip takes (panel figures number theirs from 1)
STRIP_ROOM = 0.93  # panel_figure: the paper width its panels keep when it draws a colour bar at the right


def scale_strip(figure: go.Figure, *, colorscale, low: float, high: float, title: str, x: list[float],
                y: list[float], vertical: bool = True) -> go.Figure:
    """Add a colour bar drawn as a thin heatmap on its own axes at paper domain `x` by `y`, ticks on its right
    (`vertical`) or below it. It reads like Plotly's colour bar, which costs a browser several times a figure's
    redraw (Plotly lays the figure out again to make room for it); the traces it explains take `showscale=False`
    or a colour axis with `showscale=False` and the same `colorscale`, `low` and `high`."""
    values = np.linspace(low, high, 64)
    trace = dict(type="heatmap", z=values[:, None] if vertical else values[None, :], colorscale=colorscale,
                 zmin=low, zmax=high, showscale=False, hoverinfo="skip", xaxis=f"x{STRIP_AXIS}",
                 yaxis=f"y{STRIP_AXIS}")
    trace.update(dict(y=values, x=[0]) if vertical else dict(x=values, y=[0]))
    ticks = dict(showgrid=False, zeroline=False, ticks="outside", ticklen=3, tickfont=dict(size=10), fixedrange=True,
                 showline=False, title=dict(text=title, font=dict(size=11)), nticks=6)
    hidden = dict(visible=False, fixedrange=True)
    value_axis, other_axis = ("yaxis", "xaxis") if vertical else ("xaxis", "yaxis")
    figure.add_trace(trace)
    figure.update_layout({
        f"{value_axis}{STRIP_AXIS}": dict(domain=y if vertical else x, anchor=f"{other_axis[0]}{STRIP_AXIS}",
                                          side="right" if vertical else "bottom", **ticks),
        f"{other_axis}{STRIP_AXIS}": dict(domain=x if vertical else y, anchor=f"{value_axis[0]}{STRIP_AXIS}",
                                          **hidden)})
    return figure


def tile_outline(layout: Mosaic, channel: int | None) -> dict | None:
    """A rectangle around `channel`'s tile of a mosaic drawn in the first panel (None: no channel chosen)."""
    if channel is None or not 0 <= channel < layout.channel.max() + 1:
        return None
    top, left = layout.origin(channel)
    return dict(type="rect", xref="x", yref="y", x0=left - 1, x1=left + layout.tile[1], y0=top - 1,
                y1=top + layout.tile[0], line=dict(color=HIGHLIGHT, width=3))


def panel_figure(panels: list[Panel], columns: int, *, height: int, coloraxes: dict[str, dict] | None = None,
                 gap: float = 0.025, clickable: bool = False, outline: dict | None = None) -> go.Figure:
    """Panels on a grid, each with square pixels and its title above; shared colour axes, at most one with a colour
    bar (drawn by `scale_strip`: cheap for the browser).

    `clickable`: a click selects the point under it (Plotly's clickmode 'event+select'), for st.plotly_chart's
    on_select; zooming by dragging stays. `outline`: a shape (e.g. `tile_outline`) drawn over the panels."""
    rows = math.ceil(len(panels) / columns)
    title_space = 30 / height  # paper fraction kept above each row for its titles
    layout: dict = dict(height=height, margin=dict(l=8, r=8, t=8, b=8), plot_bgcolor="white",
                        paper_bgcolor="white", hovermode="closest", showlegend=False, annotations=[])
    if clickable:
        layout["clickmode"] = "event+select"
    data = []
    for index, panel in enumerate(panels):
        row, col = divmod(index, columns)
        suffix = "" if index == 0 else str(index + 1)
        x0, x1 = col / columns + gap / 2, (col + 1) / columns - gap / 2
        y1 = 1 - row / rows - title_space
        y0 = 1 - (row + 1) / rows + gap / 2
        layout[f"xaxis{suffix}"] = dict(domain=[x0, x1], anchor=f"y{suffix}", visible=False, constrain="domain")
        layout[f"yaxis{suffix}"] = dict(domain=[y0, y1], anchor=f"x{suffix}", visible=False, autorange="reversed",
                                        scaleanchor=f"x{suffix}", constrain="domain")
        layout["annotations"].append(dict(text=panel.title, x=(x0 + x1) / 2, y=y1, xref="paper", yref="paper",
                                          xanchor="center", yanchor="bottom", showarrow=False, font=dict(size=13)))
        for trace in panel.traces:
            data.append({**trace, "xaxis": f"x{suffix}", "yaxis": f"y{suffix}"})
    strips = [name for name, axis in (coloraxes or {}).items() if axis.get("showscale", True)]
    if len(strips) > 1:
        raise ValueError(f"panel_figure draws one colour bar; {strips} ask for one each")
    if strips:  # the panels make room on the right for the colour bar, drawn as a strip (scale_strip)
        for name in layout:
            if name.startswith("xaxis"):
                layout[name]["domain"] = [x * STRIP_ROOM for x in layout[name]["domain"]]
        for annotation in layout["annotations"]:
            annotation["x"] *= STRIP_ROOM
        layout["margin"]["r"] = 40
    for name, axis in (coloraxes or {}).items():
        layout[name] = {key: value for key, value in axis.items() if key != "colorbar"} | {"showscale": False}
    if outline is not None:
        layout["shapes"] = [outline]
    figure = go.Figure(data=data, layout=layout)
    for name in strips:
        axis = coloraxes[name]
        title = axis.get("colorbar", {}).get("title", "")
        scale_strip(figure, colorscale=axis["colorscale"], low=axis["cmin"], high=axis["cmax"],
                    title=title.get("text", "") if isinstance(title, dict) else title,
                    x=[STRIP_ROOM + 0.02, STRIP_ROOM + 0.035], y=[0.1, 0.9 - 30 / height])
    return figure


PROBABILITY_BAR_COLORS = ("#4c78a8", "#d62728")  # other classes, the predicted class


def probability_bars_html(names: list[str], probabilities: list[float], highlight: int) -> str:
    """Class probabilities as a small horizontal bar chart in plain HTML (a row per class: name, bar, value): read
    at a glance, and nothing for the browser to lay out but a few boxes (a Plotly chart costs it a redraw per
    click). The predicted class is red and bold; text takes the theme's colour."""
    rows = []
    for i, (name, p) in enumerate(zip(names, probabilities)):
        color = PROBABILITY_BAR_COLORS[i == highlight]
        weight = "font-weight:600;" if i == highlight else ""
        rows.append(f'<span style="text-align:right;white-space:nowrap;{weight}">{html.escape(str(name))}</span>'
                    f'<span style="background:rgba(128,128,128,0.15);height:9px;align-self:center">'
                    f'<span style="display:block;height:100%;width:{100 * min(max(p, 0.0), 1.0):.1f}%;'
                    f'background:{color}"></span></span><span style="{weight}">{p:.1%}</span>')
    return ('<div class="probability-bars" style="display:grid;grid-template-columns:max-content 1fr 3.6em;'
            'column-gap:6px;row-gap:1px;font-size:12px;line-height:14px;max-width:360px">' + "".join(rows) + "</div>")


def static_table(rows, formats: dict[str, str]) -> dict[str, list[str]]:
    """Columns for st.table (static HTML: far cheaper for a browser to redraw than st.dataframe's data grid) from
    rows (a list of dicts or a dict of columns): each column named in `formats` written in its format (e.g.
    "{:.4f}"), a missing or NaN value as a dash, the others as text. (Formatted here: a pandas Styler costs 10 ms.)"""
    columns = rows if isinstance(rows, dict) else {name: [row.get(name) for row in rows] for name in rows[0]}
    return {name: [_cell(value, formats.get(name)) for value in values] for name, values in columns.items()}


def _cell(value, fmt: str | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value) if fmt is not None else str(value)


def swap_matrix_figure(grid: np.ndarray, errors: np.ndarray, labels: list[str], *, height: int = 470) -> go.Figure:
    """The swap matrix: the image grid (core.analysis.swap_grid: where sources along the top, what sources down the
    left) beside a heatmap of each cell's MSE drawn on the same (K+1) x (K+1) grid, so row i of one is row i of the
    other; labels in the header cells, the diagonal (each image's own reconstruction) outlined, MSE written in
    every cell, on a sequential scale anchored at 0 (`MSE_SCALE`)."""
    k = errors.shape[0]
    tile = (grid.shape[0] + 1) / (k + 1)  # grid pixels per cell, padding included
    padded = np.full((k + 1, k + 1), np.nan)
    padded[1:, 1:] = errors  # (K+1, K+1): the header row and column empty, like the image grid's
    high = float(np.nanmax(errors)) if errors.size else 1.0
    text = [["" for _ in range(k + 1)] for _ in range(k + 1)]
    for i in range(k):
        for j in range(k):
            text[i + 1][j + 1] = f"{errors[i, j]:.3f}"
    heat = dict(type="heatmap", z=padded, coloraxis="coloraxis2", text=text, texttemplate="%{text}",
                textfont=dict(size=10), hovertemplate="what of %{customdata}<br>MSE %{z:.4f}<extra></extra>",
                xgap=1, ygap=1)
    heat["customdata"] = [[f"{labels[r - 1]}, where of {labels[c - 1]}" if r and c else "" for c in range(k + 1)]
                          for r in range(k + 1)]
    figure = panel_figure(
        [gray_panel("images: what of the row, where of the column", grid),
         Panel("MSE of each cell to its row's image", [heat])], columns=2, height=height,
        coloraxes={"coloraxis": dict(colorscale=GRAY, cmin=0, cmax=1, showscale=False),
                   "coloraxis2": dict(colorscale=MSE_SCALE, cmin=0.0, cmax=max(high, 1e-6),
                                      colorbar=dict(title=dict(text="MSE", side="right"), len=0.85, thickness=12))})
    shapes, annotations = [], list(figure.layout.annotations)
    for index in range(k):  # the diagonal outlined in both panels; labels in the heatmap's header cells
        for suffix, scale, gap in (("", tile, tile - grid.shape[0] // (k + 1)), ("2", 1.0, 0.0)):
            x0 = (index + 1) * scale - 0.5
            shapes.append(dict(type="rect", xref=f"x{suffix}", yref=f"y{suffix}", x0=x0, x1=x0 + scale - gap,
                               y0=x0, y1=x0 + scale - gap, line=dict(color=HIGHLIGHT, width=2.5)))
        for x, y in ((index + 1, 0), (0, index + 1)):
            annotations.append(dict(text=labels[index].replace(" ", "<br>"), x=x, y=y, xref="x2", yref="y2",
                                    showarrow=False, font=dict(size=10)))
    figure.update_layout(shapes=shapes, annotations=annotations)
    return figure


def emphasised(table: dict[str, list[str]], column: str, rows: tuple[str, ...]):
    """A static_table's columns as a pandas Styler for st.table, the rows whose `column` is in `rows` in bold on a
    pale yellow background (pandas is imported here, not at the module's top: only tables need it)."""
    import pandas as pd

    frame = pd.DataFrame(table)
    marked = frame[column].isin(rows)
    return frame.style.apply(lambda row: ["font-weight: 700; background-color: #fff3c4; color: #31333F" if marked[row.name] else ""
                                          for _ in row], axis=1).hide(axis="index")
