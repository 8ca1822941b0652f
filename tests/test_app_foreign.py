"""The explorer on foreign pooling networks (issue 25), through streamlit.testing.v1.AppTest: a zoo small_vgg
pooling-network file (1x28x28, Fashion-MNIST examples), a random-weight torchvision vgg11_bn opened with the sidebar's
own-network controls at 64x64 and at 224x224 (no dataset on this machine: uploaded images). Every page renders
without a traceback, and the numbers it shows are checked against independent references: the lens's switches
against F.max_pool2d(return_indices=True) of the pooling layer's hooked input, the swap's distances against the
projections decoded by hand, the overview's refusal to quote a reconstruction error."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import networks, sidebar
from core.analysis import PROJECTION_NOTE, window_refusal
from core.data import decode_image, load_examples
from core.model import NetworkConfig
from core.model.network_file import save_network_file
from core.model.zoo import small_vgg

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")
TIMEOUT = 240
SWITCH = re.compile(r"window \((\d+), (\d+)\)<br>.*?(tie: no cell chosen|switch at pixel \((\d+), (\d+)\))")


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture(scope="module")
def network_file(tmp_path_factory) -> Path:
    """A small_vgg with random weights saved as a pooling-network file that names Fashion-MNIST (its examples)."""
    torch.manual_seed(0)
    net = small_vgg(in_channels=1, num_classes=10).eval()
    path = tmp_path_factory.mktemp("nets") / "tiny_vgg.pt"
    save_network_file(path, net, architecture="zoo:small_vgg", architecture_args={"in_channels": 1, "num_classes": 10},
                      input={"channels": 1, "size": 28, "mean": [0.286], "std": [0.353]},
                      data_config={"dataset": "fashion-mnist"})
    return path


def photo_png(size: int = 96) -> bytes:
    """A colourful test picture (a gradient with a bright square), as PNG bytes."""
    rows, cols = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([rows, cols, 1 - rows], -1)
    rgb[size // 4: size // 2, size // 3: 2 * size // 3] = [1.0, 0.9, 0.1]
    buffer = io.BytesIO()
    Image.fromarray((rgb * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def open_own(at: AppTest, size: int, arch: str = "torchvision:vgg11_bn") -> AppTest:
    """Open `arch` with random weights at `size` through the sidebar's "Open your own network" controls."""
    at.selectbox(key=networks.OWN_ARCH).set_value(arch).run()
    at.number_input(key=networks.OWN_SIZE).set_value(size).run()
    return at.button(key=networks.OWN_OPEN).click()


def with_upload(at: AppTest, *keys: str) -> AppTest:
    """Feed the picture to the pickers `keys` as an upload kept from earlier in the session (AppTest cannot drive a
    file uploader): the picker shows it on the page's first run."""
    for key in keys:
        at.session_state[f"{key}_source"] = "Upload"
        at.session_state[f"{key}_kept"] = ("photo.png", photo_png())
    return at


def lens_switches(at: AppTest) -> dict[tuple[int, int], tuple[int, int] | None]:
    """{window (row, col): its switch pixel, None for a tie} read from the Layers lens chart's hover texts."""
    chart = next(c for c in at.get("plotly_chart") if c.proto.id.endswith("layers_lens"))
    texts = next(t["text"] for t in json.loads(chart.proto.spec)["data"] if t["type"] == "scatter")
    found = {}
    for text in texts:
        row, col, what, r, c = SWITCH.search(text).groups()
        found[(int(row), int(col))] = None if what.startswith("tie") else (int(r), int(c))
    return found


