"""The shipped Fashion-MNIST model in the dashboard (AppTest), with the system's Fashion-MNIST files made invisible:
the examples follow the model to its dataset (the 1,000 shipped test images), classes read by name on every explorer
page, uploads are prepared the Fashion-MNIST way, and the Swap page pairs it with its own dataset's ablation model."""
import re
import io

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import core.data.idx as idx_module
from app import sidebar
from core.data import CLASS_NAMES
from tests.test_app import APP, TIMEOUT, ok

FASHION = "checkpoints/fashion.pt"
NAMES = CLASS_NAMES["fashion-mnist"]


@pytest.fixture(autouse=True)
def no_installed_dataset(monkeypatch):
    monkeypatch.setattr(idx_module, "SYSTEM_DIRS", {})


def open_fashion(page: str = "layers") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(FASHION).run()
    if page != "layers":
        at.switch_page(f"views/{page}.py").run()
    ok(at)
    return at


def test_choosing_the_fashion_model_switches_the_examples_to_its_dataset():
    at = open_fashion()
    assert at.session_state[sidebar.MODEL_LOADED] == FASHION
    assert at.selectbox(key=sidebar.DATASET).value == "fashion-mnist"
    assert any("Trained on fashion-mnist" in c.value and "1,000 shipped test images" in c.value
               for c in at.sidebar.caption)
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(sidebar.DEFAULT_CHECKPOINT).run()
    ok(at)
    assert at.selectbox(key=sidebar.DATASET).value == "mnist5k"  # and back with the digits model


def predicted_class(at) -> str:
    """The class the Layers page's one-line readout names: "Predicted **Ankle boot** (99.1%; ...)"."""
    readout = next(m.value for m in at.markdown if m.value.startswith("Predicted **"))
    return re.match(r"Predicted \*\*(.+?)\*\*", readout).group(1)


def test_layers_names_the_predicted_class_and_the_example_label():
    at = open_fashion()
    assert predicted_class(at) in NAMES
    assert at.number_input(key="layers_index").label == "fashion-mnist index"
    at.number_input(key="layers_index").set_value(0).run()  # the first shipped image is an ankle boot
    ok(at)
    assert predicted_class(at) == "Ankle boot"


def test_swap_and_attribution_name_the_classes():
    at = open_fashion("swap")
    at.session_state["swap_section"] = "Swap matrix"  # = clicking the segmented control
    at.run()
    ok(at)
    options = at.multiselect(key="swap_matrix_images").options
    assert options and all(any(f"({name})" in option for name in NAMES) for option in options)
    at.switch_page("views/attribution.py").run()
    ok(at)
    targets = at.selectbox(key="attr_target").options
    assert any(option.startswith("Sneaker (p=") for option in targets)
    assert targets[0].startswith("predicted (") and any(name in targets[0] for name in NAMES)


def test_uploads_for_the_fashion_model_are_prepared_like_fashion_mnist():
    at = open_fashion()
    at.radio(key="layers_source").set_value("Upload").run()
    ok(at)
    assert at.toggle(key="layers_prepare").label == "Prepare like Fashion-MNIST"
    assert at.toggle(key="layers_prepare").value is True


def test_the_swap_page_uses_the_fashion_ablation_model():
    at = open_fashion("swap")
    captions = " ".join(c.value for c in at.caption)
    assert "fashion_ablation_none.pt" in captions


def test_a_photo_of_a_clothing_item_is_prepared_and_classified():
    """The core path the Upload widget takes: a dark item on light paper, off-centre, blurred, as a JPEG."""
    from bench.uploads import photo, product_ink
    from core.analysis import classify
    from core.data import decode_prepared, load_examples
    from core.model import load_checkpoint

    examples = load_examples("fashion-mnist", channels=1, image_size=28)
    model = load_checkpoint(FASHION).model
    rng, correct, count = np.random.default_rng(0), 0, 60
    for index in range(count):
        ink = product_ink(examples.images[index, 0].numpy(), scale=6)
        buffer = io.BytesIO()
        photo(ink, rng, by_longest_side=True).save(buffer, format="JPEG", quality=70)
        prepared = decode_prepared(buffer.getvalue(), "product", size=28)
        correct += int(classify(model, prepared).argmax() == int(examples.labels[index]))
    assert correct / count >= 0.8  # the test images themselves: about 0.92 on these
