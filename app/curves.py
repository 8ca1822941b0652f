"""Training-curve figures for the Runs page: one small chart per metric, the chosen runs overlaid in it.

They only arrange what core.runs.curves returned; every run keeps one colour in every chart, training
records as lines and validation (evaluation) records as dashed lines with markers.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

__all__ = ["TITLES", "curves_figure", "run_colour"]

TITLES = {
    "total": "total loss", "nll": "nll (classification)", "rec": "rec (image reconstruction MSE)",
    "mid": "mid (intermediate what reconstructions)", "accuracy": "accuracy", "images_per_s": "images / s",
    "lr": "learning rate",
}
LOSS_TERMS = ("total", "nll", "rec", "mid")
KIND_NAMES = {"step": "train", "eval": "val"}
PALETTE = qualitative.Plotly


def run_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _title(metric: str) -> str:
    if metric.startswith("mid_") and metric[4:].isdigit():
        return f"{metric} (stage {int(metric[4:]) + 1} what reconstruction)"
    return TITLES.get(metric, metric)


def curves_figure(runs: dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]], *, columns: int = 3,
                  row_height: int = 230, log_losses: bool = False, gap: float = 0.06) -> go.Figure:
    """`runs`: {run name: core.runs.curves(...)}; the metrics of every run, each in its own chart."""
    metrics: list[str] = list(dict.fromkeys(m for run in runs.values() for m in run))
    rows = max(1, math.ceil(len(metrics) / columns))
    height = rows * row_height + 40
    title_space = 24 / height
    layout: dict = dict(height=height, margin=dict(l=8, r=8, t=8, b=8), hovermode="x unified", annotations=[],
                        plot_bgcolor="white", paper_bgcolor="white", uirevision="keep",  # zoom survives updates
                        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0, xanchor="left"))
    layout["margin"]["t"] = 34
    data = []
    shown: set[str] = set()
    for index, metric in enumerate(metrics):
        row, col = divmod(index, columns)
        suffix = "" if index == 0 else str(index + 1)
        x0, x1 = col / columns + gap / 2, (col + 1) / columns - gap / 4
        y1 = 1 - row / rows - title_space
        y0 = 1 - (row + 1) / rows + gap
        log = log_losses and (metric in LOSS_TERMS or metric.startswith("mid_"))
        axis_style = dict(showgrid=True, gridcolor="#eee", zeroline=False, linecolor="#bbb", showline=True,
                          ticks="outside", tickcolor="#bbb", automargin=True)
        layout[f"xaxis{suffix}"] = dict(domain=[x0, x1], anchor=f"y{suffix}", **axis_style,
                                        title=dict(text="step", font=dict(size=11), standoff=2) if row == rows - 1 or
                                        index + columns >= len(metrics) else None)
        layout[f"yaxis{suffix}"] = dict(domain=[y0, y1], anchor=f"x{suffix}", type="log" if log else "linear",
                                        exponentformat="power" if metric == "lr" else "B", **axis_style)
        layout["annotations"].append(dict(text=f"<b>{_title(metric)}</b>", x=x0, y=y1, xref="paper", yref="paper",
                                          xanchor="left", yanchor="bottom", showarrow=False, font=dict(size=12)))
        for run_index, (name, run) in enumerate(runs.items()):
            for kind, (steps, values) in run.get(metric, {}).items():
                group = f"{name} · {KIND_NAMES.get(kind, kind)}"
                line = dict(color=run_colour(run_index), width=1.6 if kind == "step" else 1.4,
                            dash="solid" if kind == "step" else "dash")
                data.append(dict(
                    type="scatter", x=steps, y=values, name=group, legendgroup=group, showlegend=group not in shown,
                    mode="lines" if kind == "step" and len(steps) > 1 or len(steps) > 40 else "lines+markers", line=line,
                    marker=dict(size=5, color=run_colour(run_index)), xaxis=f"x{suffix}", yaxis=f"y{suffix}",
                    hovertemplate=f"%{{y:.4g}}<extra>{group}</extra>"))
                shown.add(group)
    return go.Figure(data=data, layout=layout)
