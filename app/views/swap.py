"""Swap: decode one image's what with another's where, per stage; the where morph; the swap matrix; and the shift
probe that measures what invariance and where equivariance in comparable terms."""
from functools import partial

import numpy as np
import streamlit as st

from app import figures
from app.inputs import pick_image
from app.address import BIND, keep_window
from app.downloads import chart_config, csv_button, file_name, model_tag, png_button
from app.lens import show_swap_lens, window_key
from app.lines import Line, line_figure
from app.probes import PROBE_SHIFTS, dataset_curves, fingerprint, image_curves
from app.sidebar import NONE_MODELS, current, load_source
from core.model import CheckpointError
from core.analysis import (
    along_axis, busiest_channel, mse, morph_where, paired_lenses, psnr, reconstruct, shift_findings, shift_image,
    swap_findings, swap_matrix, swap_where,
)
from core.analysis import Tile, display_image, panel_png, print_png, swap_grid, swap_tiles
from core.analysis import (decoder_refusal, grey_centred, network_swap_tiles, projects, probe_refusal,
                           projection_tile, window_refusal)

MAX_MATRIX = 8
ROW_NAMES = {"recon_a": "A reconstructed", "recon_b": "B reconstructed", "what_a_where_b": "A's content, B's switches",
             "what_b_where_a": "B's content, A's switches", "no_where_a": "A, switches ignored",
             "no_where_b": "B, switches ignored"}
EMPHASIS = ("A's content, B's switches", "B's content, A's switches")  # the rows the findings quote
LENS_STAGE, LENS_CHANNEL, LENS_KEY = "swap_lens_stage", "swap_lens_channel", "swap_lens"
PROBE_SETS = {"image A (chance: image B)": 1, "50 dataset digits": 50, "200 dataset digits": 200}
AXES = {"right (x)": "x", "down (y)": "y"}
MORPH_STEPS = 21  # t = 0, 0.05, ..., 1
MORPH_RULES = {
    "soft": "Soft where: every continuous switch offset moves a fraction t of the way from A's to B's.",
    "hard": "Hard where: B's switch at a fixed random fraction t of the positions (the same positions at every "
            "larger t), A's elsewhere.",
    "none": "This model ignores where (nearest unpooling), so the morph cannot change its reconstruction.",
}
PROBE_COLUMNS = {
    "stage": lambda r: r.stage + 1, "stride (px)": lambda r: r.stride, "input change": lambda r: r.input_change,
    "pre-pool change": lambda r: r.pre_pool_change, "what change": lambda r: r.what_change,
    "what ÷ pre-pool": lambda r: r.what_per_pre_pool, "what ÷ input": lambda r: r.what_per_input,
    "switches followed": lambda r: r.where_followed, "chance": lambda r: r.where_reference,
    "switches counted": lambda r: r.switches,
}
INTEGER_COLUMNS = ("stage", "stride (px)", "switches counted")
CHART = {"displaylogo": False}

explorer = current()
model, cfg = explorer.model, explorer.checkpoint.model_config
network = projects(cfg)  # a network without a fitted decoder: the deconvnet decodes, its pictures are projections
st.title("Swap")
st.caption(f"{explorer.label}: the decoder gets A's *what* with B's *where* at the ticked stages (and B's what "
           "with A's where). Where decides where the content lands."
           + (" This network has no trained decoder: the deconvnet (its own filters transposed) decodes, so every "
              "picture is a signed projection and every distance is between projections, none against an image."
              if network else ""))

