"""The pooling lens on a page: one channel drawn large as linked views of one window grid.

Panels share one coordinate system, the pre-pool map's pixels: the *what* map draws each pooled value over the
window it came from, so window (r, c) is the same square in every panel. Hovering a window reads out its values;
clicking it (any panel) outlines it in every panel and writes its readout below (session key `<key>_window`).

Marks (said once in the key under the figure): a red square on the cell a window passed up (its switch); for soft
pooling a red ring at the soft-argmax position; a grey veil over a tie (the window's maximum occurs more than once, so no cell
was chosen: the index max pooling returns there is the scan order's, not the network's).
"""
from __future__ import annotations

from functools import partial

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.analysis import PoolingLens, SwitchAgreement

__all__ = ["lens_figure", "show_lens", "show_swap_lens", "SWITCH_COLOR", "HIGHLIGHT_COLOR", "LENS_KEY_TEXT",
           "window_key"]

SWITCH_COLOR = "#ff2a2a"  # the switch: red, visible on Viridis' purple and yellow
HIGHLIGHT_COLOR = "#00d5ff"  # the clicked window, outlined in every panel
MOVED_COLOR = "rgba(255, 140, 0, 0.55)"  # Swap: windows whose switch differs between A and B
GRID_COLOR = "rgba(255, 255, 255, 0.45)"
TIE_COLOR = "rgba(210, 210, 210, 0.55)"  # the veil over a tie: grey, as ties are in the where mosaics
CHART = {"displaylogo": False, "displayModeBar": False}
LENS_KEY_TEXT = ("Each square outlined in grey is one pooling window. **Red square**: the cell whose value the window "
                 "passed up, its *switch* (the *where*). **Grey veil**: a *tie*, the window's largest value occurs "
                 "more than once (most often all 0), so no cell was chosen. Hover a window to read it; click it to outline it "
                 "in every panel.")
SOFT_KEY_TEXT = ("Soft pooling: the **red ring** is the soft-argmax, the cells' positions averaged with softmax "
                 "weights, so it can sit between cells.")
NONE_KEY_TEXT = ("This model's decoder ignores the switches (the where ablation's *none*): it unpools by copying "
                 "each what over its whole window.")


def window_key(key: str) -> str:
    return f"{key}_window"


def _axes(layout: dict, suffix: str, domain_x: list[float], domain_y: list[float], height: int, width: int) -> None:
    layout[f"xaxis{suffix}"] = dict(domain=domain_x, anchor=f"y{suffix}", visible=False, constrain="domain",
                                    range=[-0.5, width - 0.5])
    layout[f"yaxis{suffix}"] = dict(domain=domain_y, anchor=f"x{suffix}", visible=False, scaleanchor=f"x{suffix}",
                                    constrain="domain", range=[height - 0.5, -0.5])


def _grid_trace(lens: PoolingLens) -> dict:
    """The window borders as one line trace (NaN-separated segments)."""
    height, width = lens.pre_pool.shape
    s = lens.pool_size
    h, w = lens.windows
    xs, ys = [], []
    for col in range(w + 1):
        xs += [col * s - 0.5, col * s - 0.5, None]
        ys += [-0.5, h * s - 0.5, None]
    for row in range(h + 1):
        xs += [-0.5, w * s - 0.5, None]
        ys += [row * s - 0.5, row * s - 0.5, None]
    return dict(type="scatter", x=xs, y=ys, mode="lines", line=dict(color=GRID_COLOR, width=1), hoverinfo="skip",
                showlegend=False)


def _centres(lens: PoolingLens) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, row, col) of every window's centre, row-major."""
    h, w = lens.windows
    s = lens.pool_size
    rows, cols = np.indices((h, w))
    return cols.ravel() * s + (s - 1) / 2, rows.ravel() * s + (s - 1) / 2, rows.ravel(), cols.ravel()


