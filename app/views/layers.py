"""Layers: one image's input, reconstruction and every stage's what and where first; then the pooling lens of one
channel (app.lens), that unit decoded alone with its top examples, and the pre-pool and decoder-hidden detail.

Only the open stage tab is drawn (the browser's cost is mostly Plotly figures). A unit (stage, channel) is picked
with the select boxes or by clicking its map in the *what* mosaic; the tab, the click and the select boxes share
the session keys below and keep each other in step through callbacks.
"""
from functools import partial

import numpy as np
import streamlit as st

from app import figures
from app.inputs import Picked, pick_image
from app.sidebar import EXPLORER, Explorer, current
from app.address import BIND, adopt, keep_window
from app.downloads import file_name, model_tag, png_button
from app.lens import show_lens, window_key
from app.networks import untrained_note
from core.analysis import (StageView, channel_peaks, class_probabilities, domain_rank, domain_scores, layer_views,
                           mse, pooling_lens, psnr,
                           tie_share, top_images, unit_decodings, unit_view)
from core.analysis import (NO_HIDDEN_NOTE, PROJECTION_NOTE, decoder_refusal, network_unit_tiles, projects,
                           projection_tile, window_refusal)
from core.analysis import (
    Tile, crisp_pixels, display_image, mosaic, outline_tile, panel_png, recon_tiles, sequential_rgb, side_by_side,
    stage_difference, tile_rgb, tile_targets, unit_tiles, where_key_png, where_mosaic, padded_tiles,
)

MOSAIC_WIDTH = 250  # px the what mosaic gets (half the page's right column at 1280 px), to size its figure's height
WHERE_WIDTH = 250  # px the where mosaic PNG is made at (beside the what mosaic)
HIDDEN_TILE_WIDTH = 240  # px a detail mosaic drawn as a PNG is made at, so titles stay legible
DETAIL_WIDTH = 720
MOSAIC_CHART = {"displaylogo": False, "displayModeBar": False}  # the toolbar would cover the title
LENS_KEY = "layers_lens"
PICKED_TAG = "layers_picked_tag"  # the input's caption, for download file names
UNIT_SIDE = 112  # px a unit picture is drawn at, model pixels as crisp blocks (28 x 4, 14 x 8, 7 x 16)
TOP_SIDE = 170  # px a top image and its decoding below it are drawn at (3x): nine fit in one row
TOP_COUNT = 9
MAX_BARS = 10  # a head of more classes (ImageNet's 1,000) shows its most likely ones
STAGE_TAB = "layers_stage_tab"  # the open stage tab's label
UNIT_STAGE, UNIT_CHANNEL = "layers_unit_stage", "layers_unit_channel"  # the unit view's select boxes
UNIT_NETWORK_NOTE = ("The deconvnet decoding of this unit (Zeiler & Fergus): its what alone (every other channel 0) "
                     "put back at this image's switches, rectified and sent through the network's own filters "
                     "transposed, down to the pixels, on a signed scale of its own (one channel: red +, blue −; RGB: "
                     "mid-grey is 0). Beside it, the "
                     "whole top stage projected the same way. A projection, not a reconstruction: no error is "
                     "quoted.")


def picked_tag() -> str:
    """The input as a file-name part: its caption ('#3 (5)', an upload's name), kept by the page's last pick."""
    return st.session_state.get(PICKED_TAG, "input")


def maps_key(stage: int) -> str:
    return f"layers_maps_{stage}"


def tab_label(view: StageView) -> str:
    return f"Stage {view.stage + 1}: {view.pre_pool.shape[0]} maps, {view.pre_pool.shape[1]}² → {view.what.shape[1]}²"


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
    """Keep the unit's stage and channel inside this model (a model switch can leave them out of range); on a
    session's first run, take them from the address that opened it."""
    adopt(UNIT_STAGE, lambda text: int(text.removeprefix("stage ")) - 1)
    adopt(UNIT_CHANNEL, int)
    stage = st.session_state.get(UNIT_STAGE, 0)
    stage = stage if 0 <= stage < len(channel_counts) else 0
    channel = st.session_state.get(UNIT_CHANNEL, 0)
    st.session_state[UNIT_STAGE] = stage
    st.session_state[UNIT_CHANNEL] = channel if 0 <= channel < channel_counts[stage] else 0


