"""Layers: every stage's pre-pool activations, what, where and decoder hidden for one image."""
import streamlit as st

from app import figures
from app.inputs import pick_image
from app.sidebar import current
from core.experiments import class_probabilities, layer_views, mse, psnr
from core.render import mosaic, recon_tiles, stage_difference, where_arrows, where_legend, where_mosaic

PANEL_WIDTH = 380  # px a mosaic panel gets in the wide layout, to size figure heights

explorer = current()
model, cfg = explorer.model, explorer.checkpoint.model_config
st.title("Layers")
st.caption(f"{explorer.label}: what each stage keeps (*what*) and where it came from (*where*).")

picked = pick_image(explorer, "layers", "Input")
views, encoding, decoding = layer_views(model, picked.image)
image = picked.image.numpy()
recon = decoding.recon[0].float().cpu().numpy()
probabilities = class_probabilities(encoding.logits)[0]
predicted = int(probabilities.argmax())

overview, probs_col = st.columns([3, 2])
tiles = recon_tiles(image, recon)
overview.plotly_chart(figures.panel_figure(
    [figures.gray_panel(t.title, t.image) if not t.signed else figures.signed_panel(t.title, t.image) for t in tiles],
    columns=3, height=260,
    coloraxes={"coloraxis": dict(colorscale=figures.GRAY, cmin=0, cmax=1, showscale=False),
               "coloraxis2": dict(colorscale=figures.SIGNED, cmid=0, colorbar=dict(len=0.8, thickness=12))}),
    key="layers_overview", config={"displaylogo": False})
metrics = overview.columns(4)
recon_mse = mse(decoding.recon, picked.image)
metrics[0].metric("Predicted", predicted, help=f"label {picked.label}" if picked.label is not None else None)
metrics[1].metric("Confidence", f"{probabilities[predicted]:.1%}")
metrics[2].metric("Recon MSE", f"{recon_mse:.4f}")
metrics[3].metric("Recon PSNR", f"{psnr(recon_mse):.1f} dB")
probs_col.plotly_chart(figures.bar_figure(
    [str(c) for c in range(len(probabilities))], {"probability": probabilities.tolist()}, height=300,
    title="Class probabilities", y_range=(0, 1), highlight=predicted), key="layers_probs", config={"displaylogo": False})

options = st.columns(3)
arrows = options[0].toggle("Arrows on the where maps", key="layers_arrows",
                           help="Each switch as an arrow from its cell's centre towards the chosen position")
fade = options[1].toggle("Fade switches whose what is 0", value=True, key="layers_fade",
                         help="A dead (zero) what picks an arbitrary position; fading it keeps the eye on live ones")

tabs = st.tabs([f"Stage {v.stage + 1}: {v.pre_pool.shape[0]} ch, {v.pre_pool.shape[1]} → {v.what.shape[1]}"
                for v in views])
activation_axis = {"coloraxis": dict(colorscale="Viridis", cmin=0, colorbar=dict(title="value", len=0.8, thickness=12))}
for tab, view in zip(tabs, views):
    with tab:
        pre_pool, what = mosaic(view.pre_pool), mosaic(view.what)
        colors, custom = where_mosaic(view.where_offset, view.what, view.pool_size, fade=fade)
        quiver = where_arrows(view.where_offset, view.pool_size, colors, mask=view.what > 0) if arrows else None
        aspect = max(pre_pool.image.shape[0] / pre_pool.image.shape[1], what.image.shape[0] / what.image.shape[1])
        maps_col, key_col = st.columns([5, 1])
        maps_col.plotly_chart(figures.panel_figure(
            [figures.mosaic_panel(f"pre-pool ({view.pre_pool.shape[0]} x {view.pre_pool.shape[1]}^2)", pre_pool),
             figures.mosaic_panel(f"what ({view.what.shape[1]}^2, pool {view.pool_size})", what),
             figures.where_panel("where (position in the window)", colors, custom, quiver)],
            columns=3, height=int(PANEL_WIDTH * aspect) + 40, coloraxes=activation_axis),
            key=f"layers_maps_{view.stage}", config={"displaylogo": False})
        continuous = cfg.pooling == "soft"
        key_col.plotly_chart(figures.legend_figure(where_legend(view.pool_size, continuous), view.pool_size,
                                                   continuous), key=f"layers_key_{view.stage}",
                             config={"displayModeBar": False})
        if continuous:
            key_col.caption("Soft pooling: the where is a continuous (row, col) offset; colours blend between "
                            "the corners.")
        if view.hidden is None:
            st.caption("The top stage's what feeds the classifier and starts the decoder; no hidden state "
                       "reconstructs it.")
            continue
        hidden, difference = mosaic(view.hidden), mosaic(stage_difference(view.hidden, view.what))
        hidden_col, metric_col = st.columns([5, 1])
        hidden_col.plotly_chart(figures.panel_figure(
            [figures.mosaic_panel("encoder what", what), figures.mosaic_panel("decoder hidden", hidden),
             figures.mosaic_panel("hidden - what", difference, coloraxis="coloraxis2")],
            columns=3, height=int(PANEL_WIDTH * what.image.shape[0] / what.image.shape[1]) + 40,
            coloraxes={**activation_axis, "coloraxis2": dict(colorscale=figures.SIGNED, cmid=0, showscale=False)}),
            key=f"layers_hidden_{view.stage}", config={"displaylogo": False})
        metric_col.metric(f"L2M, stage {view.stage + 1}", f"{view.mid_mse:.4f}",
                          help="Mean squared error of the decoder hidden against the encoder what (the L2M term)")
