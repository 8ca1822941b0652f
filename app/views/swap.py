"""Swap: decode one image's what with another's where, per stage; the swap matrix; the translation probe."""
from functools import partial

import streamlit as st

from app import figures
from app.inputs import pick_image
from app.sidebar import current
from core.experiments import shift_image, swap_matrix, swap_where, translation_probe
from core.render import display_image, panel_png, swap_grid, swap_tiles

MAX_MATRIX = 8
ROW_NAMES = {"recon_a": "recon(A)", "recon_b": "recon(B)", "what_a_where_b": "what A + where B",
             "what_b_where_a": "what B + where A", "no_where_a": "no-where recon(A)", "no_where_b": "no-where recon(B)"}
CHART = {"displaylogo": False}

explorer = current()
model, cfg = explorer.model, explorer.checkpoint.model_config
st.title("Swap")
st.caption(f"{explorer.label}: the decoder gets A's *what* with B's *where* at the ticked stages (and B's what "
           "with A's where). Where decides where the content lands.")

count = len(explorer.examples.images) if explorer.examples is not None else 1
col_a, col_b = st.columns(2)
with col_a:  # defaults far apart: the example sets are stored class by class
    a = pick_image(explorer, "swap_a", "Image A", default_index=count * 3 // 10)
with col_b:
    b = pick_image(explorer, "swap_b", "Image B", default_index=count * 7 // 10)

st.markdown("**Take where from B** at stage:")
boxes = st.columns(len(cfg.channels))
stages = [stage for stage, box in enumerate(boxes) if box.checkbox(
    f"stage {stage + 1} ({cfg.stage_sizes[stage]} → {cfg.stage_sizes[stage] // cfg.pool_sizes[stage]})",
    value=True, key=f"swap_where_{stage}")]

result = swap_where(model, a.image, b.image, stages)
tiles = swap_tiles(a.image.numpy(), b.image.numpy(), result)
panels = [figures.signed_panel(t.title, t.image) if t.signed else figures.gray_panel(t.title, t.image) for t in tiles]
st.plotly_chart(figures.panel_figure(
    panels, columns=5, height=470,
    coloraxes={"coloraxis": dict(colorscale=figures.GRAY, cmin=0, cmax=1, showscale=False),
               "coloraxis2": dict(colorscale=figures.SIGNED, cmid=0,
                                  colorbar=dict(title="diff", len=0.6, thickness=12))}),
    key="swap_panel", config=CHART)
stage_names = "-".join(str(s + 1) for s in stages) or "none"
st.download_button("Download this figure (PNG)", data=partial(panel_png, tiles, 5),
                   file_name=f"swap_A-{a.caption}_B-{b.caption}_stages-{stage_names}.png".replace(" ", "")
                   .replace("#", "").replace("(", "").replace(")", ""),
                   mime="image/png", on_click="ignore", key="swap_download", icon=":material/download:")
st.dataframe(
    {"image": list(ROW_NAMES.values()),
     "MSE to A": [result.metrics[n]["mse_a"] for n in ROW_NAMES],
     "PSNR to A (dB)": [result.metrics[n]["psnr_a"] for n in ROW_NAMES],
     "MSE to B": [result.metrics[n]["mse_b"] for n in ROW_NAMES],
     "PSNR to B (dB)": [result.metrics[n]["psnr_b"] for n in ROW_NAMES]},
    hide_index=True, key="swap_metrics", width="content",
    column_config={name: st.column_config.NumberColumn(format="%.4f" if "MSE" in name else "%.2f")
                   for name in ("MSE to A", "PSNR to A (dB)", "MSE to B", "PSNR to B (dB)")})

st.subheader("Swap matrix")
examples = explorer.examples
if examples is None:
    st.info("The swap matrix uses dataset images; choose an example dataset that loads.")
else:
    chosen = st.multiselect(f"{examples.name} images (up to {MAX_MATRIX})", list(range(len(examples.images))),
                            default=sorted({round(i * (count - 1) / 5) for i in range(6)}), max_selections=MAX_MATRIX,
                            key="swap_matrix_images",
                            format_func=lambda i: f"#{i} ({int(examples.labels[i])})")
    if chosen:
        images = examples.images[chosen]  # (K, C, H, W)
        recons, errors = swap_matrix(model, images, stages)
        grid = swap_grid(images.numpy(), recons.float().cpu().numpy())
        st.caption("Row i: the what of image i (left column); column j: the where of image j (top row), at the "
                   "ticked stages. The right panel is each cell's MSE to image i.")
        st.plotly_chart(figures.panel_figure(
            [figures.gray_panel("what (rows) x where (columns)", grid),
             figures.Panel("MSE to the what image", [dict(
                 type="heatmap", z=errors, coloraxis="coloraxis2",
                 x=[f"#{i}" for i in chosen], y=[f"#{i}" for i in chosen],
                 hovertemplate="what %{y}, where %{x}<br>MSE %{z:.4f}<extra></extra>")])],
            columns=2, height=440,
            coloraxes={"coloraxis": dict(colorscale=figures.GRAY, cmin=0, cmax=1, showscale=False),
                       "coloraxis2": dict(colorscale="Magma", colorbar=dict(title="MSE", len=0.8, thickness=12))}),
            key="swap_matrix", config=CHART)

st.subheader("Translation probe")
st.caption("Shift image A and see, per stage, how much the what changed (relative L2) and what fraction of the "
           "switches moved: the where absorbs small translations the what is invariant to.")
dx_col, dy_col = st.columns(2)
dx = dx_col.slider("dx (pixels right)", -8, 8, 2, key="swap_dx")
dy = dy_col.slider("dy (pixels down)", -8, 8, 0, key="swap_dy")
probe = translation_probe(model, a.image, dx, dy)
shifted_col, bars_col = st.columns([1, 2])
shifted_col.plotly_chart(figures.panel_figure(
    [figures.gray_panel("A", display_image(a.image.numpy())),
     figures.gray_panel(f"A shifted ({dx}, {dy})", display_image(shift_image(a.image, dx, dy).numpy()))],
    columns=2, height=240, coloraxes={"coloraxis": dict(colorscale=figures.GRAY, cmin=0, cmax=1, showscale=False)}),
    key="swap_shifted", config=CHART)
bars_col.plotly_chart(figures.bar_figure(
    [f"stage {p.stage + 1}" for p in probe],
    {"what change (relative L2)": [p.what_change for p in probe],
     "where change (fraction of switches moved)": [p.where_change for p in probe]},
    height=280, y_title="change"), key="swap_probe", config=CHART)
