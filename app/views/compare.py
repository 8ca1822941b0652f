"""Compare: the sidebar's model (A) and any other checkpoint or snapshot (B) on one input, side by side: per stage
what, where and decoder hidden, both reconstructions and predictions, the shift probe of each, and (same
architecture) A's what decoded with B's where. Every figure comes from the functions Layers and Swap use.

Model B opens on one that differs from A in one thing wherever there is one (core.analysis.default_partner: the where
ablation's hard <-> none <-> soft, a run's checkpoint <-> its earlier snapshot), chosen again when A's file changes
until B is picked by hand; the page says in one line what A and B differ in, and which differences a comparison mixes.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import streamlit as st

from app import figures
from app.address import BIND
from app.downloads import csv_button, file_name, model_tag, png_button
from app.inputs import pick_image
from app.probes import PROBE_SHIFTS, dataset_curves, fingerprint, image_curves
from app.scrub import run_folder, snapshot_options
from app.networks import NETWORKS
from app.sidebar import (MODEL_CHOICE, NONE_MODELS, SHIPPED_MODELS, UPLOADS, Explorer, at_chosen_step, current,
                         file_identity, find_checkpoints, load_identified, path_of, source_label)
from core.analysis import (
    ModelTraits, Tile, along_axis, check_viewable, compare_findings, cross_refusal, cross_where, default_partner,
    difference_tile, differences_sentence, display_image, model_differences, model_figures, model_traits, mosaic,
    padded_tiles, panel_png, print_png, probe_at, probe_findings, sequential_rgb, shared_scale, tie_share, where_key_png,
    where_mosaic,
)
from core.analysis import picture_tile, projects, probe_refusal, window_refusal
from core.model import CheckpointError, load_checkpoint

MODEL_B, B_STEP = "compare_b", "compare_b_step"
B_DEFAULT_FOR = "compare_b_default_for"  # A's file the default B was chosen for; "" once B is picked by hand
STAGE_TAB, CROSS_STAGES = "compare_stage_tab", "compare_cross_{}"
PROBE_SET, PROBE_SHIFT, PROBE_AXIS = "compare_probe_set", "compare_probe_shift", "compare_probe_axis"
PROBE_SETS = {"50 dataset images": 50, "this input (chance: another dataset image)": 1}  # the first: computed
# once per model, so a new input costs nothing here
AXES = {"right (x)": "x", "down (y)": "y"}
TILE_WIDTH = 250  # px a mosaic is drawn at: three side by side fill the page's main column
RECON_SCALE = 5


@st.cache_data(max_entries=128, show_spinner=False)
def _file_traits(path: str, identity: str, run: str | None) -> ModelTraits | None:  # noqa: ARG001 - identity: key
    """What a checkpoint file is (core.analysis.model_traits), None when it cannot load; read once per version of the
    file (`identity`: sidebar.file_identity), without touching the explorer's model cache."""
    try:
        return model_traits(load_checkpoint(path), run=run)
    except (CheckpointError, OSError):
        return None


def _run_of(source: str) -> str | None:
    path = path_of(source)
    run = run_folder(path) if path is not None else None
    return None if run is None else str(run)


def _traits_of(source: str) -> ModelTraits | None:
    path = path_of(source)
    try:
        return None if path is None else _file_traits(str(path), file_identity(path), _run_of(source))
    except OSError:  # gone since it was listed
        return None


