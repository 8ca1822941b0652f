"""Input pickers shared by the pages: a dataset image (by index, or random), an uploaded picture, or a drawing.

Widget keys are `<key>_source`, `<key>_index`, `<key>_upload`, `<key>_invert`, `<key>_prepare` and `<key>_canvas`
for a picker created with `key`. Uploads and drawings are prepared the way the model's dataset was made: like the
MNIST digits (`core.data.prepare_digit`) for a digits model, like Fashion-MNIST's products
(`core.data.prepare_product`) for a Fashion-MNIST model (both of 1 x 28 x 28 input), with a switch to turn it off
and a preview of what the model sees.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import streamlit as st
import torch

from app.address import BIND
from app.sidebar import Explorer, shape_text
from core.data import ImageDecodeError, NoInkError, decode_image, decode_prepared, enlarge, preparation_for

__all__ = ["Picked", "pick_image", "IMAGE_TYPES"]

IMAGE_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"]
_INVERT = {"auto": None, "no": False, "yes": True}
CANVAS_SIDE, STROKE_WIDTH = 280, 20  # px: a 28x28 digit drawn at 10x, strokes about 2 px wide once scaled down
TOOLBAR_SPACE = 24  # px
PREVIEW_SCALE = 4  # the model's 28x28 input shown as 112x112 crisp blocks
PREPARE_LABELS = {"digit": "Prepare like MNIST", "product": "Prepare like Fashion-MNIST"}
PREPARE_HELP = {
    "digit": "Find the ink (light or dark), crop it, scale it to fit 20x20 and centre it by its centre of mass "
             "in 28x28, as the MNIST digits were made. Off: letterbox and resize the whole picture.",
    "product": "Trim the plain background around the item, resize its longest side to 28, centre it and make it "
               "light on black, as Fashion-MNIST's images were made. Off: letterbox and resize the whole picture.",
}


@dataclass
class Picked:
    image: torch.Tensor  # (C, H, W) in [0, 1], the model's shape
    caption: str
    label: int | None  # dataset label, when known
    label_name: str | None = None  # its class name in the examples' dataset


@st.cache_data(max_entries=32, show_spinner=False)
def _decode(sha256: str, channels: int, size: int, invert: bool | None, name: str, _data: bytes):  # noqa: ARG001
    """(tensor, None) or (None, refusal): a refusal is cached like a success, so a bad file costs its check once."""
    return _attempt(decode_image, _data, channels=channels, size=size, invert=invert, name=name)


@st.cache_data(max_entries=32, show_spinner=False)
def _decode_prepared(sha256: str, style: str, size: int, invert: bool | None, name: str,  # noqa: ARG001
                     _data: bytes):
    return _attempt(decode_prepared, _data, style, size=size, invert=invert, name=name)


def _attempt(decode, *args, **kwargs) -> tuple[torch.Tensor | None, tuple[bool, str] | None]:
    try:
        return decode(*args, **kwargs), None
    except ImageDecodeError as exc:
        return None, (isinstance(exc, NoInkError), str(exc))


def _unwrap(result: tuple[torch.Tensor | None, tuple[bool, str] | None]) -> torch.Tensor:
    """The decoded tensor, or the cached refusal raised again as NoInkError / ImageDecodeError."""
    image, refusal = result
    if refusal is not None:
        no_ink, message = refusal
        raise (NoInkError if no_ink else ImageDecodeError)(message)
    return image


def _show_preview(image: torch.Tensor) -> None:
    height, width = image.shape[1:]
    st.image(enlarge(image, scale=PREVIEW_SCALE), caption=f"What the model sees ({height}x{width})",
             width=width * PREVIEW_SCALE)


def _uploaded(key: str, channels: int, size: int, style: str | None) -> Picked | None:
    """The upload widgets; the picked upload, or None (nothing uploaded, or unusable: said with st.error).

    A file uploader forgets its file when its page is left; the file's bytes are kept in the session (`<key>_kept`)
    so the upload is still there on coming back. Removing the file in the uploader drops it."""
    kept_key = f"{key}_kept"
    returning = f"{key}_upload" not in st.session_state  # the uploader was not drawn on the last run
    uploaded = st.file_uploader("Image (PNG, JPEG, ...)", type=IMAGE_TYPES, key=f"{key}_upload",
                                help="Converted to the model's channels and size; over 20 megapixels or "
                                     "animated is refused.")
    invert_col, prepare_col = st.columns(2)
    invert = invert_col.radio("Invert", list(_INVERT), key=f"{key}_invert", horizontal=True,
                              help="auto: invert a dark picture on a light background (the datasets are light on "
                                   "black)")
    prepare = style is not None and prepare_col.toggle(PREPARE_LABELS[style], value=True, key=f"{key}_prepare",
                                                       help=PREPARE_HELP[style])
    if uploaded is not None:
        name, data = uploaded.name, uploaded.getvalue()
        st.session_state[kept_key] = (name, data)
    elif returning and kept_key in st.session_state:
        name, data = st.session_state[kept_key]
        st.caption(f"Showing {name}, uploaded earlier in this session (uploads are not put in the page's address).")
    else:
        st.session_state.pop(kept_key, None)
        return None
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        if prepare:
            image = _unwrap(_decode_prepared(sha256, style, size, _INVERT[invert], name, data))
        else:
            image = _unwrap(_decode(sha256, channels, size, _INVERT[invert], name, data))
    except NoInkError as exc:  # blank, uniform or too faint: no input to show a prediction for
        st.warning(f"{exc}. Nothing to classify: upload a picture in which the subject stands out, or turn "
                   "the preparation off.")
        return None
    except ImageDecodeError as exc:
        st.error(f"{exc}")
        return None
    if style is not None:  # prepared or not: what the model sees
        with prepare_col:
            _show_preview(image)
    return Picked(image, name, None)


def _drawn(key: str, channels: int, size: int, style: str | None) -> Picked | None:
    """The drawing canvas; the drawing prepared for the model, or None while nothing is drawn."""
    # Imported here: importing the package registers a components-v2 component, which fails outside a Streamlit
    # runtime (a bare `import app.inputs`) and is work no other source needs.
    from streamlit_drawable_canvas import st_canvas
    st.space(TOOLBAR_SPACE)  # the canvas's toolbar floats above it on hover: keep it off the radio above
    row = st.container(horizontal=True, gap="large")
    with row:
        drawing = st_canvas(stroke_width=STROKE_WIDTH, stroke_color="#FFFFFF", background_color="#000000",
                            width=CANVAS_SIDE, height=CANVAS_SIDE, drawing_mode="freedraw",
                            return_image_data=True, key=f"{key}_canvas")
    thing = "clothing item" if style == "product" else "digit"
    st.caption(f"Draw one {thing} with the mouse, light on dark like the dataset; the toolbar over the canvas "
               "undoes or clears it.")
    try:
        objects, data = _canvas_drawing(drawing)
    except ValueError as exc:  # the browser controls these values: a page that was tampered with, or a bug
        st.warning(f"Drawing ignored: {exc}.")
        return None
    if not objects or not data:
        return None
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        if style is not None:
            image = _unwrap(_decode_prepared(sha256, style, size, False, "drawing", data))
        else:
            image = _unwrap(_decode(sha256, channels, size, False, "drawing", data))
    except NoInkError:  # strokes dragged off the canvas, or erased: nothing to show yet
        return None
    except ImageDecodeError as exc:  # not the canvas's own PNG: the browser sent something else
        st.warning(f"Drawing ignored: {exc}.")
        return None
    with row:
        _show_preview(image)
    return Picked(image, "drawing", None)


def _canvas_drawing(drawing) -> tuple[list, bytes | None]:
    """The canvas's Fabric.js objects and its PNG bytes; ValueError (one line) for values no canvas sends."""
    raw = drawing.json_data
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"the canvas sent a drawing that is a {type(raw).__name__}, not an object")
    objects = (raw or {}).get("objects") or []
    if not isinstance(objects, list):
        raise ValueError("the canvas sent drawing objects that are not a list")
    try:
        data = drawing.image_bytes
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise ValueError(f"the canvas sent an image that is not a base64 data URL ({type(exc).__name__})") from None
    return objects, data