# ---- cached work over the example set -----------------------------------------------------------------------------

@st.cache_data(max_entries=8, show_spinner="Ranking the examples for every channel...")
def _peaks(identity: str, dataset: str, _model, _images) -> list[np.ndarray]:  # noqa: ARG001
    """channel_peaks of the example set; keyed on the model's identity (Explorer.identity) and the dataset."""
    return channel_peaks(_model, _images)


@st.cache_data(max_entries=64, show_spinner=False)
def _top_units(identity: str, dataset: str, stage: int, channel: int, _model, _images
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices (K,), peaks (K,), unit decodings (K, C, H, W)) of the K examples the unit peaks highest on."""
    peaks = _peaks(identity, dataset, _model, _images)[stage]  # (N, C_l)
    indices = top_images(peaks, channel, TOP_COUNT)
    decodings, _ = unit_decodings(_model, _images[indices], stage, channel)
    return indices, peaks[indices, channel], decodings.float().cpu().numpy()


@st.cache_data(max_entries=8, show_spinner="Scoring the examples...")
def _example_scores(identity: str, dataset: str, classifier: bool, _model, _images  # noqa: ARG001
                    ) -> dict[str, np.ndarray]:
    """core.analysis.domain_scores of the example set; keyed on the model's identity, the dataset and the head."""
    return domain_scores(_model, _images, classifier=classifier)


def domain_note(explorer: Explorer, picked: Picked) -> None:
    """For an upload or a drawing: its scores ranked against the model's examples, a warning when unlike them."""
    examples = explorer.examples
    if picked.label is not None or examples is None or examples.name != explorer.checkpoint.dataset:
        return  # a dataset image, or examples of another dataset than the model's: nothing to rank against
    if projects(explorer.checkpoint.model_config):
        return  # its scores include a reconstruction error, which a network has not
    classifier = explorer.checkpoint.classifier_trained
    reference = _example_scores(explorer.identity, examples.name, classifier, explorer.model, examples.images)
    mine = domain_scores(explorer.model, picked.image[None], classifier=classifier)
    rank = domain_rank({name: float(values[0]) for name, values in mine.items()}, reference)
    if rank.unlike:
        st.warning(rank.sentence(examples.name), icon=":material/warning:")
    else:
        st.caption(rank.sentence(examples.name))


# ---- the page's parts ---------------------------------------------------------------------------------------------

def overview(explorer: Explorer, picked: Picked, encoding, decoding) -> None:
    """Input, reconstruction and their difference (with its scale), the prediction in one line and a small bar chart
    of the class probabilities (left out for a model trained without labels)."""
    image, cfg = picked.image.numpy(), explorer.checkpoint.model_config
    if projects(cfg):  # no trained decoder: the deconvnet projection on a signed scale, or nothing to decode
        tiles = [Tile("input", display_image(image))]
        if decoding is not None:
            tiles.append(projection_tile("projection", decoding.recon[0].float().cpu().numpy()))
        st.caption(PROJECTION_NOTE if decoding is not None else f"No decoding: {decoder_refusal(cfg)}.")
    else:
        tiles = recon_tiles(image, decoding.recon[0].float().cpu().numpy())
    st.image(panel_png(tiles, len(tiles), scale=max(1, round(84 / image.shape[-1]))))  # a PNG: cheap to draw
    png_button("Download (PNG)", partial(panel_png, tiles, 3, 8),
               file_name("layers", model_tag(explorer.label), picked_tag(), "reconstruction", ext="png"),
               "layers_overview_png")
    error = ""
    if not projects(cfg):
        recon_mse = mse(decoding.recon, picked.image)
        error = f"reconstruction MSE {recon_mse:.4f} (PSNR {psnr(recon_mse):.1f} dB)"
    if not explorer.checkpoint.classifier_trained:
        if error:
            st.markdown(error)
        domain_note(explorer, picked)
        st.caption(untrained_note(explorer.checkpoint))
        return
    probabilities = class_probabilities(encoding.logits)[0]
    predicted = int(probabilities.argmax())
    names = explorer.class_names
    label = f"; label {picked.label_name}" if picked.label_name is not None else ""
    st.markdown(f"Predicted **{names[predicted]}** ({probabilities[predicted]:.1%}{label})" + (f" · {error}" if error
                                                                                             else ""))
    domain_note(explorer, picked)
    shown = np.argsort(-probabilities)[:MAX_BARS] if len(names) > MAX_BARS else np.arange(len(names))  # top ones
    if len(shown) < len(names):
        st.caption(f"The {MAX_BARS} most likely of {len(names)} classes:")
    st.markdown(figures.probability_bars_html([names[i] for i in shown], probabilities[shown].tolist(),
                                              int(np.flatnonzero(shown == predicted)[0])), unsafe_allow_html=True)