def default_b(explorer: Explorer, a_file: str, sources: list[str]) -> tuple[str, int | None]:
    """Model B's source and snapshot step (None: the file itself) to open on for A (`explorer`, a chosen step of
    `a_file`): core.analysis.default_partner over the shipped checkpoints and A's run's files and snapshots, with the
    where ablation's `none` model, then the shipped model, of A's dataset as the fallbacks."""
    a_run = _run_of(a_file)
    a = model_traits(explorer.checkpoint, run=a_run)
    nearby = [s for s in sources if s.startswith("checkpoints/") or (a_run is not None and _run_of(s) == a_run)]
    candidates = {s: traits for s in nearby if (traits := _traits_of(s)) is not None}
    snapshots = {}
    if a_run is not None and (a_file_traits := _traits_of(a_file)) is not None:
        options, _ = snapshot_options(Path(a_run), a_file_traits.step)
        snapshots = {step: path for step, path in options.items() if path is not None}

    def shows(step: int) -> bool:  # the snapshot loads and takes A's inputs (else the page would refuse it)
        path = snapshots[step]
        try:
            traits = _file_traits(str(path), file_identity(path), a_run)
        except OSError:
            return False
        return traits is not None and (traits.config.in_channels, traits.config.image_size) == (
            a.config.in_channels, a.config.image_size)

    partner = default_partner(a, candidates, a_file=a_file if snapshots else None, snapshot_steps=list(snapshots),
                              shows=shows, fallbacks=[NONE_MODELS.get(a.dataset), SHIPPED_MODELS.get(a.dataset)])
    if partner is not None:
        return partner.source, partner.step
    return next((s for s in sources if s != a_file), sources[0]), None


def _picked_by_hand() -> None:
    st.session_state[B_STEP] = None
    st.session_state[B_DEFAULT_FOR] = ""


def pick_model_b(explorer: Explorer) -> Explorer:
    """Model B's selectbox (and its run's step slider); stops the page, saying why in one line, when it cannot
    load or cannot be explored here."""
    sources = list(dict.fromkeys([*find_checkpoints(), *st.session_state.get(UPLOADS, {}),
                                  *st.session_state.get(NETWORKS, {})]))
    a_file = st.session_state.get(MODEL_CHOICE, explorer.source)  # A's file (explorer: its chosen step's model)
    if st.session_state.get(MODEL_B) not in sources or st.session_state.get(B_DEFAULT_FOR) not in ("", a_file):
        st.session_state[MODEL_B], st.session_state[B_STEP] = default_b(explorer, a_file, sources)
        st.session_state[B_DEFAULT_FOR] = a_file
    st.selectbox("Model B", sources, key=MODEL_B, format_func=source_label, on_change=_picked_by_hand, bind=BIND,
                 help="Any checkpoint under checkpoints/ or runs/*/, or one uploaded in the sidebar; a run's "
                      "checkpoint gets a step slider over its snapshots.")
    source = st.session_state[MODEL_B]
    try:
        checkpoint, identity = load_identified(source, explorer.device)
        check_viewable(checkpoint.model_config)
    except CheckpointError as exc:
        st.error(f"Could not load {source_label(source)} as model B: {exc}")
        st.stop()
    b = Explorer(source, source_label(source), checkpoint, explorer.device, explorer.examples, identity)
    return at_chosen_step(b, B_STEP, "Model B's training step")


def stage_tiles(view, high_what: float | None, name: str, refusal: str | None = None) -> list[Tile]:
    """One model's stage: what, where (coloured by the switch's cell in its window, ties grey, faded as the what goes
    to 0) and decoder hidden (a blank tile at the top stage), what and hidden on one colour scale (`high_what`, shared
    with the other model when the shapes match)."""
    what = mosaic(view.what)
    high = high_what if high_what is not None else max(float(np.nanmax(what.image)), 1e-6)
    blank = np.full((*what.image.shape, 3), np.nan)
    if refusal is None:
        colors, _ = where_mosaic(view.where_offset, view.what, view.pool_size, fade=True, tied=view.tied)
        where = Tile(f"{name}: where ({tie_share(view.tied):.0%} of windows tie)", colors.image)
    else:  # overlapping or padded windows: no tiling cell to colour (said under the pictures)
        where = Tile(f"{name}: no where map", blank)
    hidden = (Tile(f"{name}: decoder hidden", sequential_rgb(mosaic(view.hidden).image, 0.0, high))
              if view.hidden is not None else Tile("", blank))
    return [Tile(f"{name}: what (0 to {high:.2g})", sequential_rgb(what.image, 0.0, high)), where, hidden]


def stage_shapes(view, name: str) -> str:
    """'A: 32 maps of 14×14, pooled 2×2 from 28×28'."""
    count, h, w = view.what.shape
    return (f"{name}: {count} maps of {h}×{w}, pooled {view.pool_size}×{view.pool_size} from "
            f"{view.pre_pool.shape[1]}×{view.pre_pool.shape[2]}")


