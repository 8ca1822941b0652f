"""Attribution: which pixels drive a class logit, by four Captum methods, overlaid on the image; whether each method's
map depends on the class at all (the two most likely classes' maps correlated); and Deconvolution beside the SWWAE
decoder's own route through the switches (the top stage's strongest unit decoded alone)."""
import streamlit as st

from app import figures
from app.address import BIND
from app.downloads import chart_config, csv_button, file_name, model_tag
from app.glossary import term_link
from app.inputs import pick_image
from app.probes import fingerprint
from app.sidebar import current
from core.analysis import METHOD_LABELS, METHODS, NEARLY_SAME, attribute, attribute_all, map_correlation
from core.analysis import target_contrast, top_unit
from core.analysis import classify
from core.analysis import decoder_refusal, display_image, projects
from app.networks import untrained_note

CHART = {"displaylogo": False}  # and theme=None: the figures keep their white card and dark text in both themes


@st.cache_data(max_entries=32, show_spinner="Attributing...")
def _contrasts(identity: str, image_key: str, methods: tuple[str, ...], steps: int, _model, _image):  # noqa: ARG001
    """target_contrast of one image, keyed on the model's identity, the image's bytes, the methods and IG steps:
    a rerun for another overlay opacity or class reuses it."""
    return target_contrast(_model, _image, methods, ig_steps=steps)

explorer = current()
model, cfg = explorer.model, explorer.checkpoint.model_config
st.title("Attribution")
st.caption(f"{explorer.label}: which input pixels push the chosen class logit up (red) or down (blue). "
           f"Deconvolution routes the signal back through the max-pooling {term_link('switch', 'switches')}, like "
           "the SWWAE decoder.")

picked = pick_image(explorer, "attr", "Input")
probabilities = classify(model, picked.image)[0]
predicted = int(probabilities.argmax())
trained = explorer.checkpoint.classifier_trained


names = explorer.class_names


def class_label(choice) -> str:
    """A class option by name; probabilities only where the head was trained (an untrained head's are noise)."""
    if not trained:
        return f"head's top ({names[predicted]})" if choice == "predicted" else names[choice]
    return (f"predicted ({names[predicted]}, p={probabilities[predicted]:.2f})" if choice == "predicted"
            else f"{names[choice]} (p={probabilities[choice]:.2f})")


if not trained:
    st.info(untrained_note(explorer.checkpoint) + " The maps still show which pixels move the chosen logit, but that "
            "logit means no class.", icon=":material/info:")
# The methods get a row of their own (all four names in full); the class box is wide enough for its longest label.
methods = st.multiselect("Methods", list(METHODS), default=list(METHODS), key="attr_methods",
                         format_func=METHOD_LABELS.get, bind=BIND)
class_col, steps_col, opacity_col = st.columns([1.4, 1, 1])
target_choice = class_col.selectbox("Class", ["predicted"] + list(range(cfg.num_classes)), key="attr_target",
                                    format_func=class_label, bind=BIND)
steps = steps_col.select_slider("IG steps", [8, 16, 32, 64, 128], value=32, key="attr_ig_steps", bind=BIND,
                                help="Integrated Gradients integration steps")
opacity = opacity_col.slider("Overlay opacity", 0.1, 1.0, 0.7, 0.05, key="attr_opacity")
target = predicted if target_choice == "predicted" else int(target_choice)

if not methods:
    st.info("Choose at least one method.")
    st.stop()

chosen = tuple(methods)
contrasts = (_contrasts(explorer.identity, fingerprint(picked.image), chosen, steps, model, picked.image)
             if cfg.num_classes >= 2 else [])
known = {(c.method, side.target): side for c in contrasts for side in (c.first, c.second)}  # maps computed already
results = ([known[(method, target)] for method in chosen] if all((m, target) in known for m in chosen)
           else attribute_all(model, picked.image, chosen, target, ig_steps=steps))

background = display_image(picked.image.numpy())
overlay = background if background.ndim == 2 else None
panels = [figures.gray_panel(f"input {picked.caption}", background)]
for result in results:
    panels.append(figures.signed_panel(f"{METHOD_LABELS[result.method]}<br>max |a| = {result.scale:.2g}",
                                       result.normalised, background=overlay, opacity=opacity))
columns = min(len(panels), 5)
SCALES = {"coloraxis": dict(colorscale=figures.GRAY, cmin=0, cmax=1, showscale=False),
          "coloraxis2": dict(colorscale=figures.SIGNED, cmin=-1, cmax=1,
                             colorbar=dict(title="a / max|a|", len=0.8, thickness=12))}
st.plotly_chart(figures.panel_figure(panels, columns=columns, height=300 if len(panels) <= 5 else 560,
                                     coloraxes=SCALES), key="attr_maps", theme=None,
                config=chart_config(file_name("attribution", model_tag(explorer.label), picked.caption,
                                              f"class-{names[target]}", ext="svg")[:-4]))
st.caption(f"Explaining class {names[target]}{'' if trained else ' of an untrained head'}. Each map is scaled by its own "
           "largest |attribution| (shown in its title).")