def stage_maps(view: StageView, continuous: bool, fade: bool, chosen: int | None) -> None:
    """One stage's what (click a map to open it in the lens) beside its where, the chosen map outlined in both, and
    the where key under them."""
    what = mosaic(view.what)
    high = max(float(np.nanmax(what.image)), 1e-6)
    h, w = view.what.shape[1:]
    panel = figures.channel_targets(figures.mosaic_panel(f"what: {view.what.shape[0]} maps of {h}×{w}", what),
                                    tile_targets(what, view.what))
    height = int(MOSAIC_WIDTH * what.image.shape[0] / what.image.shape[1]) + 75
    figure = figures.panel_figure([panel], columns=1, height=height,
                                  coloraxes={"coloraxis": dict(colorscale="Viridis", cmin=0, cmax=high, showscale=False)},
                                  clickable=True, outline=figures.tile_outline(what, chosen))
    strip = 10 / height  # the colour bar under the mosaic: 10 px high
    figure.update_layout(yaxis=dict(domain=[strip + 34 / height, 1 - 30 / height]), margin=dict(b=4))
    figures.scale_strip(figure, colorscale="Viridis", low=0.0, high=high, title="what", x=[0.05, 0.95],
                        y=[30 / height, 30 / height + strip], vertical=False)
    what_col, where_col = st.columns(2, vertical_alignment="bottom")
    what_col.plotly_chart(figure, key=maps_key(view.stage), config=MOSAIC_CHART, theme=None,
                          on_select=partial(_on_map_click, view.stage), selection_mode=("points",))
    refusal = window_refusal(st.session_state[EXPLORER].checkpoint.model_config, view.stage)
    if refusal is not None:  # overlapping or padded windows: no cell of a tiling window to colour
        where_col.info(f"No where map: {refusal}.")
        return
    colors, _ = where_mosaic(view.where_offset, view.what, view.pool_size, fade=fade, tied=view.tied)
    picture = colors.image if chosen is None else outline_tile(colors, colors.image, chosen)
    where_tile = [Tile(f"where: {tie_share(view.tied):.0%} of windows tie", picture)]
    where_col.image(panel_png(where_tile, 1, scale=max(1, round(WHERE_WIDTH / colors.image.shape[1]))))
    key_col, text_col = st.columns([2, 3], vertical_alignment="center")
    key_col.image(where_key_png(view.pool_size, continuous, fade))
    with key_col:
        png_button("Where map (PNG)", partial(panel_png, where_tile, 1, 8),
                   file_name("layers", model_tag(st.session_state[EXPLORER].label), picked_tag(),
                             f"stage-{view.stage + 1}", "where", ext="png"), f"layers_where_png_{view.stage}")
    text_col.caption(f"Each what map is pooled {view.pool_size}×{view.pool_size} from a {view.pre_pool.shape[1]}×"
                     f"{view.pre_pool.shape[2]} map; the where map beside it colours each window by the cell its "
                     "value came from. A tie (grey) is a window whose largest value occurs more than once (most often "
                     "all 0): max pooling then returns its first cell, which is no choice of the network. Click a "
                     "what map to see it in the lens below."
                     + (" Soft pooling: colours blend between the corners." if continuous else ""))