def where_key(views: list, poolings: list[str]) -> None:
    """The where key beside the stage's pictures, and the tie rule in one line (with what each model's pooling kind
    does to its where, when that differs from plain max pooling)."""
    soft = [p == "soft" for p in poolings]
    key_col, text_col = st.columns([1, 2], vertical_alignment="center")
    key_col.image(where_key_png(views[0].pool_size, continuous=all(soft), fade=True))
    notes = {"soft": "soft pooling's where is a continuous position, its colour blended between the cells'",
             "none": "its decoder ignores the switches (the where ablation's none)"}
    kinds = [f"{name} ({pooling}): {notes[pooling]}" for name, pooling in zip("AB", poolings) if pooling in notes]
    text_col.caption("Where key. Grey: a tie, a window whose largest value occurs more than once (most often all 0), "
                     "so its switch is no choice of the network; dark: a switch whose what is near 0."
                     + "".join(f" {kind}." for kind in kinds))


def stage_section(fig_a, fig_b, poolings: list[str], configs: list) -> None:
    """A tab per stage (only the open one drawn): A's row over B's, the where key under them."""
    count = max(len(fig_a.views), len(fig_b.views))
    labels = [f"Stage {s + 1}" for s in range(count)]
    tabs = st.tabs(labels, key=STAGE_TAB, on_change="rerun")  # lazy: only the open tab runs
    for stage, tab in enumerate(tabs):
        if not tab.open:
            continue
        with tab:
            va = fig_a.views[stage] if stage < len(fig_a.views) else None
            vb = fig_b.views[stage] if stage < len(fig_b.views) else None
            high = shared_scale(va.what, vb.what) if va is not None and vb is not None else None
            if va is not None and vb is not None and va.hidden is not None and vb.hidden is not None and high:
                high = max(high, shared_scale(va.hidden, vb.hidden) or 0.0)
            shown = [(view, name) for view, name in ((va, "A"), (vb, "B")) if view is not None]
            missing = [name for view, name in ((va, "A"), (vb, "B")) if view is None]
            st.caption("; ".join(stage_shapes(view, name) for view, name in shown)
                       + (". What and decoder hidden on one colour scale for A and B." if high is not None else
                          ". Their stages differ in shape: each is drawn on its own colour scale.")
                       + (f" {missing[0]} has no stage {stage + 1}." if missing else ""))
            refusals = {name: window_refusal(configs["AB".index(name)], stage) for _, name in shown}
            tiles = padded_tiles([t for view, name in shown for t in stage_tiles(view, high, name, refusals[name])])
            st.image(panel_png(tiles, 3, scale=max(1, round(TILE_WIDTH / tiles[0].image.shape[1]))))  # A over B
            for name, refusal in refusals.items():
                if refusal is not None:
                    st.caption(f"{name}: no where map: {refusal}.")
            where_key([view for view, _ in shown], [poolings["AB".index(name)] for _, name in shown])


