"""The pooling lens on a page: one channel drawn large as linked views of one window grid.

Panels share one coordinate system, the pre-pool map's pixels: the *what* map draws each pooled value over the
window it came from, so window (r, c) is the same square in every panel. Hovering a window reads out its values;
clicking it in the large pre-pool panel (where the click targets are) outlines it in every panel and writes its
readout below (session key `<key>_window`). Each panel is one picture (core.analysis.lens_pictures) with its marks
drawn in: far cheaper for the browser than a vector mark per window.

Marks (said once in the key under the figure): a red square on the cell a window passed up (its switch); for soft
pooling a red ring at the soft-argmax position; a grey veil over a tie (the window's maximum occurs more than once, so no cell
was chosen: the index max pooling returns there is the scan order's, not the network's).
"""
from __future__ import annotations

import base64
from functools import partial

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app.figures import scale_strip
from core.analysis import PoolingLens, SwitchAgreement, lens_pictures, picture_png

__all__ = ["lens_figure", "show_lens", "show_swap_lens", "HIGHLIGHT_COLOR", "LENS_KEY_TEXT",
           "window_key"]

HIGHLIGHT_COLOR = "#00d5ff"  # the clicked window, outlined in every panel
CHART = {"displaylogo": False, "displayModeBar": False}
LENS_KEY_TEXT = ("Each square outlined in white is one pooling window. **Red square**: the cell whose value the window "
                 "passed up, its *switch* (the *where*). **Grey veil**: a *tie*, the window's largest value occurs "
                 "more than once (most often all 0), so no cell was chosen. Hover a window in any panel to read it; click it "
                 "in the large map to outline it in every panel.")
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


def _picture(rgb: np.ndarray, pixel: int) -> dict:
    """A lens panel's raster (core.analysis.lens_pictures) as an image trace in model pixels: one element for the
    browser to draw, however many windows and switches it shows."""
    source = "data:image/png;base64," + base64.b64encode(picture_png(rgb)).decode("ascii")
    return dict(type="image", source=source, x0=-0.5 + 0.5 / pixel, dx=1 / pixel, y0=-0.5 + 0.5 / pixel,
                dy=1 / pixel, hoverinfo="skip")


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
    """An invisible marker at each window's centre: Streamlit reports clicks on scatter points, not on heatmaps.
    Only one is drawn (app.figures.TARGET_NOTE): hover and click still reach every window."""
    x, y, rows, cols = _centres(lens)
    return dict(type="scatter", mode="markers", x=x, y=y, customdata=np.stack([rows, cols], -1), text=hover,
                marker=dict(size=4, color="rgba(0,0,0,0)", maxdisplayed=1), selected=dict(marker=dict(opacity=0)),
                unselected=dict(marker=dict(opacity=0)), hovertemplate="%{text}<extra></extra>", showlegend=False)


def _hover_windows(lens: PoolingLens, hover: list[str]) -> dict:
    """A see-through heatmap, one cell per window, that reads a window out on hover: hover costs the browser
    nothing until it happens, where every click target is a mark it draws."""
    s = lens.pool_size
    h, w = lens.windows
    return dict(type="heatmap", z=np.zeros((h, w)), x0=(s - 1) / 2, dx=s, y0=(s - 1) / 2, dy=s, showscale=False,
                colorscale=[[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]], text=np.array(hover).reshape(h, w),
                hovertemplate="%{text}<extra></extra>")


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
    hover = _window_hover(lens)
    layout: dict = dict(height=height, margin=dict(l=4, r=40, t=28, b=4), plot_bgcolor="white", paper_bgcolor="white",
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
    pictures = lens_pictures(lens, low, high)
    # Switches and ties are drawn on the large panel only (on the small ones they would bury the values); a clicked
    # window is outlined in all three. Every panel reads a window out on hover; clicks land on the large one (a click
    # target per window is the figure's main cost to the browser).
    pre = [_picture(pictures.pre_pool, pictures.pixel), _targets(lens, hover)]
    what = [_picture(pictures.what, pictures.small_pixel), _hover_windows(lens, hover)]
    unpooled = [_picture(pictures.unpooled, pictures.small_pixel), _hover_windows(lens, hover)]
    data = [{**t, "xaxis": f"x{s}", "yaxis": f"y{s}"} for s, traces in (("", pre), ("2", what), ("3", unpooled))
            for t in traces]
    layout["shapes"] = _highlight(lens, window, ["", "2", "3"])
    return scale_strip(go.Figure(data=data, layout=layout), colorscale="Viridis", low=low, high=high, title="value",
                       x=[0.93, 0.945], y=[0.05, 0.9])


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
    layout: dict = dict(height=height, margin=dict(l=4, r=40, t=28, b=4), plot_bgcolor="white", paper_bgcolor="white",
                        hovermode="closest", clickmode="event+select", showlegend=False,
                        hoverlabel=dict(font=dict(family="monospace", size=12)), annotations=[], shapes=[])
    _axes(layout, "", [0.0, 0.44], [0.0, 0.93], map_h, map_w)
    _axes(layout, "2", [0.48, 0.92], [0.0, 0.93], map_h, map_w)
    for text, x in ((f"A: stage {lens_a.stage + 1}, channel {lens_a.channel}", 0.22),
                    (f"B: stage {lens_b.stage + 1}, channel {lens_b.channel}", 0.70)):
        layout["annotations"].append(dict(text=text, x=x, y=0.94, xref="paper", yref="paper", xanchor="center",
                                          yanchor="bottom", showarrow=False, font=dict(size=13)))
    low, high = _low_high(lens_a.pre_pool, lens_b.pre_pool)
    layout["shapes"] += _highlight(lens_a, window, ["", "2"])
    data = []
    for suffix, lens in (("", lens_a), ("2", lens_b)):
        pictures = lens_pictures(lens, low, high, moved=agreement.moved)
        traces = [_picture(pictures.pre_pool, pictures.pixel), _targets(lens, _window_hover(lens))]
        data += [{**t, "xaxis": f"x{suffix}", "yaxis": f"y{suffix}"} for t in traces]
    return scale_strip(go.Figure(data=data, layout=layout), colorscale="Viridis", low=low, high=high, title="value",
                       x=[0.945, 0.96], y=[0.05, 0.9])


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