def _window_hover(lens: PoolingLens) -> list[str]:
    texts = []
    for row, col in np.ndindex(*lens.windows):
        values = lens.window_values(row, col)
        cells = "<br>".join("  ".join(f"{v:6.3f}" for v in line) for line in values)
        if lens.tied[row, col]:
            where = "tie: no cell chosen"
        elif lens.pooling == "soft":
            where = f"switch at ({lens.switch[row, col, 0]:.2f}, {lens.switch[row, col, 1]:.2f})"
        else:
            where = f"switch at pixel ({lens.switch[row, col, 0]:.0f}, {lens.switch[row, col, 1]:.0f})"
        texts.append(f"window ({row}, {col})<br>{cells}<br>what {lens.what[row, col]:.3f}, {where}")
    return texts


def _targets(lens: PoolingLens, hover: list[str]) -> dict:
    """An invisible marker at each window's centre: Streamlit reports clicks on scatter points, not on heatmaps."""
    x, y, rows, cols = _centres(lens)
    return dict(type="scatter", mode="markers", x=x, y=y, customdata=np.stack([rows, cols], -1), text=hover,
                marker=dict(size=4, color="rgba(0,0,0,0)"), selected=dict(marker=dict(opacity=0)),
                unselected=dict(marker=dict(opacity=0)), hovertemplate="%{text}<extra></extra>", showlegend=False)


def _marks(lens: PoolingLens, marker_size: float) -> list[dict]:
    """Switch marks on chosen windows, and a grey veil over ties: one heatmap trace (a window's cell where it ties,
    NaN elsewhere), far cheaper for the browser than a mark per window."""
    _, _, rows, cols = _centres(lens)
    chosen = ~lens.tied[rows, cols]
    switch = lens.switch[rows, cols]  # (K, 2) (row, col)
    soft = lens.pooling == "soft"
    traces = [dict(type="scatter", mode="markers", x=switch[chosen, 1], y=switch[chosen, 0], hoverinfo="skip",
                   marker=dict(symbol="circle-open" if soft else "square-open", size=marker_size,
                               color=SWITCH_COLOR, line=dict(width=2.5, color=SWITCH_COLOR)), showlegend=False)]
    if lens.tied.any():
        s = lens.pool_size
        veil = np.where(lens.tied, 1.0, np.nan)  # (h, w)
        traces.insert(0, dict(type="heatmap", z=veil, x0=(s - 1) / 2, dx=s, y0=(s - 1) / 2, dy=s, hoverinfo="skip",
                              colorscale=[[0, TIE_COLOR], [1, TIE_COLOR]], showscale=False, xgap=3, ygap=3))
    return traces


def _what_as_windows(lens: PoolingLens) -> dict:
    """The what map drawn in pre-pool pixels: value (r, c) covers window (r, c)."""
    s = lens.pool_size
    return dict(type="heatmap", z=lens.what, x0=(s - 1) / 2, dx=s, y0=(s - 1) / 2, dy=s, coloraxis="coloraxis",
                hoverinfo="skip")


def _highlight(lens: PoolingLens, window: tuple[int, int] | None, suffixes: list[str]) -> list[dict]:
    if window is None:
        return []
    s = lens.pool_size
    row, col = window
    return [dict(type="rect", xref=f"x{suffix}", yref=f"y{suffix}", x0=col * s - 0.5, x1=(col + 1) * s - 0.5,
                 y0=row * s - 0.5, y1=(row + 1) * s - 0.5, line=dict(color=HIGHLIGHT_COLOR, width=3))
            for suffix in suffixes]


def _low_high(*maps: np.ndarray) -> tuple[float, float]:
    low = min(0.0, *(float(np.nanmin(m)) for m in maps))
    high = max(low + 1e-6, *(float(np.nanmax(m)) for m in maps))
    return low, high