def _randomize(key: str, count: int) -> None:
    st.session_state[f"{key}_index"] = random.randrange(count)


def pick_image(explorer: Explorer, key: str, label: str, default_index: int = 0) -> Picked:
    """Widgets to choose one input image; an unusable upload shows st.error and falls back to the dataset."""
    examples = explorer.examples
    channels, _, size = explorer.model.input_shape
    style = preparation_for(explorer.checkpoint.dataset, channels, size)
    sources = (["Dataset"] if examples is not None else []) + ["Upload", "Draw"]
    source = st.radio(label, sources, key=f"{key}_source", horizontal=True, bind=BIND, persist_state="session")
    if source != "Dataset":
        picked = _uploaded(key, channels, size, style) if source == "Upload" else _drawn(key, channels, size, style)
        if picked is not None:
            return _fitting(picked, explorer)
        thing = "an item" if style == "product" else "a digit"
        waiting_for = "an image is uploaded" if source == "Upload" else f"{thing} is drawn"
        if examples is None:
            st.info(f"{'Upload an image' if source == 'Upload' else 'Draw ' + thing} to continue.")
            st.stop()
        st.caption(f"Showing the dataset image below until {waiting_for}.")
    count = len(examples.images)
    index_key = f"{key}_index"
    if index_key not in st.session_state:
        st.session_state[index_key] = min(default_index, count - 1)
    index_col, dice_col = st.columns([3, 2], vertical_alignment="bottom")
    index = index_col.number_input(f"{examples.name} index", min_value=0, max_value=count - 1, step=1, key=index_key,
                                   bind=BIND, persist_state="session")
    dice_col.button("Random", key=f"{key}_random", on_click=_randomize, args=(key, count),
                    help="A random dataset image")
    label_value = int(examples.labels[index])
    return _fitting(Picked(examples.images[index], f"#{index} ({examples.label_name(index)})", label_value,
                           examples.label_name(index)), explorer)


def _fitting(picked: Picked, explorer: Explorer) -> Picked:
    """`picked`, when the model takes images of its shape; else the page stops, saying so in one line (every page
    feeds the picked image to the model)."""
    if tuple(picked.image.shape) != explorer.model.input_shape:
        st.error(f"The input {picked.caption} is a {shape_text(picked.image.shape)} image and {explorer.label} takes "
                 f"{shape_text(explorer.model.input_shape)}: choose another input or model.")
        st.stop()
    return picked
