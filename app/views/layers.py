"""Layers: every stage's pre-pool activations, what, where and decoder hidden for one image, and one unit's view.

Only the open stage tab is drawn (the browser's cost is mostly Plotly figures). A unit (stage, channel) is picked
with the select boxes or by clicking its map in the *what* mosaic; the tab, the click and the select boxes share
the session keys below and keep each other in step through callbacks.
"""
from functools import partial

import numpy as np
import streamlit as st

from app import figures
from app.inputs import Picked, pick_image
from app.sidebar import Explorer, current
from core.analysis import (StageView, channel_peaks, class_probabilities, layer_views, mse, psnr, top_images,
                              unit_decodings, unit_view)
from core.analysis import (
    Tile, crisp_pixels, display_image, mosaic, panel_png, recon_tiles, sequential_rgb, side_by_side, stage_difference,
    tile_rgb, tile_targets, unit_tiles, where_arrows, where_legend, where_mosaic,
)

PANEL_WIDTH = 380  # px a mosaic panel gets in the wide layout, to size figure heights
HIDDEN_TILE_WIDTH = 240  # px a mosaic drawn as a PNG is made at (about its column's width), so titles stay legible
UNIT_SIDE = 112  # px a unit picture is drawn at, model pixels as crisp blocks (28 x 4, 14 x 8, 7 x 16)
TOP_SIDE = 170  # px a top image and its decoding below it are drawn at (3x): nine fit in one row
TOP_COUNT = 9
STAGE_TAB = "layers_stage_tab"  # the open stage tab's label
UNIT_STAGE, UNIT_CHANNEL = "layers_unit_stage", "layers_unit_channel"  # the unit view's select boxes
UNTRAINED_NOTE = ("No class prediction: this model was trained without labels (unsupervised), so its classifier "
                  "head keeps its random initial weights and its class probabilities mean nothing.")


def maps_key(stage: int) -> str:
    return f"layers_maps_{stage}"


def tab_label(view: StageView) -> str:
    return f"Stage {view.stage + 1}: {view.pre_pool.shape[0]} ch, {view.pre_pool.shape[1]} → {view.what.shape[1]}"


# ---- callbacks: run before the script, so the widgets below are created with the new values ----------------------

def _on_tab(labels: list[str]) -> None:
    if st.session_state.get(STAGE_TAB) in labels:
        st.session_state[UNIT_STAGE] = labels.index(st.session_state[STAGE_TAB])


def _on_stage(labels: list[str]) -> None:
    st.session_state[STAGE_TAB] = labels[st.session_state[UNIT_STAGE]]


def _on_map_click(stage: int) -> None:
    """A click on a tile of the what mosaic: that channel becomes the unit. An empty selection (a second click on
    the same tile, a reset) changes nothing."""
    points = st.session_state[maps_key(stage)]["selection"]["points"]
    channels = [p["customdata"] for p in points if "customdata" in p]
    if channels:
        channel = channels[0][0] if isinstance(channels[0], list) else channels[0]
        st.session_state[UNIT_STAGE], st.session_state[UNIT_CHANNEL] = stage, int(channel)


def _settle_unit(channel_counts: list[int]) -> None:
    """Keep the unit's stage and channel inside this model (a model switch can leave them out of range)."""
    stage = st.session_state.get(UNIT_STAGE, 0)
    stage = stage if 0 <= stage < len(channel_counts) else 0
    channel = st.session_state.get(UNIT_CHANNEL, 0)
    st.session_state[UNIT_STAGE] = stage
    st.session_state[UNIT_CHANNEL] = channel if 0 <= channel < channel_counts[stage] else 0


# ---- cached work over the example set -----------------------------------------------------------------------------

@st.cache_data(max_entries=8, show_spinner="Ranking the examples for every channel...")
def _peaks(source: str, step: int, device: str, dataset: str, _model, _images) -> list[np.ndarray]:  # noqa: ARG001
    """channel_peaks of the example set; keyed on the model (source, step: a run's file is rewritten as it trains),
    the device and the dataset."""
    return channel_peaks(_model, _images)