def lens_figure(lens: PoolingLens, window: tuple[int, int] | None = None, *, height: int = 470) -> go.Figure:
    """Pre-pool with windows and switches (large, left); what and unpooled (right, stacked); one colour scale."""
    map_h, map_w = lens.pre_pool.shape
    pixel = (height - 60) / map_h  # screen px per model pixel in the large panel
    hover = _window_hover(lens)
    layout: dict = dict(height=height, margin=dict(l=4, r=4, t=28, b=4), plot_bgcolor="white", paper_bgcolor="white",
                        hovermode="closest", clickmode="event+select", showlegend=False,
                        hoverlabel=dict(font=dict(family="monospace", size=12)), annotations=[], shapes=[])
    _axes(layout, "", [0.0, 0.56], [0.0, 0.94], map_h, map_w)
    _axes(layout, "2", [0.62, 0.9], [0.51, 0.94], map_h, map_w)
    _axes(layout, "3", [0.62, 0.9], [0.0, 0.43], map_h, map_w)
    titles = [(f"pre-pool map: {map_h}×{map_w}, windows {lens.pool_size}×{lens.pool_size}", 0.28, 0.95),
              (f"what: {lens.windows[0]}×{lens.windows[1]}, one per window", 0.76, 0.95),
              ("unpooled: what put back " + ("over its window" if lens.pooling == "none" else "at its switch"),
               0.76, 0.44)]
    for text, x, y in titles:
        layout["annotations"].append(dict(text=text, x=x, y=y, xref="paper", yref="paper", xanchor="center",
                                          yanchor="bottom", showarrow=False, font=dict(size=13)))
    low, high = _low_high(lens.pre_pool, lens.what, lens.unpooled)
    layout["coloraxis"] = dict(colorscale="Viridis", cmin=low, cmax=high,
                               colorbar=dict(title=dict(text="value", side="right"), len=0.9, thickness=12, x=1.0,
                                             xanchor="right"))
    marks = _marks(lens, marker_size=max(6.0, pixel * 0.8))
    pre = [dict(type="heatmap", z=lens.pre_pool, coloraxis="coloraxis", hoverinfo="skip"), _grid_trace(lens), *marks,
           _targets(lens, hover)]
    # The small panels carry no marks (they would bury the values): the large one shows switches and ties, and a
    # clicked window is outlined in all three.
    what = [_what_as_windows(lens), _grid_trace(lens), _targets(lens, hover)]
    unpooled = [dict(type="heatmap", z=lens.unpooled, coloraxis="coloraxis", hoverinfo="skip"), _grid_trace(lens)]
    data = [{**t, "xaxis": f"x{s}", "yaxis": f"y{s}"} for s, traces in (("", pre), ("2", what), ("3", unpooled))
            for t in traces]
    layout["shapes"] = _highlight(lens, window, ["", "2", "3"])
    return go.Figure(data=data, layout=layout)


def _on_click(key: str) -> None:
    """A click on a window's target: remember (row, col). The browser sends a point's customdata as a list or as
    an object keyed "0", "1"; anything else (a click on no target, an empty selection) changes nothing."""
    for point in st.session_state[key]["selection"]["points"]:
        data = point.get("customdata")
        if isinstance(data, dict):
            data = [data.get("0"), data.get("1")]
        if isinstance(data, list) and len(data) == 2 and all(isinstance(v, (int, float)) for v in data):
            st.session_state[window_key(key)] = (int(data[0]), int(data[1]))
            return


def chosen_window(key: str, lens: PoolingLens) -> tuple[int, int] | None:
    """The clicked window, when it exists in this lens (a new stage or model can leave it out of range)."""
    window = st.session_state.get(window_key(key))
    if window is None or not (0 <= window[0] < lens.windows[0] and 0 <= window[1] < lens.windows[1]):
        return None
    return tuple(window)


def _key_caption(lens: PoolingLens) -> str:
    text = LENS_KEY_TEXT
    if lens.pooling == "soft":
        text += " " + SOFT_KEY_TEXT
    if lens.pooling == "none":
        text += " " + NONE_KEY_TEXT
    ties = int(lens.tied.sum())
    return text + f" Here {ties} of {lens.tied.size} windows are ties."


def _config(svg_name: str | None) -> dict:
    """No toolbar, or (`svg_name`) only the camera button, saving the figure as SVG."""
    if svg_name is None:
        return CHART
    return {"displaylogo": False, "modeBarButtons": [["toImage"]],
            "toImageButtonOptions": {"format": "svg", "filename": svg_name}}


