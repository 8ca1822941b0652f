"""Input pickers shared by the pages: a dataset image (by index, or random) or an uploaded picture.

Widget keys are `<key>_source`, `<key>_index`, `<key>_upload`, `<key>_invert` for a picker created with `key`.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import streamlit as st
import torch

from app.sidebar import Explorer
from core.images import ImageDecodeError, decode_image

__all__ = ["Picked", "pick_image", "IMAGE_TYPES"]

IMAGE_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"]
_INVERT = {"auto": None, "no": False, "yes": True}


@dataclass
class Picked:
    image: torch.Tensor  # (C, H, W) in [0, 1], the model's shape
    caption: str
    label: int | None  # dataset label, when known


@st.cache_data(max_entries=32, show_spinner=False)
def _decode(sha256: str, channels: int, size: int, invert: bool | None, name: str, _data: bytes) -> torch.Tensor:  # noqa: ARG001
    return decode_image(_data, channels=channels, size=size, invert=invert, name=name)


def _randomize(key: str, count: int) -> None:
    st.session_state[f"{key}_index"] = random.randrange(count)


def pick_image(explorer: Explorer, key: str, label: str, default_index: int = 0) -> Picked:
    """Widgets to choose one input image; an unusable upload shows st.error and falls back to the dataset."""
    examples = explorer.examples
    channels, _, size = explorer.model.input_shape
    sources = (["Dataset"] if examples is not None else []) + ["Upload"]
    source = st.radio(label, sources, key=f"{key}_source", horizontal=True)
    if source == "Upload":
        uploaded = st.file_uploader("Image (PNG, JPEG, ...)", type=IMAGE_TYPES, key=f"{key}_upload",
                                    help="Converted to the model's channels and size; over 20 megapixels or "
                                         "animated is refused.")
        invert = st.radio("Invert", list(_INVERT), key=f"{key}_invert", horizontal=True,
                          help="auto: invert a dark drawing on a light background (the digits are light on black)")
        if uploaded is not None:
            data = uploaded.getvalue()
            try:
                image = _decode(hashlib.sha256(data).hexdigest(), channels, size, _INVERT[invert], uploaded.name, data)
                return Picked(image, uploaded.name, None)
            except ImageDecodeError as exc:
                st.error(f"{exc}")
        if examples is None:
            st.info("Upload an image to continue.")
            st.stop()
        st.caption("Showing the dataset image below until an image is uploaded.")
    count = len(examples.images)
    index_key = f"{key}_index"
    if index_key not in st.session_state:
        st.session_state[index_key] = min(default_index, count - 1)
    index_col, dice_col = st.columns([4, 1], vertical_alignment="bottom")
    index = index_col.number_input(f"{examples.name} index", min_value=0, max_value=count - 1, step=1, key=index_key)
    dice_col.button("Random", key=f"{key}_random", on_click=_randomize, args=(key, count),
                    help="A random dataset image")
    label_value = int(examples.labels[index])
    return Picked(examples.images[index], f"#{index} (label {label_value})", label_value)