def contrast_line() -> str:
    """Per method, how alike the maps of the two most likely classes are, the methods that barely depend on the
    class named first."""
    first, second = contrasts[0].first.target, contrasts[0].second.target
    pair = (f"{names[first]} (predicted) and {names[second]} (second most likely)" if trained
            else f"logits {names[first]} and {names[second]} (the head's two largest)")
    numbers = ", ".join(f"{METHOD_LABELS[c.method]} r = {c.correlation:.2f}" for c in contrasts)
    same = [METHOD_LABELS[c.method] for c in contrasts if c.nearly_same]
    if not same:
        return f"Correlation of the maps for {pair}: {numbers}. Every method's map changes with the class."
    verb = "barely changes" if len(same) == 1 else "barely change"
    return (f"**{' and '.join(same)} {verb} with the class:** the maps for {pair} correlate at r ≥ {NEARLY_SAME} "
            f"({numbers}). Such a map shows what in the image the network responds to, not why it chose "
            f"{names[first]} (a known property of Deconvolution and Guided Backprop: Nie et al. 2018, "
            "Adebayo et al. 2018).")


if contrasts:
    st.markdown(contrast_line())
    csv_button("These correlations (CSV)", {"method": [METHOD_LABELS[c.method] for c in contrasts],
                                            "class": [names[c.first.target] for c in contrasts],
                                            "other class": [names[c.second.target] for c in contrasts],
                                            "r": [c.correlation for c in contrasts]},
               file_name("attribution", model_tag(explorer.label), picked.caption, "class-contrast", ext="csv"),
               "attr_contrast_csv")

st.subheader("Two routes through the switches")
if (refusal := decoder_refusal(cfg)) is not None:
    st.info(f"Deconvolution is drawn above; the second route, a unit decoded through the switches, is missing: "
            f"{refusal}.")
    st.stop()
unit = top_unit(model, picked.image)


def unit_panel(title: str, decoding):
    """The unit's decoding: an SWWAE's as an image, a network's deconvnet projection (channel mean) signed, ±1 at its
    largest |value|."""
    if not projects(cfg):
        return figures.gray_panel(title, display_image(decoding))
    projection = decoding.mean(0)
    return figures.signed_panel(title, projection / max(float(abs(projection).max()), 1e-12))


deconvolution = next((r for r in results if r.method == "deconvolution"), None) or attribute(
    model, picked.image, "deconvolution", target)
route_panels = [
    figures.signed_panel(f"Deconvolution of {names[target]}<br>max |a| = {deconvolution.scale:.2g}",
                         deconvolution.normalised, background=overlay, opacity=opacity),
    unit_panel(f"stage {unit.view.stage + 1} channel {unit.view.channel} decoded alone<br>largest what "
               f"{float(unit.view.what.max()):.2g}", unit.view.decoding),
    figures.signed_panel(f"its contribution<br>max |c| = {unit.scale:.2g}", unit.contribution),
]
ROUTE_SCALES = {**SCALES, "coloraxis2": {**SCALES["coloraxis2"], "colorbar": dict(title="v / max|v|", len=0.8,
                                                                                  thickness=12)}}
st.plotly_chart(figures.panel_figure(route_panels, columns=3, height=300, coloraxes=ROUTE_SCALES), key="attr_routes",
                config=CHART, theme=None)
NETWORK_ROUTE = ("the deconvnet (Zeiler & Fergus) sends the top stage's strongest {unit} (channel {channel}, every "
                 "other channel 0) down through the same {wheres} and the network's own filters transposed: a "
                 "projection, drawn on its own signed scale.")
ROUTE_NOTES = {  # how each pooling kind's decoder uses the wheres the caption speaks of
    "hard": "the SWWAE decoder sends the top stage's strongest {unit} (channel {channel}, every other channel 0) down "
            "through the same {wheres}, each value put back at the cell the forward pass chose.",
    "soft": "the SWWAE decoder sends the top stage's strongest {unit} (channel {channel}, every other channel 0) down "
            "through the same soft {wheres}, each value put back at its soft position between cells.",
    "none": "this model is the where ablation: its decoder ignores the {wheres} and copies each value over its "
            "window, so its decoding of the strongest {unit} (channel {channel}) does not go through the switches.",
}
route_r = map_correlation(deconvolution.normalised, unit.contribution)
st.caption(f"Deconvolution sends the class logit's gradient back to the pixels through this image's "
           f"{term_link('switch', 'switches')}, as max pooling's backward pass does; "
           + (NETWORK_ROUTE if projects(cfg) else ROUTE_NOTES[cfg.pooling]).format(unit=term_link("unit"), channel=unit.view.channel,
                                             wheres=term_link("where", "wheres"))
           + " The contribution is that decoding minus the decoding with the whole stage at 0. Over the pixels, the "
           f"Deconvolution map and the contribution correlate at r = {route_r:.2f}.")
if trained:
    st.markdown("**Class probabilities** (red: the class explained)")
    st.markdown(figures.probability_bars_html(list(names), probabilities.tolist(), target), unsafe_allow_html=True)