def stage_tabs(views: list[StageView], continuous: bool, fade: bool) -> None:
    """A tab per stage; only the open one is drawn (its label follows the lens's stage)."""
    labels = [tab_label(view) for view in views]
    st.session_state[STAGE_TAB] = labels[st.session_state[UNIT_STAGE]]
    tabs = st.tabs(labels, key=STAGE_TAB, on_change=_on_tab, args=(labels,))
    for tab, view in zip(tabs, views):
        if tab.open:
            with tab:
                chosen = st.session_state[UNIT_CHANNEL] if view.stage == st.session_state[UNIT_STAGE] else None
                stage_maps(view, continuous, fade, chosen)


def lens_section(explorer: Explorer, encoding, views: list[StageView]) -> None:
    """The pooling lens of the chosen stage and channel."""
    labels = [tab_label(view) for view in views]
    st.subheader(f"Pooling lens: stage {st.session_state[UNIT_STAGE] + 1}, channel {st.session_state[UNIT_CHANNEL]}")
    stage_col, channel_col, hint_col = st.columns([1, 1, 3], vertical_alignment="bottom")
    stage = stage_col.selectbox("Stage", range(len(views)), key=UNIT_STAGE, format_func=lambda s: f"stage {s + 1}", bind=BIND,
                                on_change=_on_stage, args=(labels,))
    channel = channel_col.selectbox("Channel", range(views[stage].what.shape[0]), key=UNIT_CHANNEL, bind=BIND)
    hint_col.caption("Or click a map in the *what* mosaic above. Max pooling reads each window of the map on the "
                     "left and passes one value up (*what*); the cell it came from is the *switch* (*where*), which "
                     "the decoder uses to put the value back (*unpooled*).")
    cfg = explorer.checkpoint.model_config
    if (refusal := window_refusal(cfg, stage)) is not None:
        st.info(f"No lens: {refusal}.")
        return
    lens = pooling_lens(encoding, cfg.pooling, cfg.pool_sizes[stage], stage, channel)
    keep_window(window_key(LENS_KEY), lens.windows)
    show_lens(lens, LENS_KEY, svg_name=file_name("lens", model_tag(explorer.label), picked_tag(),
                                                 f"stage-{stage + 1}", f"channel-{channel}", ext="svg")[:-4])


def unit_section(explorer: Explorer, picked: Picked, views: list[StageView]) -> None:
    """The chosen unit decoded alone through the image's wheres, and the examples it responds to most."""
    model, examples = explorer.model, explorer.examples
    stage, channel = st.session_state[UNIT_STAGE], st.session_state[UNIT_CHANNEL]
    network = projects(explorer.checkpoint.model_config)  # its decodings are projections
    st.subheader(f"Unit view: stage {stage + 1}, channel {channel} decoded alone")
    if (refusal := decoder_refusal(explorer.checkpoint.model_config)) is not None:
        st.info(f"No unit decoding: {refusal}.")
        return
    unit = unit_view(model, picked.image, stage, channel)
    tiles = network_unit_tiles(unit) if network else unit_tiles(unit, views[stage].pool_size)[3:]  # maps: the lens
    pictures = [crisp_pixels(tile_rgb(t), UNIT_SIDE) for t in tiles]
    pictures_col, text_col = st.columns([3, 2])
    pictures_col.image(pictures, caption=[t.title for t in tiles], width=pictures[0].shape[1], output_format="PNG")
    text_col.caption(UNIT_NETWORK_NOTE if network else
                     "The decoder run from this stage with only this channel's what kept (the others 0) and the "
                     "image's own wheres; its contribution is that minus the decoding with the whole stage at 0 "
                     f"(red: adds, blue: removes). Whole reconstruction MSE {unit.recon_mse:.4f}.")
    if examples is None:
        st.caption("Top images need the example set, which is unavailable.")
        return
    indices, peaks, decodings = _top_units(explorer.identity, examples.name, stage, channel, model, examples.images)
    st.markdown(f"**Top {len(indices)}** of the {examples.name} examples ({examples.description}) by this unit's "
                "largest what, each above the unit's decoding of it; captions: #index (class): largest what")
    decoded_rgb = ((lambda d: tile_rgb(projection_tile("", d))) if network else display_image)  # noqa: E731
    top_tiles = [Tile(f"#{i} ({examples.label_name(i)}): {p:.2f}", side_by_side(
        [tile_rgb(Tile("", display_image(examples.images[i].numpy()))), decoded_rgb(decoded)], vertical=True)
        if network else side_by_side([display_image(examples.images[i].numpy()), display_image(decoded)],
                                     vertical=True))
        for i, decoded, p in zip(indices, decodings, peaks)]
    pictures = [crisp_pixels(tile.image, TOP_SIDE) for tile in top_tiles]
    st.image(pictures, caption=[tile.title for tile in top_tiles], width=pictures[0].shape[1],
             output_format="PNG")  # natural size: crisp pixels
    png_button("These pictures (PNG)",
               lambda: panel_png(padded_tiles(tiles + top_tiles), 6, 6),
               file_name("unit", model_tag(explorer.label), picked_tag(), f"stage-{stage + 1}", f"channel-{channel}",
                         ext="png"), "layers_unit_png")


