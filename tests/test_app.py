"""The dashboard through streamlit.testing.v1.AppTest, on the shipped checkpoint: every page reruns cleanly after
its widgets change, and every kind of bad upload gets st.error while the loaded model stays."""
import re
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import sidebar
from core.model import save_checkpoint
from core.model import SWWAE, digits_config
from tests.test_images import BAD_UPLOADS, encode

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")
TIMEOUT = 120  # the first run loads the examples; later runs take a fraction of a second


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if page != "layers":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_opens_on_the_shipped_default():
    at = open_page("layers")
    ok(at)
    assert at.session_state[sidebar.MODEL_CHOICE] == sidebar.DEFAULT_CHECKPOINT
    assert at.selectbox(key=sidebar.MODEL_CHOICE).value == sidebar.DEFAULT_CHECKPOINT
    assert at.title[0].value == "Layers"


def test_layers_page_widgets():
    at = open_page("layers")
    stages = len(digits_config().channels)
    assert len(at.tabs) == stages
    # the open stage's what mosaic and the pooling lens (the other pictures are PNGs, the probabilities HTML bars)
    assert [c.key for c in charts(at)] == ["layers_maps_0", "layers_lens"]
    readout = next(m.value for m in at.markdown if m.value.startswith("Predicted"))
    assert "reconstruction MSE" in readout and "label" in readout
    bars = next(m.value for m in at.markdown if "probability-bars" in m.value)
    rows = re.findall(r'nowrap;(font-weight:600;)?">([^<]+)</span>.*?width:([0-9.]+)%;background:(#[0-9a-f]+)'
                      r'.*?">([0-9.]+)%</span>', bars)
    assert len(rows) == 10 and abs(sum(float(row[4]) for row in rows) - 100) < 0.5  # a bar per class, summing to 1
    assert all(row[2] == row[4] for row in rows)  # each bar as long as its probability
    predicted = re.search(r"Predicted \*\*(\w+)\*\* \(([0-9.]+)%", readout)
    marked = [(name, value) for bold, name, _, color, value in rows if bold and color == "#d62728"]
    assert marked == [(predicted.group(1), predicted.group(2))]  # the predicted class, and only it, red and bold
    at.number_input(key="layers_index").set_value(7).run()
    ok(at)
    assert at.number_input(key="layers_index").value == 7
    at.toggle(key="layers_fade").set_value(False).run()
    ok(at)
    at.toggle(key="layers_fade").set_value(False).run()
    ok(at)
    at.button(key="layers_random").click().run()
    ok(at)


def images(at: AppTest) -> list:
    return at.get("image")


def test_swap_page_widgets():
    at = open_page("swap")
    ok(at)
    stages = len(digits_config().channels)
    assert [c.key for c in at.checkbox] == [f"swap_where_{s}" for s in range(stages)]
    assert len(at.get("download_button")) == 3  # the figure, the figure for a paper, the table
    table = at.table[0].value
    assert list(table["image"]) == ["A reconstructed", "B reconstructed", "A's content, B's switches",
                                    "B's content, A's switches", "A, switches ignored", "B, switches ignored",
                                    "A by the 'none' model", "B by the 'none' model"]  # the none model ships
    findings = [m.value for m in at.markdown if "closer to" in m.value]
    assert findings and "A's content with B's switches lies" in findings[0]
    assert (table["MSE to A"].astype(float) >= 0).all() and len(table.columns) == 5
    panel_before = str(images(at)[0].proto)
    at.checkbox(key="swap_where_0").uncheck().run()
    ok(at)
    assert str(images(at)[0].proto) != panel_before  # the crossings changed
    at.number_input(key="swap_b_index").set_value(12).run()
    ok(at)
    open_section(at, "Swap matrix")
    at.multiselect(key="swap_matrix_images").set_value([0, 1, 2, 3, 4, 5, 6, 7]).run()
    ok(at)
    assert "images: what of the row, where of the column" in charts(at)[0].proto.spec
    for stage in range(stages):
        at.checkbox(key=f"swap_where_{stage}").uncheck()
    at.run()
    ok(at)