@st.cache_data(max_entries=64, show_spinner=False)
def _top_units(source: str, step: int, device: str, dataset: str, stage: int, channel: int, _model, _images
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices (K,), peaks (K,), unit decodings (K, C, H, W)) of the K examples the unit peaks highest on."""
    peaks = _peaks(source, step, device, dataset, _model, _images)[stage]  # (N, C_l)
    indices = top_images(peaks, channel, TOP_COUNT)
    decodings, _ = unit_decodings(_model, _images[indices], stage, channel)
    return indices, peaks[indices, channel], decodings.float().cpu().numpy()


# ---- the page's parts ---------------------------------------------------------------------------------------------

def overview(explorer: Explorer, picked: Picked, encoding, decoding) -> None:
    """Input, reconstruction, their difference and metrics; class outputs only for a model trained with labels."""
    image, recon = picked.image.numpy(), decoding.recon[0].float().cpu().numpy()
    trained = explorer.checkpoint.classifier_trained
    overview_col, probs_col = st.columns([3, 2])
    overview_col.image(panel_png(recon_tiles(image, recon), 3, scale=6))  # a PNG: cheap for the browser to draw
    recon_mse = mse(decoding.recon, picked.image)
    metrics = iter([*overview_col.columns(2), *overview_col.columns(2)])  # two rows: room for "Ankle boot"
    if trained:
        probabilities = class_probabilities(encoding.logits)[0]
        predicted = int(probabilities.argmax())
        names = explorer.class_names
        next(metrics).metric("Predicted", names[predicted],
                             help=f"label: {picked.label_name}" if picked.label_name is not None else None)
        next(metrics).metric("Confidence", f"{probabilities[predicted]:.1%}")
    next(metrics).metric("Recon MSE", f"{recon_mse:.4f}")
    next(metrics).metric("Recon PSNR", f"{psnr(recon_mse):.1f} dB")
    if trained:
        probs_col.plotly_chart(figures.bar_figure(
            list(explorer.class_names), {"probability": probabilities.tolist()}, height=300,
            title="Class probabilities", y_range=(0, 1), highlight=predicted), key="layers_probs",
            config={"displaylogo": False})
    else:
        probs_col.info(UNTRAINED_NOTE, icon=":material/info:")


def stage_maps(view: StageView, continuous: bool, arrows: bool, fade: bool) -> None:
    """One stage: pre-pool, what (click a tile to open its unit) and where mosaics, the where key, and the decoder
    hidden against the what."""
    pre_pool, what = mosaic(view.pre_pool), mosaic(view.what)
    colors, custom = where_mosaic(view.where_offset, view.what, view.pool_size, fade=fade)
    quiver = where_arrows(view.where_offset, view.pool_size, colors, mask=view.what > 0) if arrows else None
    aspect = max(pre_pool.image.shape[0] / pre_pool.image.shape[1], what.image.shape[0] / what.image.shape[1])

    # The where map is a Plotly panel (hover on each switch, arrows) only with arrows on; otherwise a PNG, cheap to
    # draw. The what map is always Plotly: a click on a tile opens its unit.
    columns = st.columns([5 / 3, 10 / 3, 1] if arrows else [5 / 3, 5 / 3, 5 / 3, 1], vertical_alignment="center")
    pre_col, maps_col, key_col = columns[0], columns[1], columns[-1]
    high = max(float(np.nanmax(pre_pool.image)), 1e-6)  # pre-pool, what and their pictures share one scale
    activation_axis = {"coloraxis": dict(colorscale="Viridis", cmin=0, cmax=high, showscale=arrows,
                                         colorbar=dict(title="value", len=0.8, thickness=12))}
    pre_col.image(panel_png([Tile(f"pre-pool ({view.pre_pool.shape[0]} x {view.pre_pool.shape[1]}^2, 0 to {high:.2g})",
                                  sequential_rgb(pre_pool.image, 0.0, high))], 1,
                            scale=max(1, round(HIDDEN_TILE_WIDTH / pre_pool.image.shape[1]))))
    what_title = f"what ({view.what.shape[1]}^2, pool {view.pool_size}, 0 to {high:.2g})"
    panels = [figures.channel_targets(figures.mosaic_panel(what_title, what), tile_targets(what, view.what))]
    if arrows:
        panels.append(figures.where_panel("where (position in the window)", colors, custom, quiver))
    else:
        columns[2].image(panel_png([Tile("where (position in the window)", colors.image)], 1,
                                   scale=max(1, round(HIDDEN_TILE_WIDTH / colors.image.shape[1]))))
    height = int((PANEL_WIDTH if arrows else 1.15 * HIDDEN_TILE_WIDTH) * aspect) + 50
    maps_col.plotly_chart(figures.panel_figure(panels, columns=len(panels), height=height, coloraxes=activation_axis,
                                               clickable=True),
                          key=maps_key(view.stage), config={"displaylogo": False},
                          on_select=partial(_on_map_click, view.stage), selection_mode=("points",))
    key_col.image(crisp_pixels(where_legend(view.pool_size, continuous), 96), width=96,
                  caption="where key: the window's cells (row, col), (0, 0) top left")
    if continuous:
        key_col.caption("Soft pooling: the where is a continuous (row, col) offset; colours blend between "
                        "the corners.")
    if view.hidden is None:
        st.caption("The top stage's what feeds the classifier and starts the decoder; no hidden state "
                   "reconstructs it.")
        return
    hidden, difference = mosaic(view.hidden), mosaic(stage_difference(view.hidden, view.what))
    hidden_col, metric_col = st.columns([5, 1])
    high = max(float(np.nanmax(what.image)), float(np.nanmax(hidden.image)), 1e-6)
    spread = max(float(np.nanmax(np.abs(difference.image))), 1e-6)
    hidden_col.image(panel_png(
        [Tile(f"encoder what (0 to {high:.2g})", sequential_rgb(what.image, 0.0, high)),
         Tile("decoder hidden (same scale)", sequential_rgb(hidden.image, 0.0, high)),
         Tile(f"hidden - what (±{spread:.2g})", difference.image, signed=True, scale=spread)],
        3, scale=max(1, round(HIDDEN_TILE_WIDTH / what.image.shape[1]))))
    metric_col.metric(f"L2M, stage {view.stage + 1}", f"{view.mid_mse:.4f}",
                      help="Mean squared error of the decoder hidden against the encoder what (the L2M term)")


def stage_tabs(views: list[StageView], continuous: bool, arrows: bool, fade: bool) -> None:
    """A tab per stage; only the open one is drawn (its label follows the unit view's stage)."""
    labels = [tab_label(view) for view in views]
    st.session_state[STAGE_TAB] = labels[st.session_state[UNIT_STAGE]]
    tabs = st.tabs(labels, key=STAGE_TAB, on_change=_on_tab, args=(labels,))
    for tab, view in zip(tabs, views):
        if tab.open:
            with tab:
                stage_maps(view, continuous, arrows, fade)


def unit_section(explorer: Explorer, picked: Picked, views: list[StageView]) -> None:
    """One unit: its maps for this image, what it alone decodes to, and the examples it responds to most."""
    model, examples = explorer.model, explorer.examples
    labels = [tab_label(view) for view in views]
    st.subheader(f"Unit view: stage {st.session_state[UNIT_STAGE] + 1}, channel {st.session_state[UNIT_CHANNEL]}")
    stage_col, channel_col, hint_col = st.columns([1, 1, 3], vertical_alignment="bottom")
    stage = stage_col.selectbox("Stage", range(len(views)), key=UNIT_STAGE, format_func=lambda s: f"stage {s + 1}",
                                on_change=_on_stage, args=(labels,))
    channel = channel_col.selectbox("Channel", range(views[stage].what.shape[0]), key=UNIT_CHANNEL)
    hint_col.caption("Or click a map in the stage's *what* mosaic above. The unit's decoding runs the decoder from "
                     "this stage with only this channel's what kept and the image's own wheres; its contribution "
                     "is that minus the decoding with the whole stage at zero.")
    unit = unit_view(model, picked.image, stage, channel)
    tiles = unit_tiles(unit, views[stage].pool_size)
    maps_col, decode_col = st.columns(2)
    for column, shown in ((maps_col, tiles[:3]), (decode_col, tiles[3:])):
        pictures = [crisp_pixels(tile_rgb(t), UNIT_SIDE) for t in shown]
        column.image(pictures, caption=[t.title for t in shown], width=pictures[0].shape[1], output_format="PNG")
    decode_col.metric("Whole reconstruction MSE", f"{unit.recon_mse:.4f}",
                      help="Mean squared error of the full reconstruction (every unit) against the input")
    if examples is None:
        st.caption("Top images need the example set, which is unavailable.")
        return
    key = (explorer.source, explorer.checkpoint.step, explorer.device, examples.name)
    indices, peaks, decodings = _top_units(*key, stage, channel, model, examples.images)
    st.markdown(f"**Top {len(indices)}** of the {examples.name} examples ({examples.description}) by this unit's "
                "largest what, each above the unit's decoding of it; captions: #index (class): largest what")
    pictures = [crisp_pixels(side_by_side([display_image(examples.images[i].numpy()), display_image(decoded)],
                                          vertical=True), TOP_SIDE) for i, decoded in zip(indices, decodings)]
    st.image(pictures, caption=[f"#{i} ({examples.label_name(i)}): {p:.2f}" for i, p in zip(indices, peaks)],
             width=pictures[0].shape[1], output_format="PNG")  # natural size: crisp pixels


explorer = current()
st.title("Layers")
st.caption(f"{explorer.label}: what each stage keeps (*what*) and where it came from (*where*).")

picked = pick_image(explorer, "layers", "Input")
views, encoding, decoding = layer_views(explorer.model, picked.image)
overview(explorer, picked, encoding, decoding)

options = st.columns(3)
arrows = options[0].toggle("Arrows on the where maps", key="layers_arrows",
                           help="Each switch as an arrow from its cell's centre towards the chosen position; the where "
                                "map then also tells each switch's offset and what on hover (slower to draw)")
fade = options[1].toggle("Fade switches whose what is 0", value=True, key="layers_fade",
                         help="A dead (zero) what picks an arbitrary position; fading it keeps the eye on live ones")
_settle_unit([view.what.shape[0] for view in views])
stage_tabs(views, explorer.checkpoint.model_config.pooling == "soft", arrows, fade)
unit_section(explorer, picked, views)