def stage_detail(views: list[StageView]) -> None:
    """Every stage's pre-pool maps and the decoder's hidden state against the what it reconstructs (L2M)."""
    if any(view.hidden is None for view in views[:-1]):  # a network: no decoder, so no hidden state anywhere
        st.caption(NO_HIDDEN_NOTE)
    for view in views:
        pre_pool = mosaic(view.pre_pool)
        high = max(float(np.nanmax(pre_pool.image)), 1e-6)
        c, height, width = view.pre_pool.shape
        tiles = [Tile(f"stage {view.stage + 1} pre-pool: {c} maps of {height}×{width}, 0 to {high:.2g}",
                      sequential_rgb(pre_pool.image, 0.0, high))]
        st.image(panel_png(tiles, 1, scale=max(1, round(DETAIL_WIDTH / pre_pool.image.shape[1]))))
        if view.hidden is None and view.stage < len(views) - 1:
            continue
        if view.hidden is None:
            st.caption(f"Stage {view.stage + 1} is the top: its what feeds the classifier and starts the decoder; "
                       "no hidden state reconstructs it.")
            continue
        what, hidden = mosaic(view.what), mosaic(view.hidden)
        difference = mosaic(stage_difference(view.hidden, view.what))
        high = max(float(np.nanmax(what.image)), float(np.nanmax(hidden.image)), 1e-6)
        spread = max(float(np.nanmax(np.abs(difference.image))), 1e-6)
        st.image(panel_png(
            [Tile(f"encoder what (0 to {high:.2g})", sequential_rgb(what.image, 0.0, high)),
             Tile("decoder hidden (same scale)", sequential_rgb(hidden.image, 0.0, high)),
             Tile(f"hidden − what (L2M {view.mid_mse:.4f})", difference.image, signed=True, scale=spread)],
            3, scale=max(1, round(HIDDEN_TILE_WIDTH / what.image.shape[1]))))


explorer = current()
st.title("Layers")
st.caption(f"{explorer.label}: what each stage keeps (*what*) and where it came from (*where*).")
top_left, top_right = st.columns([0.37, 0.63], gap="medium")
with top_left:
    picked = pick_image(explorer, "layers", "Input")
    st.session_state[PICKED_TAG] = picked.caption
    views, encoding, decoding = layer_views(explorer.model, picked.image)
    overview(explorer, picked, encoding, decoding)
_settle_unit([view.what.shape[0] for view in views])
with top_right:
    fade = st.toggle("Fade switches whose what is near 0", value=True, key="layers_fade",
                     help="A weak switch carries little of the image; fading it keeps the eye on the strong ones")
    stage_tabs(views, explorer.checkpoint.model_config.pooling == "soft", fade)
lens_section(explorer, encoding, views)
unit_section(explorer, picked, views)
detail = st.expander("Pre-pool maps, and each stage's decoder hidden state against its what (the L2M term)",
                      key="layers_detail", on_change="rerun")
if detail.open:  # drawn only when opened: its large pictures would otherwise cost every click
    with detail:
        stage_detail(views)