def test_swap_page_where_morph():
    at = open_page("swap")
    open_section(at, "Where morph")
    curve = at.get("plotly_chart")[0].proto.spec
    assert '"MSE to A"' in curve and '"MSE to B"' in curve
    morph_before = str(images(at)[1].proto)
    at.slider(key="swap_morph_t").set_value(1.0).run()
    ok(at)
    assert str(images(at)[1].proto) != morph_before  # the reconstruction at t = 1 (A's what, B's where)


PROBE = "Shift probe: what invariance, where equivariance"


def open_section(at: AppTest, section: str) -> AppTest:
    at.session_state["swap_section"] = section  # = clicking the segmented control
    at.run()
    ok(at)
    return at


def probe_findings(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("Over "))


def test_swap_page_shift_probe_states_only_what_its_table_shows():
    at = open_section(open_page("swap"), PROBE)
    table = at.dataframe[0].value  # the probe's numbers at the chosen shift
    findings = probe_findings(at)
    assert "shifted 2 px right" in findings
    for ratio in table["what ÷ pre-pool"]:  # every ratio the first sentence quotes is in the table
        if ratio < 1:
            assert f"{ratio:.2f}×" in findings
    assert f"{table['switches followed'][0]:.0%} of its active switches" in findings  # 2 px: stage 1's stride
    at.radio(key="swap_probe_axis").set_value("down (y)").run()
    at.slider(key="swap_shift").set_value(4).run()
    ok(at)
    assert "shifted 4 px down" in probe_findings(at)
    at.radio(key="swap_probe_set").set_value("50 dataset digits").run()
    ok(at)
    assert probe_findings(at).startswith("Over 50 mnist5k digits")
    assert at.dataframe[0].value["switches counted"].sum() > 1000


def test_attribution_page_widgets():
    at = open_page("attribution")
    ok(at)
    assert "Integrated Gradients" in charts(at)[0].proto.spec and "Guided Backprop" in charts(at)[0].proto.spec
    at.multiselect(key="attr_methods").set_value(["saliency"]).run()
    ok(at)
    assert "Saliency" in charts(at)[0].proto.spec and "Guided Backprop" not in charts(at)[0].proto.spec
    at.multiselect(key="attr_methods").set_value(["deconvolution", "guided_backprop"]).run()
    at.selectbox(key="attr_target").set_value(4).run()
    ok(at)
    assert any("Explaining class 4" in c.value for c in at.caption)
    at.multiselect(key="attr_methods").set_value([]).run()
    assert not at.exception and at.info


def upload_image(at: AppTest, name: str, data: bytes) -> AppTest:
    at.radio(key="layers_source").set_value("Upload").run()
    at.file_uploader(key="layers_upload").set_value((name, data, "image/png")).run()
    return at


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_image_upload_is_an_error_not_a_traceback(case):
    data, reason = BAD_UPLOADS[case]
    at = upload_image(open_page("layers"), "picture.png", data)
    assert not at.exception
    assert len(at.error) == 1 and reason in at.error[0].value
    assert charts(at)  # the page still works, on the dataset image


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "CMYK", "P"])
def test_converted_image_formats(mode):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 30, 4), dtype=np.uint8)
    image = {"RGBA": lambda: Image.fromarray(pixels, "RGBA"),
             "I;16": lambda: Image.fromarray(pixels[..., 0].astype(np.uint16) * 257),
             "CMYK": lambda: Image.fromarray(pixels, "CMYK"),
             "P": lambda: Image.fromarray(pixels[..., :3]).quantize(8)}[mode]()
    at = upload_image(open_page("layers"), f"picture.{'tiff' if mode == 'CMYK' else 'png'}",
                      encode(image, "TIFF" if mode == "CMYK" else "PNG"))
    ok(at)


def upload_checkpoint(at: AppTest, data: bytes, name: str = "model.pt") -> AppTest:
    at.file_uploader(key=sidebar.MODEL_UPLOAD).set_value((name, data, "application/octet-stream")).run()
    return at


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def checkpoint_bytes(tmp_path: Path, model: SWWAE) -> bytes:
    save_checkpoint(tmp_path / "upload.pt", model)
    return (tmp_path / "upload.pt").read_bytes()