def overview(a: Explorer, b: Explorer, picked, fig_a, fig_b) -> None:
    """Input and both reconstructions, and a table of their MSE / PSNR and each model's top classes (a picture per
    figure and one static table: cheap for the browser to redraw when the input changes)."""
    image = picked.image.numpy()
    pictures_col, table_col = st.columns([3, 2])
    tiles = [Tile("input", display_image(image)), decoded_tile(a, "A", fig_a), decoded_tile(b, "B", fig_b)]
    if not (projects(a.checkpoint.model_config) or projects(b.checkpoint.model_config)):
        tiles.append(difference_tile("B − A (red: B brighter)", fig_b.recon, fig_a.recon))
    else:
        pictures_col.caption("A network has no trained decoder: its picture is the deconvnet projection of its top "
                             "stage (Zeiler & Fergus), on a signed scale, and it has no reconstruction error (–).")
    pictures_col.image(panel_png(tiles, 4, scale=max(1, round(RECON_SCALE * 28 / image.shape[-1]))))
    parts = (f"A-{model_tag(a.label)}", f"B-{model_tag(b.label)}", picked.caption)
    png_col, print_col, csv_col = pictures_col.columns(3)
    with png_col:
        png_button("Download (PNG)", partial(panel_png, tiles, 4, 8), file_name("compare", *parts, ext="png"),
                   "compare_png")
    with print_col:
        png_button("For a paper (300 dpi)", partial(print_png, tiles, 4),
                   file_name("compare", *parts, "300dpi", ext="png"), "compare_print_png")
    rows = []
    for name, explorer, fig, names in (("A", a, fig_a, a.class_names), ("B", b, fig_b, b.class_names)):
        if fig.probabilities is not None:
            top = np.argsort(fig.probabilities)[::-1][:3]
            classes = ", ".join(f"{names[i]} {fig.probabilities[i]:.0%}" for i in top)
        else:
            classes = "trained without labels"
        rows.append({"model": name, "recon MSE": fig.recon_mse, "PSNR (dB)": fig.recon_psnr, "top classes": classes})
    table_col.table(figures.static_table(rows, {"recon MSE": "{:.4f}", "PSNR (dB)": "{:.2f}"}))
    with csv_col:
        csv_button("Table (CSV)", {name: [row[name] for row in rows] for name in rows[0]},
                   file_name("compare", *parts, ext="csv"), "compare_csv")


def decoded_tile(explorer: Explorer, name: str, figures_of) -> Tile:
    """A model's decoding of the input: an SWWAE's reconstruction, a network's projection, or a blank tile."""
    if figures_of.recon is None:
        return Tile(f"{name}: no decoding", np.full(figures_of.views[0].pre_pool.shape[1:], np.nan))
    cfg = explorer.checkpoint.model_config
    return picture_tile(cfg, f"{name}: {'projection' if projects(cfg) else 'reconstruction'}", figures_of.recon)


def cross_section(a: Explorer, b: Explorer, picked):
    """A's what with B's where at the ticked stages; None (and the reason) when their wheres do not fit."""
    refusal = cross_refusal(a.checkpoint.model_config, b.checkpoint.model_config)
    if refusal is not None:
        st.caption(f"A's what with B's where needs two models of the same architecture: {refusal}.")
        return None
    cfg = a.checkpoint.model_config
    st.markdown("**A's what with B's where** at stage:")
    boxes = st.columns(len(cfg.channels))
    stages = [s for s, box in enumerate(boxes) if box.checkbox(f"stage {s + 1}", value=True,
                                                               key=CROSS_STAGES.format(s))]
    crossed = cross_where(a.model, b.model, picked.image, stages)
    st.image(panel_png([Tile("input", display_image(picked.image.numpy())),
                        picture_tile(cfg, "A's own where", crossed.own_recon),
                        picture_tile(cfg, "A's what, B's where", crossed.recon)], 3,
                       scale=max(1, round(RECON_SCALE * 28 / picked.image.shape[-1]))))
    return crossed


def probe_rows(explorer: Explorer, picked, size: int):
    """The Swap page's shift curves of this model (the same cached function): the input against another dataset
    image, or `size` of A's dataset images (both models are measured on the same images)."""
    examples = explorer.examples
    if size == 1 or examples is None:
        reference = chance_image(examples, picked)
        return image_curves(explorer.identity, fingerprint(picked.image), fingerprint(reference), explorer.model,
                            picked.image, reference)
    return dataset_curves(explorer.identity, examples.name, size, explorer.model, examples.images)