def reference_switches(net: nn.Module, normalised: torch.Tensor, channel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (h, w), the pooled input (H, W)) of the first nn.MaxPool2d of `net` for channel `channel`, from its
    input captured by a hook of our own and pooled by F.max_pool2d."""
    pool = next(m for m in net.modules() if isinstance(m, nn.MaxPool2d))
    seen = []
    handle = pool.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    try:
        with torch.no_grad():
            net(normalised)
    finally:
        handle.remove()
    pre_pool = seen[0][0, channel]  # (H, W)
    _, indices = F.max_pool2d(pre_pool[None, None], pool.kernel_size, pool.stride, return_indices=True)
    return indices[0, 0], pre_pool


def check_lens(at: AppTest, image: torch.Tensor) -> int:
    """The lens (stage 1, channel 0) shows F.max_pool2d's switches of the hooked input at every untied window, and
    a tie exactly where the window's maximum occurs twice; returns the number of switches compared."""
    model = at.session_state[sidebar.EXPLORER].model
    indices, pre_pool = reference_switches(model.net, model.normalise(image[None]), channel=0)
    shown = lens_switches(at)
    width = pre_pool.shape[1]
    assert len(shown) == indices.numel()
    compared = 0
    for (row, col), switch in shown.items():
        window = pre_pool[2 * row:2 * row + 2, 2 * col:2 * col + 2]
        if switch is None:
            assert int((window == window.max()).sum()) > 1
        else:
            assert switch == divmod(int(indices[row, col]), width)
            compared += 1
    assert compared > 0
    return compared


def test_network_file_on_every_page(network_file):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state[sidebar.MODEL_REQUEST] = str(network_file)
    at.run()
    ok(at)
    explorer = at.session_state[sidebar.EXPLORER]
    assert isinstance(explorer.model.config, NetworkConfig) and explorer.examples is not None
    assert explorer.examples.images.shape[1:] == (1, 28, 28)
    assert PROJECTION_NOTE in [c.value for c in at.caption]
    assert not any("reconstruction MSE" in m.value for m in at.markdown)  # a projection has no reconstruction error
    index = at.number_input(key="layers_index").value
    check_lens(at, load_examples("fashion-mnist", channels=1, image_size=28).images[index])
    captions = [c for i in at.get("image") for c in (i.captions or [])]
    assert any(c.startswith("deconvnet decoding of this unit (±") for c in captions)
    assert any(m.value.startswith("**Top 9**") for m in at.markdown)  # top dataset images beside the decoding

    at.switch_page("views/swap.py").run()
    ok(at)
    findings = [m.value for m in at.markdown if "deconvnet projection lies" in m.value]
    assert findings and "reconstruction" not in findings[0]
    at.switch_page("views/compare.py")
    at.session_state["compare_b"], at.session_state["compare_b_default_for"] = sidebar.DEFAULT_CHECKPOINT, ""
    at.run()
    ok(at)
    text = " ".join(m.value for m in at.markdown)
    assert "kind (zoo:small_vgg vs SWWAE)" in text and "No reconstruction errors to compare: A" in text
    at.switch_page("views/attribution.py").run()
    ok(at)
    assert at.get("plotly_chart")


def test_vgg11_bn_at_64_from_the_sidebar_controls():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    open_own(at, 64)
    with_upload(at, "layers").run()
    ok(at)
    explorer = at.session_state[sidebar.EXPLORER]
    assert explorer.model.config.architecture == "torchvision:vgg11_bn" and explorer.examples is None
    assert explorer.model.input_shape == (3, 64, 64) and not explorer.checkpoint.classifier_trained
    assert any(networks.RANDOM_NOTE in c.value for c in at.caption)
    image = decode_image(photo_png(), channels=3, size=64, invert=None, name="photo.png")
    check_lens(at, image)
    assert any("top images and the probe over a set need the dataset" in c.value for c in at.caption)
    assert not any(m.value.startswith("Predicted") for m in at.markdown)  # random weights: no prediction

    at.switch_page("views/swap.py")
    with_upload(at, "swap_a", "swap_b").run()
    ok(at)
    model = explorer.model
    with torch.no_grad():
        projections = model.decode(model.encode(image[None])).recon  # A = B: the same upload
    assert any("deconvnet projection lies" in m.value for m in at.markdown)
    table = at.table[0].value
    row = list(table["picture"]).index("A reconstructed")
    assert float(table["distance to A's projection"].iloc[row]) == 0.0
    assert torch.isfinite(projections).all() and projections.abs().max() > 0

    at.switch_page("views/compare.py")
    at.session_state["compare_b"], at.session_state["compare_b_default_for"] = explorer.source, ""
    with_upload(at, "compare").run()
    ok(at)
    assert any("No reconstruction errors to compare" in m.value for m in at.markdown)
    at.switch_page("views/attribution.py")
    at.session_state["attr_methods"] = ["saliency", "deconvolution"]
    with_upload(at, "attr").run()
    ok(at)
    assert any("random weights" in i.value for i in at.info)


