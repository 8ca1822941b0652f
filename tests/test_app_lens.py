"""The pictures of "where" a person reads: the swap matrix's colour scale as the page draws it (sequential, anchored at
0, lightness monotonic in MSE, rows aligned with the image grid), the Swap page's lens and its computed finding, and
ties told from choices in every where picture."""
import base64
import json

import numpy as np
import torch

from app import sidebar
from core.analysis import TIE_RGB, layer_views, where_mosaic
from core.model import load_checkpoint
from tests.test_app import ROOT, ok, open_page, open_section


def lightness(hex_color: str) -> float:
    """CIE L* of an sRGB colour '#rrggbb' (an independent formula, not the app's)."""
    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    y = float(linear @ np.array([0.2126, 0.7152, 0.0722]))
    return 116 * (y ** (1 / 3) if y > 216 / 24389 else (24389 / 27 * y + 16) / 116) - 16


def array(value) -> np.ndarray:
    """A Plotly JSON array: a plain list, or a typed array {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        return flat.reshape([int(n) for n in str(shape).split(",")] if shape else -1).astype(float)
    return np.array(value, dtype=float)


def test_swap_matrix_scale_is_sequential_from_zero_and_rows_align():
    at = open_page("swap")
    open_section(at, "Swap matrix")
    chart = next(c for c in at.get("plotly_chart") if c.key == "swap_matrix")
    figure = json.loads(chart.proto.spec)
    scale = figure["layout"]["coloraxis2"]
    assert scale["cmin"] == 0  # anchored at 0: no error is white
    stops = [stop for _, stop in scale["colorscale"]]
    values = [lightness(c) for c in stops]
    assert all(a > b for a, b in zip(values, values[1:])), values  # darker as the error grows, strictly
    assert chart.proto.theme == ""  # theme=None: Streamlit does not restyle the scale
    heat = next(t for t in figure["data"] if t["type"] == "heatmap" and t.get("coloraxis") == "coloraxis2")
    z = array(heat["z"])
    chosen = at.multiselect(key="swap_matrix_images").value
    k = len(chosen)
    assert z.shape == (k + 1, k + 1) and np.isnan(z[0]).all() and np.isnan(z[:, 0]).all()  # header like the grid
    assert scale["cmax"] >= np.nanmax(z)
    diagonal, off = np.diag(z[1:, 1:]), z[1:, 1:][~np.eye(k, dtype=bool)]
    assert diagonal.max() < off.min()  # own switches reconstruct best: the lightest cells are the outlined diagonal
    outlined = [s for s in figure["layout"]["shapes"] if s["xref"] == "x2"]
    assert sorted(s["x0"] for s in outlined) == [i + 0.5 for i in range(k)]


def test_swap_lens_compares_the_switches_of_one_channel():
    at = open_section(open_page("swap"), "Pooling lens: A's and B's switches")
    lens = next(c for c in at.get("plotly_chart") if c.key == "swap_lens")
    sentence = next(m.value for m in at.markdown if m.value.startswith("Of the "))
    assert "put the switch elsewhere" in sentence
    at.selectbox(key="swap_lens_stage").set_value(1).run()
    ok(at)
    at.selectbox(key="swap_lens_channel").set_value(3).run()
    ok(at)
    assert next(c for c in at.get("plotly_chart") if c.key == "swap_lens").proto.spec != lens.proto.spec
    # B = A: every window where both chose agrees
    at.number_input(key="swap_b_index").set_value(at.number_input(key="swap_a_index").value).run()
    ok(at)
    sentence = next(m.value for m in at.markdown if m.value.startswith("Of the ") or m.value.startswith("Every"))
    assert " 0 (0%) put the switch elsewhere" in sentence or sentence.startswith("Every")


def test_where_mosaic_paints_ties_grey_and_choices_in_colour():
    model = load_checkpoint(ROOT / sidebar.DEFAULT_CHECKPOINT).model
    image = torch.zeros(1, 28, 28)
    image[0, 8:20, 12:16] = 1.0  # a bar on black: large flat regions
    view = layer_views(model, image)[0][0]
    colors, _ = where_mosaic(view.where_offset, view.what, view.pool_size, fade=False, tied=view.tied)
    for channel in range(view.what.shape[0]):
        top, left = colors.origin(channel)
        tile = colors.image[top:top + view.what.shape[1], left:left + view.what.shape[2]]
        tied = view.tied[channel]
        assert np.allclose(tile[tied], TIE_RGB)
        assert not np.isclose(tile[~tied], TIE_RGB).all(axis=-1).any()
    assert 0 < view.tied.mean() < 1


def test_layers_detail_is_drawn_only_when_opened():
    at = open_page("layers")
    closed = len(at.get("image"))
    at.session_state["layers_detail"] = True  # = opening the expander
    at.run()
    ok(at)
    assert len(at.get("image")) == closed + 5  # 3 pre-pool mosaics and 2 decoder-hidden panels