def chance_image(examples, picked):
    """The image whose switches give the chance level for the input: the middle dataset image (the first when the
    input is that image); the input itself when there is no dataset (chance then reads as following)."""
    if examples is None:
        return picked.image
    middle = examples.images[len(examples.images) // 2]
    return examples.images[0] if fingerprint(middle) == fingerprint(picked.image) else middle


def probe_section(a: Explorer, b: Explorer, picked) -> None:
    """Both models' shift-probe figures at one shift, a row per stage, and what differs."""
    refusals = [f"{name}: {refusal}" for name, model in (("A", a), ("B", b))
                if (refusal := probe_refusal(model.checkpoint.model_config)) is not None]
    if refusals:
        st.info("No shift probe for " + "; ".join(refusals) + ".")
        return
    st.caption("Per stage and model, on the same images: how much the what changes per unit of input change (what ÷ "
               "input; below 1: pooling absorbed part of the shift), and the share of active switches that moved by "
               "exactly the shift next to what another image's switches give by chance (the Swap page's probe).")
    settings = st.columns(3)
    choices = list(PROBE_SETS) if a.examples is not None else list(PROBE_SETS)[1:]  # no dataset: the input alone
    if st.session_state.get(PROBE_SET) not in choices:
        st.session_state[PROBE_SET] = choices[0]
    size = PROBE_SETS[settings[0].radio("Measure over", choices, key=PROBE_SET, bind=BIND)]
    axis = AXES[settings[1].radio("Shift direction", list(AXES), key=PROBE_AXIS, horizontal=True, bind=BIND)]
    shift = settings[2].slider("Shift (pixels)", 1, max(PROBE_SHIFTS), 2, key=PROBE_SHIFT, bind=BIND)
    at_a = probe_at(along_axis(probe_rows(a, picked, size), axis), shift)
    at_b = probe_at(along_axis(probe_rows(b, picked, size), axis), shift)
    stages = sorted(set(at_a) | set(at_b))
    value = lambda rows, s, name: getattr(rows[s], name) if s in rows else None  # noqa: E731
    table = {"stage": [s + 1 for s in stages]}
    for name, rows in (("A", at_a), ("B", at_b)):
        table[f"{name} what ÷ input"] = [value(rows, s, "what_per_input") for s in stages]
        table[f"{name} switches followed"] = [value(rows, s, "where_followed") for s in stages]
        table[f"{name} chance"] = [value(rows, s, "where_reference") for s in stages]
    st.table(figures.static_table(table, {name: "{:.3f}" for name in table if name != "stage"}))
    findings = probe_findings(at_a, at_b)
    if findings:
        st.markdown("\n".join(f"- {line}" for line in findings))


explorer = current()
st.title("Compare")
st.caption("Model A is the sidebar's; model B any other checkpoint or a run's snapshot. One input feeds both.")
picker_col, input_col = st.columns(2)
with picker_col:
    model_b = pick_model_b(explorer)
with input_col:
    picked = pick_image(explorer, "compare", "Input")
if model_b.model.input_shape != explorer.model.input_shape:
    st.warning(f"B takes {'×'.join(map(str, model_b.model.input_shape))} inputs and A "
               f"{'×'.join(map(str, explorer.model.input_shape))}: choose a model B of A's input shape.")
    st.stop()
a_file, b_file = st.session_state.get(MODEL_CHOICE, explorer.source), st.session_state[MODEL_B]
b_label = (f"{source_label(b_file)} at step {model_b.checkpoint.step:,}, an earlier snapshot of A's run"
           if b_file == a_file and model_b.source != b_file and model_b.checkpoint.step < explorer.checkpoint.step
           else model_b.label)
st.caption(f"**A**: {explorer.label} · **B**: {b_label}")
st.markdown(differences_sentence(model_differences(model_traits(explorer.checkpoint, run=_run_of(a_file)),
                                                   model_traits(model_b.checkpoint, run=_run_of(b_file)))))

fig_a = model_figures(explorer.model, picked.image, classifier_trained=explorer.checkpoint.classifier_trained)
fig_b = model_figures(model_b.model, picked.image, classifier_trained=model_b.checkpoint.classifier_trained)
overview(explorer, model_b, picked, fig_a, fig_b)
st.subheader("Stages")
configs = [explorer.checkpoint.model_config, model_b.checkpoint.model_config]
stage_section(fig_a, fig_b, [cfg.pooling for cfg in configs], configs)
st.subheader("Where across models")
crossed = cross_section(explorer, model_b, picked)
st.markdown("\n".join(f"- {line}" for line in compare_findings(fig_a, fig_b, explorer.class_names, model_b.class_names,
                                                                crossed)))
st.subheader("Shift probe")
probe_section(explorer, model_b, picked)
