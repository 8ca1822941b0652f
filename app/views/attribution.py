"""Attribution: which pixels drive a class logit, by four Captum methods, overlaid on the image."""
import streamlit as st

from app import figures
from app.inputs import pick_image
from app.sidebar import current
from core.analysis import METHOD_LABELS, METHODS, attribute_all
from core.analysis import classify
from core.analysis import display_image

explorer = current()
model, cfg = explorer.model, explorer.checkpoint.model_config
st.title("Attribution")
st.caption(f"{explorer.label}: which input pixels push the chosen class logit up (red) or down (blue). "
           "Deconvolution routes the signal back through the max-pooling switches, like the SWWAE decoder.")

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
    st.info("This model was trained without labels (unsupervised): its classifier head keeps its random initial "
            "weights. The maps still show which pixels move the chosen logit, but that logit means no class.",
            icon=":material/info:")
settings = st.columns([1, 3, 1, 1])
target_choice = settings[0].selectbox("Class", ["predicted"] + list(range(cfg.num_classes)), key="attr_target",
                                      format_func=class_label)
methods = settings[1].multiselect("Methods", list(METHODS), default=list(METHODS), key="attr_methods",
                                  format_func=METHOD_LABELS.get)
steps = settings[2].select_slider("IG steps", [8, 16, 32, 64, 128], value=32, key="attr_ig_steps",
                                  help="Integrated Gradients integration steps")
opacity = settings[3].slider("Overlay opacity", 0.1, 1.0, 0.7, 0.05, key="attr_opacity")
target = predicted if target_choice == "predicted" else int(target_choice)

if not methods:
    st.info("Choose at least one method.")
    st.stop()

background = display_image(picked.image.numpy())
panels = [figures.gray_panel(f"input {picked.caption}", background)]
for result in attribute_all(model, picked.image, tuple(methods), target, ig_steps=steps):
    panels.append(figures.signed_panel(f"{METHOD_LABELS[result.method]}<br>max |a| = {result.scale:.2g}",
                                       result.normalised, background=background if background.ndim == 2 else None,
                                       opacity=opacity))
columns = min(len(panels), 5)
st.plotly_chart(figures.panel_figure(
    panels, columns=columns, height=300 if len(panels) <= 5 else 560,
    coloraxes={"coloraxis": dict(colorscale=figures.GRAY, cmin=0, cmax=1, showscale=False),
               "coloraxis2": dict(colorscale=figures.SIGNED, cmin=-1, cmax=1,
                                  colorbar=dict(title="a / max|a|", len=0.8, thickness=12))}),
    key="attr_maps", config={"displaylogo": False})
st.caption(f"Explaining class {names[target]}{'' if trained else ' of an untrained head'}. Each map is scaled by its own "
           "largest |attribution| (shown in its title).")
if trained:
    st.plotly_chart(figures.bar_figure(list(names),
                                       {"probability": probabilities.tolist()}, height=240,
                                       title="Class probabilities", y_range=(0, 1), highlight=target),
                    key="attr_probs", config={"displaylogo": False})