examples = explorer.examples
count = len(examples.images) if examples is not None else 1
col_a, col_b = st.columns(2)
with col_a:  # defaults far apart: the example sets are stored class by class
    a = pick_image(explorer, "swap_a", "Image A", default_index=count * 3 // 10)
with col_b:
    b = pick_image(explorer, "swap_b", "Image B", default_index=count * 7 // 10)

st.markdown("**Take where from B** at stage:")
boxes = st.columns(len(cfg.channels))
stages = [stage for stage, box in enumerate(boxes) if box.checkbox(
    f"stage {stage + 1} ({cfg.stage_sizes[stage]} → {cfg.stage_sizes[stage] // cfg.pool_sizes[stage]})",
    value=True, key=f"swap_where_{stage}", bind=BIND)]


def metric_row(name: str, mse_a: float, mse_b: float) -> dict:
    """One row of the metrics table: a picture's MSE and PSNR against A and against B."""
    return {"image": name, "MSE to A": mse_a, "PSNR to A (dB)": psnr(mse_a), "MSE to B": mse_b,
            "PSNR to B (dB)": psnr(mse_b)}


def none_model_recons():
    """The reconstructions of A and B by the where ablation's `none` model of this model's dataset (a model whose
    file does not name its dataset counts as mnist5k's, as the first shipped models), when it ships and fits."""
    none_source = NONE_MODELS.get(explorer.checkpoint.dataset or "mnist5k")
    if network or cfg.pooling == "none" or none_source is None or explorer.source == none_source:
        return None
    try:
        none_model = load_source(none_source, explorer.device).model
    except CheckpointError:
        return None
    if none_model.input_shape != model.input_shape:
        return None
    return reconstruct(none_model, a.image), reconstruct(none_model, b.image)


def swap_section() -> None:
    """A's what with B's where (and B's with A's), their pictures, the sentences and the table."""
    if (refusal := decoder_refusal(cfg)) is not None:
        st.info(f"No swap pictures: {refusal}. The pooling lens and the shift probe below still compare A's and B's "
                "switches.")
        return
    result = swap_where(model, a.image, b.image, stages)
    if network:
        network_swap_section(result)
    else:
        model_swap_section(result)


def show_findings(result) -> None:
    """The swap's findings in words (core.analysis.swap_findings), or what to tick when no stage is."""
    findings = swap_findings(result, stages)
    if findings:
        st.markdown("\n".join(f"- **{line}**" for line in findings))
    elif not stages:
        st.info("Tick at least one stage to take B's where there; with none ticked, each image keeps its own switches.")


def network_swap_section(result) -> None:
    """A network's swap: projections on signed scales, and distances between projections."""
    show_findings(result)
    tiles = network_swap_tiles(a.image.numpy(), b.image.numpy(), result)
    st.image(panel_png(tiles, 4, scale=max(1, round(140 / a.image.shape[-1]))))
    st.caption("Deconvnet projections of the top stage's what through the switches (Zeiler & Fergus), each on its own "
               "signed scale: *A projected* uses A's own switches, *A's what, B's switches* B's at the ticked stages, "
               "*switches ignored* nearest-neighbour unpooling. Distances: mean squared differences between "
               "projections, in the normalised input's units; a projection is no reconstruction, so no error "
               "against the image is shown.")
    rows = [{"picture": name, "distance to A's projection": result.metrics[key]["mse_a"],
             "distance to B's projection": result.metrics[key]["mse_b"]} for key, name in ROW_NAMES.items()]
    st.table(figures.static_table(rows, {name: "{:.4g}" for name in rows[0] if name != "picture"}))


def model_swap_section(result) -> None:
    """An SWWAE's swap: reconstructions, the 'none' model beside them, MSE and PSNR against the images."""
    show_findings(result)
    tiles = swap_tiles(a.image.numpy(), b.image.numpy(), result)
    trained_without_where = none_model_recons()
    columns = 5
    if trained_without_where is not None:
        columns = 6
        recon_a, recon_b = (display_image(r[0].float().cpu().numpy()) for r in trained_without_where)
        tiles.insert(5, Tile("A by the 'none' model", recon_a))
        tiles.append(Tile("B by the 'none' model", recon_b))
    st.image(panel_png(tiles, columns, scale=5), caption=None)
    no_where_note = ("*switches ignored*: this model's decoder with nearest-neighbour unpooling instead of its "
                     "switches, which it was never trained for. *swapped − reconstructed*: the crossing minus the "
                     "image's own reconstruction (red: brighter, blue: darker).")
    if trained_without_where is not None:
        no_where_note += (" *'none' model*: the where ablation's model, trained to reconstruct without where "
                          f"(`{NONE_MODELS[explorer.checkpoint.dataset or 'mnist5k']}`): the comparison the paper "
                          "makes.")
    st.caption(no_where_note)
    stage_names = "-".join(str(s + 1) for s in stages) or "none"
    parts = (model_tag(explorer.label), f"A-{a.caption}", f"B-{b.caption}", f"stages-{stage_names}")
    figure_col, paper_col, table_col = st.columns(3)
    with figure_col:
        png_button("Download this figure (PNG)", partial(panel_png, tiles, columns),
                   file_name("swap", *parts, ext="png"), "swap_download")
    with paper_col:
        png_button("Figure for a paper (300 dpi, 3.5 in)", partial(print_png, tiles, columns),
                   file_name("swap", *parts, "300dpi", ext="png"), "swap_download_print")
    rows = [metric_row(name, result.metrics[key]["mse_a"], result.metrics[key]["mse_b"])
            for key, name in ROW_NAMES.items()]
    if trained_without_where is not None:
        rows += [metric_row(f"{which} by the 'none' model", mse(recon, a.image), mse(recon, b.image))
                 for which, recon in zip("AB", trained_without_where)]
    table = figures.static_table(rows, {name: "{:.4f}" if "MSE" in name else "{:.2f}"
                                        for name in ("MSE to A", "PSNR to A (dB)", "MSE to B", "PSNR to B (dB)")})
    st.table(figures.emphasised(table, "image", EMPHASIS if stages else ()))
    with table_col:
        csv_button("Download this table (CSV)", {name: [row[name] for row in rows] for name in rows[0]},
                   file_name("swap", *parts, ext="csv"), "swap_table_csv")
    st.caption("Highlighted: the crossings the sentences above compare. A lower MSE (higher PSNR) to B than to A means "
               "the picture looks more like B.")


swap_section()


def where_morph_section() -> None:
    """A's what decoded with wheres moving from A's to B's, and the error to A and to B over the way."""
    if (refusal := decoder_refusal(cfg)) is not None:
        st.info(f"No where morph: {refusal}.")
        return
    morph_col, curve_col = st.columns([2, 3])
    t = morph_col.slider("t: A's where (0) → B's where (1)", 0.0, 1.0, 0.5, 1 / (MORPH_STEPS - 1),
                         key="swap_morph_t", bind=BIND, help="A's what throughout; the wheres of the ticked stages move from "
                                                  "A's to B's")
    morph = morph_where(model, a.image, b.image, np.linspace(0, 1, MORPH_STEPS), stages)
    decoded = morph.recons[int(round(t * (MORPH_STEPS - 1)))].float().cpu().numpy()
    at_t = (projection_tile(f"projected, t = {t:.2f}", decoded) if network
            else Tile(f"what A, where t = {t:.2f}", display_image(decoded)))
    morph_col.image(panel_png([Tile("A", display_image(a.image.numpy())), Tile("B", display_image(b.image.numpy())),
                               at_t], 3, scale=max(1, round(112 / a.image.shape[-1]))))
    morph_col.caption(MORPH_RULES[cfg.pooling] + (" Distances are to A's and B's own deconvnet projections."
                                                  if network else ""))
    against = ("to A's projection", "to B's projection") if network else ("MSE to A", "MSE to B")
    curve_col.plotly_chart(line_figure(
        [Line(against[0], morph.ts.tolist(), morph.mse_to_a.tolist(), 0),
         Line(against[1], morph.ts.tolist(), morph.mse_to_b.tolist(), 1)],
        title="Distance between projections over t" if network else "Reconstruction error over t", x_title="t",
        y_title="mean squared distance" if network else "MSE", height=260, marker_x=t),
        key="swap_morph_curve", config=CHART, theme=None)


def swap_matrix_section() -> None:
    """Every pairing of up to 8 dataset digits' whats and wheres."""
    if examples is None:
        st.info("The swap matrix uses dataset images, and this model has no example set on this machine.")
        return
    if (refusal := decoder_refusal(cfg)) is not None:
        st.info(f"No swap matrix: {refusal}.")
        return
    chosen = st.multiselect(f"{examples.name} images (up to {MAX_MATRIX})", list(range(len(examples.images))),
                            default=sorted({round(i * (count - 1) / 5) for i in range(6)}),
                            max_selections=MAX_MATRIX, key="swap_matrix_images", bind=BIND,
                            format_func=lambda i: f"#{i} ({examples.label_name(i)})")
    if not chosen:
        return
    images = examples.images[chosen]  # (K, C, H, W)
    recons, errors = swap_matrix(model, images, stages)
    decoded = recons.float().cpu().numpy()
    grid = swap_grid(images.numpy(), grey_centred(decoded) if network else decoded)
    labels = [f"#{i} {examples.label_name(i)}" for i in chosen]
    st.caption("Row i: the what of image i (left column); column j: the where of image j (top row), at the ticked "
               "stages. Right: each cell's MSE to its row's image, lighter is closer; the outlined diagonal is each "
               "image's own reconstruction." if not network else
               "Row i: the what of image i (left column); column j: the where of image j (top row), at the ticked "
               "stages; each cell a deconvnet projection on one shared signed scale (mid-grey 0). Right: each cell's "
               "mean squared distance to its row's own projection (the outlined diagonal, 0), lighter is closer.")
    tag = f"images-{'-'.join(str(i) for i in chosen)}"
    st.plotly_chart(figures.swap_matrix_figure(grid, errors, labels), key="swap_matrix", theme=None,
                    config=chart_config(file_name("swap_matrix", model_tag(explorer.label), tag, ext="svg")[:-4]))
    csv_button("Download the MSE matrix (CSV)", {"what of \\ where of": labels,
                                                 **{label: errors[:, j].tolist() for j, label in enumerate(labels)}},
               file_name("swap_matrix", model_tag(explorer.label), tag, ext="csv"), "swap_matrix_csv")
    off = errors[~np.eye(len(chosen), dtype=bool)]
    if off.size and network:
        st.markdown(f"Another image's switches move a projection by a mean squared distance of {off.mean():.4g} on "
                    "average (its own switches: 0, the diagonal).")
    elif off.size:
        st.markdown(f"Own switches (diagonal): MSE {np.diag(errors).mean():.4f} on average; another image's "
                    f"switches: {off.mean():.4f}, {off.mean() / max(np.diag(errors).mean(), 1e-12):.1f}× as large.")


def stage_lines(rows, value: str, reference: str, name: str, reference_name: str) -> list[Line]:
    """One solid line per stage for `value` and one dotted for `reference`, in the stage's colour."""
    lines = []
    for stage in range(len(cfg.channels)):
        mine = [r for r in rows if r.stage == stage]
        x = [r.shift for r in mine]
        lines.append(Line(f"stage {stage + 1} {name}", x, [getattr(r, value) for r in mine], stage))
        lines.append(Line(f"stage {stage + 1} {reference_name}", x, [getattr(r, reference) for r in mine], stage,
                          dashed=True))
    return lines


def probe_table(rows) -> dict[str, list]:
    """The probe's numbers at one shift, a row per stage: what the findings below the table quote."""
    return {name: [value(r) for r in rows] for name, value in PROBE_COLUMNS.items()}


def probe_rows():
    """The shift curves the user asked for: image A against B, or a set of dataset digits against each other."""
    size = PROBE_SETS[st.session_state.get("swap_probe_set", list(PROBE_SETS)[0])]
    if size == 1 or examples is None:
        rows = image_curves(explorer.identity, fingerprint(a.image), fingerprint(b.image), model, a.image, b.image)
        return rows, f"image A ({a.caption}); chance level from image B ({b.caption})"
    rows = dataset_curves(explorer.identity, examples.name, size, model, examples.images)
    return rows, f"{size} {examples.name} digits; chance level from the next digit in the set"


def shift_probe_section() -> None:
    """What invariance and where equivariance per stage, for image A or a set of dataset digits."""
    st.caption("Shift an image and compare, per stage, how much the what changed with how much the map it pools "
               "(pre-pool) and the input changed: a ratio below 1 is change that pooling absorbed. And count the "
               "active switches whose position in the image moved by exactly the shift, next to what a different "
               "image's switches give by chance.")
    if (refusal := probe_refusal(cfg)) is not None:
        st.info(f"No shift probe: {refusal}.")
        return
    settings = st.columns(3)
    settings[0].radio("Measure over", list(PROBE_SETS), key="swap_probe_set", disabled=examples is None, bind=BIND)
    axis = AXES[settings[1].radio("Shift direction", list(AXES), key="swap_probe_axis", horizontal=True, bind=BIND)]
    shift = settings[2].slider("Shift (pixels)", 1, max(PROBE_SHIFTS), 2, key="swap_shift", bind=BIND)
    rows, set_name = probe_rows()
    rows = along_axis(rows, axis)
    dx, dy = (shift, 0) if axis == "x" else (0, shift)

    shifted_col, what_col, where_col = st.columns([1, 2, 2])
    shifted = display_image(shift_image(a.image, dx, dy).numpy())
    shifted_col.image(panel_png([Tile("A", display_image(a.image.numpy())), Tile(f"shifted ({dx}, {dy})", shifted)],
                                1, scale=4))
    what_col.plotly_chart(line_figure(
        stage_lines(rows, "what_per_input", "what_per_pre_pool", "what ÷ input", "what ÷ pre-pool"),
        title="What: change ÷ input's (solid), ÷ pre-pool's (dotted)", x_title="shift (pixels)",
        y_title="ratio of relative changes", marker_x=shift, height=320), key="swap_probe_what", config=CHART,
        theme=None)
    where_col.plotly_chart(line_figure(
        stage_lines(rows, "where_followed", "where_reference", "followed", "chance"),
        title="Where: moved by exactly the shift (dotted: chance)", x_title="shift (pixels)",
        y_title="fraction of active switches", y_range=(0, 1.02), marker_x=shift, height=320),
        key="swap_probe_where", config=CHART, theme=None)
    st.dataframe(probe_table([r for r in rows if r.shift == shift]), hide_index=True, key="swap_probe_table",
                 width="content", column_config={name: st.column_config.NumberColumn(format="%.3f")
                                                 for name in PROBE_COLUMNS if name not in INTEGER_COLUMNS})
    findings = shift_findings(rows, shift)
    st.markdown(f"Over {set_name}, shifted {shift} px {'right' if axis == 'x' else 'down'}:\n\n"
                + "\n".join(f"- {line}" for line in findings))


def lens_section() -> None:
    """One channel's pooling windows for A and B side by side: where their switches differ."""
    stage_col, channel_col = st.columns(2)
    stage = stage_col.selectbox("Stage", range(len(cfg.channels)), key=LENS_STAGE, bind=BIND,
                                format_func=lambda s: f"stage {s + 1}")
    if (refusal := window_refusal(cfg, stage)) is not None:
        st.info(f"No lens: {refusal}.")
        return
    count = cfg.channels[stage]
    if st.session_state.get(LENS_CHANNEL) is None or st.session_state[LENS_CHANNEL] >= count:
        st.session_state[LENS_CHANNEL] = busiest_channel(model, a.image, stage)
    channel = channel_col.selectbox("Channel", range(count), key=LENS_CHANNEL, bind=BIND,
                                    help="Starts on the channel with the most switches (fewest ties) for A")
    lens_a, lens_b, agreement = paired_lenses(model, a.image, b.image, stage, channel)
    keep_window(window_key(LENS_KEY), lens_a.windows)
    show_swap_lens(lens_a, lens_b, agreement, LENS_KEY, svg_name=file_name(
        "swap_lens", model_tag(explorer.label), f"A-{a.caption}", f"B-{b.caption}", f"stage-{stage + 1}",
        f"channel-{channel}", ext="svg")[:-4])


SECTIONS = {"Where morph": where_morph_section, "Pooling lens: A's and B's switches": lens_section,
            "Shift probe: what invariance, where equivariance": shift_probe_section,
            "Swap matrix": swap_matrix_section}
section = st.segmented_control("Explore further", list(SECTIONS), default=list(SECTIONS)[0], key="swap_section",
                               bind=BIND, help="One at a time, so the page stays quick to redraw")
if section is not None:
    SECTIONS[section]()