def show_lens(lens: PoolingLens, key: str, *, height: int = 470, svg_name: str | None = None) -> None:
    """The lens figure (click a window to outline it everywhere; its camera button saves it as `svg_name`.svg),
    the clicked window's readout and the key."""
    window = chosen_window(key, lens)
    st.plotly_chart(lens_figure(lens, window, height=height), key=key, on_select=partial(_on_click, key),
                    selection_mode=("points",), config=_config(svg_name), theme=None)
    if window is not None:
        st.markdown(f":blue-background[{lens.readout(*window)}]")
    st.caption(_key_caption(lens))


# ---- Swap: the same channel for A and B ---------------------------------------------------------------------------

def swap_lens_figure(lens_a: PoolingLens, lens_b: PoolingLens, agreement: SwitchAgreement,
                     window: tuple[int, int] | None = None, *, height: int = 400) -> go.Figure:
    """A's and B's pre-pool maps with their switches, side by side on one colour scale; windows whose switch
    differs between them shaded orange on both."""
    map_h, map_w = lens_a.pre_pool.shape
    pixel = (height - 60) / map_h
    layout: dict = dict(height=height, margin=dict(l=4, r=4, t=28, b=4), plot_bgcolor="white", paper_bgcolor="white",
                        hovermode="closest", clickmode="event+select", showlegend=False,
                        hoverlabel=dict(font=dict(family="monospace", size=12)), annotations=[], shapes=[])
    _axes(layout, "", [0.0, 0.46], [0.0, 0.93], map_h, map_w)
    _axes(layout, "2", [0.5, 0.96], [0.0, 0.93], map_h, map_w)
    for text, x in ((f"A: stage {lens_a.stage + 1}, channel {lens_a.channel}", 0.23),
                    (f"B: stage {lens_b.stage + 1}, channel {lens_b.channel}", 0.73)):
        layout["annotations"].append(dict(text=text, x=x, y=0.94, xref="paper", yref="paper", xanchor="center",
                                          yanchor="bottom", showarrow=False, font=dict(size=13)))
    low, high = _low_high(lens_a.pre_pool, lens_b.pre_pool)
    layout["coloraxis"] = dict(colorscale="Viridis", cmin=low, cmax=high,
                               colorbar=dict(title=dict(text="value", side="right"), len=0.9, thickness=12))
    s = lens_a.pool_size
    moved = np.argwhere(agreement.moved)
    for suffix in ("", "2"):
        for row, col in moved:
            layout["shapes"].append(dict(type="rect", xref=f"x{suffix}", yref=f"y{suffix}", x0=col * s - 0.5,
                                         x1=(col + 1) * s - 0.5, y0=row * s - 0.5, y1=(row + 1) * s - 0.5,
                                         line=dict(color=MOVED_COLOR, width=2.5)))
    layout["shapes"] += _highlight(lens_a, window, ["", "2"])
    data = []
    for suffix, lens in (("", lens_a), ("2", lens_b)):
        traces = [dict(type="heatmap", z=lens.pre_pool, coloraxis="coloraxis", hoverinfo="skip"), _grid_trace(lens),
                  *_marks(lens, marker_size=max(6.0, pixel * 0.8)), _targets(lens, _window_hover(lens))]
        data += [{**t, "xaxis": f"x{suffix}", "yaxis": f"y{suffix}"} for t in traces]
    return go.Figure(data=data, layout=layout)


def show_swap_lens(lens_a: PoolingLens, lens_b: PoolingLens, agreement: SwitchAgreement, key: str,
                   svg_name: str | None = None) -> None:
    window = chosen_window(key, lens_a)
    st.markdown(agreement.sentence("A", "B"))
    st.plotly_chart(swap_lens_figure(lens_a, lens_b, agreement, window), key=key, on_select=partial(_on_click, key),
                    selection_mode=("points",), config=_config(svg_name), theme=None)
    if window is not None:
        st.markdown(f":blue-background[A: {lens_a.readout(*window)}]  \n:blue-background[B: "
                    f"{lens_b.readout(*window)}]")
    st.caption(LENS_KEY_TEXT + " **Orange outline**: a window where A's and B's switches sit in different cells "
               "(both chose); these are the positions a where swap changes.")