def test_vgg11_bn_at_224_renders_each_page_once():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    open_own(at, 224)
    with_upload(at, "layers").run()
    ok(at)
    assert at.session_state[sidebar.EXPLORER].model.input_shape == (3, 224, 224)
    assert PROJECTION_NOTE in [c.value for c in at.caption]
    at.switch_page("views/swap.py")
    at.session_state["swap_section"] = "Pooling lens: A's and B's switches"  # the morph's 21 decodings: slow here
    with_upload(at, "swap_a", "swap_b").run()
    ok(at)
    at.switch_page("views/attribution.py")
    at.session_state["attr_methods"] = ["saliency"]
    with_upload(at, "attr").run()
    ok(at)


def test_a_bad_own_network_keeps_the_model(tmp_path):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    open_own(at, 16).run()  # below a torchvision network's smallest input (32)
    assert len(at.error) == 1 and "Kept default (shipped)" in at.error[0].value
    assert "\n" not in at.error[0].value
    assert at.session_state[sidebar.MODEL_LOADED] == sidebar.DEFAULT_CHECKPOINT
    assert not at.session_state[networks.NETWORKS]  # a network that failed is not offered


def test_overlapping_pools_are_refused_in_one_line():
    """AlexNet's 3x3 stride-2 pools: no where map, no lens (window_refusal), said in one line each."""
    from core.model.specs import open_network
    config = open_network("torchvision:alexnet", image_size=64).network.config
    refusal = window_refusal(config, 0)
    assert config.overlapping and refusal is not None and "overlapping" in refusal and "\n" not in refusal


def test_shipped_network_with_its_fitted_decoder_reconstructs_like_an_swwae():
    """checkpoints/fashion_vgg_decoder.pt: the shipped VGG-style classifier with a what-where decoder fitted to it
    (frozen). Its pages score true reconstructions: the overview's MSE is the decoder's own, recomputed here, and
    Swap states the paper's finding for it (A's content with B's switches lies closer to B)."""
    from core.analysis import mse
    from core.model.specs import open_network

    source = "checkpoints/fashion_vgg_decoder.pt"
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(source).run()
    ok(at)
    assert at.session_state[sidebar.EXPLORER].model.config.decoder == "fitted"
    assert not any(PROJECTION_NOTE in c.value for c in at.caption)
    readout = next(m.value for m in at.markdown if m.value.startswith("Predicted"))
    shown = float(re.search(r"reconstruction MSE ([0-9.]+)", readout).group(1))
    network = open_network(ROOT / source).network
    image = load_examples("fashion-mnist", channels=1, image_size=28).images[0]
    with torch.no_grad():
        recon = network.decode(network.encode(image[None])).recon
    assert shown == pytest.approx(mse(recon, image[None]), abs=5e-5)
    assert 0 <= recon.min() and recon.max() <= 1  # an image, not a signed projection

    at.switch_page("views/swap.py").run()
    ok(at)
    finding = next(m.value for m in at.markdown if "closer to B than to A" in m.value)
    to_b, to_a = (float(v) for v in re.search(r"MSE ([0-9.]+) to B, ([0-9.]+) to A", finding).groups())
    assert to_b < to_a
