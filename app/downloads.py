"""Downloads beside what a page draws: its PNG pictures, its tables as CSV, its Plotly charts as SVG (from the chart's
camera button), with file names that say the model, the image and the stage.

The bytes are made only when the button is pressed (a callable `data`, `on_click="ignore"`: no rerun).
"""
from __future__ import annotations

import csv
import io
import re
from typing import Callable

import streamlit as st

__all__ = ["file_name", "png_button", "csv_button", "chart_config", "csv_bytes"]


def file_name(*parts: object, ext: str) -> str:
    """'swwae_default_A-150_B-350_stage-1.png': the parts joined, each reduced to letters, digits, '.', '-' and '_'."""
    cleaned = [re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", str(part))).strip("-") for part in parts
               if str(part)]
    return "_".join(["swwae", *cleaned]) + f".{ext}"


def model_tag(label: str) -> str:
    """A model's label as a short file-name part: 'checkpoints/fashion.pt' -> 'fashion'."""
    name = label.split(":", 1)[-1].split(" (")[0].split(" at step ")[0].strip().split("/")[-1]
    return re.sub(r"\.(pt|pth|ckpt)$", "", name).replace(" ", "-") or "model"


def png_button(label: str, data: Callable[[], bytes], name: str, key: str) -> None:
    st.download_button(label, data=data, file_name=name, mime="image/png", on_click="ignore", key=key,
                       icon=":material/download:", type="tertiary", help=f"Saves {name}")


def csv_bytes(columns: dict[str, list]) -> bytes:
    """A table given as {column: values} as CSV (UTF-8, a header row)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(list(columns))
    writer.writerows(zip(*columns.values()))
    return buffer.getvalue().encode()


def csv_button(label: str, columns: dict[str, list], name: str, key: str) -> None:
    st.download_button(label, data=lambda: csv_bytes(columns), file_name=name, mime="text/csv", on_click="ignore",
                       key=key, icon=":material/table:", type="tertiary", help=f"Saves {name}")


def chart_config(name: str) -> dict:
    """A Plotly chart's config whose only toolbar button saves the chart as SVG named `name` (no extension)."""
    return {"displaylogo": False, "modeBarButtons": [["toImage"]],
            "toImageButtonOptions": {"format": "svg", "filename": name}}