def other_architecture(tmp_path: Path) -> bytes:
    """An SWWAE-format file whose weights belong to a different architecture than its config says."""
    payload = torch.load(io.BytesIO(checkpoint_bytes(tmp_path, SWWAE(digits_config(channels=(4, 8, 8))))),
                         weights_only=True)
    payload["model_config"]["channels"] = [32, 64, 128]
    return torch_bytes(payload)


@pytest.mark.parametrize("case, reason", [
    ("empty", "empty"),
    ("not a checkpoint", "not a readable PyTorch file"),
    ("another network's weights", "not an SWWAE checkpoint"),
    ("another architecture", "do not match"),
    ("pickle that runs code", "refused"),
])
def test_bad_checkpoint_upload_keeps_the_model(tmp_path, case, reason):
    marker = tmp_path / "code_ran"
    data = {
        "empty": lambda: b"",
        "not a checkpoint": lambda: b"PK\x03\x04 this is not a checkpoint" * 20,
        "another network's weights": lambda: torch_bytes(torch.nn.Linear(3, 2).state_dict()),
        "another architecture": lambda: other_architecture(tmp_path),
        "pickle that runs code": lambda: torch_bytes({"format": "swwae", "payload": RunsCode(marker)}),
    }[case]()
    if case == "pickle that runs code":
        pickle.loads(pickle.dumps(RunsCode(tmp_path / "probe")))  # the payload really would run code if unpickled
        assert (tmp_path / "probe").exists()
    at = open_page("swap")
    at = upload_checkpoint(at, data)
    assert not at.exception
    assert len(at.error) == 1 and reason in at.error[0].value and "Kept default" in at.error[0].value
    assert at.session_state[sidebar.MODEL_LOADED] == sidebar.DEFAULT_CHECKPOINT
    assert at.selectbox(key=sidebar.MODEL_CHOICE).value == sidebar.DEFAULT_CHECKPOINT
    assert not marker.exists()
    assert charts(at)  # the Swap page still draws with the previous model
    at.run()
    assert not at.exception and not at.error  # the error is shown once


def test_good_checkpoint_upload_switches_the_model(tmp_path):
    torch.manual_seed(3)
    data = checkpoint_bytes(tmp_path, SWWAE(digits_config(channels=(8, 16), kernel_sizes=(3, 3), pool_sizes=(2, 2))))
    at = upload_checkpoint(open_page("layers"), data, "small.pt")
    ok(at)
    assert at.session_state[sidebar.MODEL_LOADED].startswith("upload:")
    assert "uploaded: small.pt" in at.session_state["explorer"].label
    assert len(at.tabs) == 2  # the two-stage model's stages
    at.switch_page("views/swap.py").run()
    ok(at)
    assert len(at.checkbox) == 2


def test_request_model_opens_a_run_checkpoint(tmp_path):
    """What the Runs page's "Open in explorer" does: request_model(path) then switch to a page."""
    run_dir = tmp_path / "runs" / "demo"
    run_dir.mkdir(parents=True)
    save_checkpoint(run_dir / "best.pt", SWWAE(digits_config(channels=(8, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2))))
    at = open_page("layers")
    at.session_state[sidebar.MODEL_REQUEST] = str(run_dir / "best.pt")  # = request_model(...) in a callback
    at.run()
    ok(at)
    assert at.session_state[sidebar.MODEL_LOADED] == str(run_dir / "best.pt")
    assert len(at.tabs) == 2
    (run_dir / "broken.pt").write_bytes(b"junk")
    at.session_state[sidebar.MODEL_REQUEST] = str(run_dir / "broken.pt")
    at.run()
    assert not at.exception and "Could not load" in at.error[0].value
    assert at.session_state[sidebar.MODEL_LOADED] == str(run_dir / "best.pt")


@pytest.mark.parametrize("mode", ["soft", "none"])
def test_every_page_runs_on_the_soft_and_none_ablation_models(mode):
    """The shipped ablation checkpoints (soft where: float offsets; none: where ignored) work on every page."""
    source = f"checkpoints/ablation_{mode}.pt"
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(source).run()
    ok(at)
    assert at.session_state[sidebar.MODEL_LOADED] == source
    at.toggle(key="layers_fade").set_value(False).run()
    ok(at)
    for page in ("swap", "attribution"):
        at.switch_page(f"views/{page}.py").run()
        ok(at)
        assert charts(at)
