"""The Layers page's unit view and the honest class outputs of unsupervised models, through AppTest.

The top images are checked against an independent reference: the model's own encoder over the example set, ranked
here with torch.sort, not through core.analysis."""
import re
from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest

from app import sidebar
from core.model import load_checkpoint, save_checkpoint
from core.data import DataConfig, load_split
from core.model import SWWAE, digits_config

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")
TIMEOUT = 120
STAGE, CHANNEL = "layers_unit_stage", "layers_unit_channel"


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def images(at: AppTest) -> list:
    return at.get("image")


def top_captions(at: AppTest) -> list[str]:
    """Captions of the top-images element: '#<index> (label <label>): <peak>'."""
    return next(i.captions for i in images(at) if i.captions and i.captions[0].startswith("#"))


def unit_header(at: AppTest) -> str:
    return next(h.value for h in at.subheader if h.value.startswith("Unit view")).removesuffix(" decoded alone")


def reference_top(model: SWWAE, stage: int, channel: int, count: int = 9) -> list[int]:
    examples, _ = load_split(DataConfig(dataset="mnist5k", download=False), "val", channels=1, image_size=28)
    with torch.inference_mode():
        peaks = torch.cat([model.encode(batch).whats[stage][:, channel].amax(dim=(1, 2))
                           for batch in examples.split(250)])  # (N,)
    return torch.sort(peaks, descending=True, stable=True).indices[:count].tolist()


def test_unit_view_from_the_select_boxes_matches_an_independent_ranking():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    ok(at)
    assert unit_header(at) == "Unit view: stage 1, channel 0"
    at.selectbox(key=STAGE).set_value(1).run()
    ok(at)
    assert at.session_state["layers_stage_tab"].startswith("Stage 2")  # the tab follows the select box
    assert any(c.proto.id.endswith("layers_maps_1") for c in at.get("plotly_chart"))  # only the open stage is drawn
    assert not any(c.proto.id.endswith("layers_maps_0") for c in at.get("plotly_chart"))
    at.selectbox(key=CHANNEL).set_value(17).run()
    ok(at)
    assert unit_header(at) == "Unit view: stage 2, channel 17"
    unit_pictures = [i for i in images(at) if len(i.captions) == 3 and not i.captions[0].startswith("#")]
    assert [len(i.captions) for i in unit_pictures] == [3]  # decoding, contribution, recon (the maps: the lens)
    assert "decoding of this unit" in unit_pictures[0].captions[0]
    assert any("Whole reconstruction MSE" in c.value for c in at.caption)
    assert any(c.key == "layers_lens" for c in at.get("plotly_chart"))
    captions = top_captions(at)
    assert len(captions) == 9
    shown = [int(re.match(r"#(\d+)", c).group(1)) for c in captions]
    peaks = [float(c.rsplit(": ", 1)[1]) for c in captions]
    assert peaks == sorted(peaks, reverse=True)
    model = load_checkpoint(ROOT / sidebar.DEFAULT_CHECKPOINT).model
    expected = reference_top(model, 1, 17)
    assert shown == expected


def test_a_model_switch_keeps_the_unit_inside_the_new_model(tmp_path):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.selectbox(key=STAGE).set_value(2).run()
    at.selectbox(key=CHANNEL).set_value(120).run()
    ok(at)
    assert unit_header(at) == "Unit view: stage 3, channel 120"
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "small.pt", SWWAE(digits_config(channels=(8, 16), kernel_sizes=(3, 3),
                                                                pool_sizes=(2, 2))))
    at.file_uploader(key=sidebar.MODEL_UPLOAD).set_value(
        ("small.pt", (tmp_path / "small.pt").read_bytes(), "application/octet-stream")).run()
    ok(at)
    assert len(at.tabs) == 2
    assert unit_header(at) == "Unit view: stage 1, channel 0"  # stage 3 and channel 120 do not exist there
    assert len(top_captions(at)) == 9


def test_unsupervised_model_shows_no_class_outputs():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert any(m.value.startswith("Predicted **") for m in at.markdown)
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value("checkpoints/ablation_hard.pt").run()
    ok(at)
    assert not any(m.value.startswith("Predicted") for m in at.markdown)
    assert any(m.value.startswith("reconstruction MSE") for m in at.markdown)
    assert not any("probability-bars" in m.value for m in at.markdown)
    assert any("trained without labels" in c.value for c in at.caption)
    assert len(top_captions(at)) == 9  # the unit view works without a classifier

    at.switch_page("views/attribution.py").run()
    ok(at)
    assert any("classifier head keeps its random initial weights" in i.value for i in at.info)
    assert not any("probability-bars" in m.value for m in at.markdown)
    assert "p=" not in str(at.selectbox(key="attr_target").options)
    at.selectbox(key="attr_target").set_value(3).run()
    ok(at)
    assert any("Explaining class 3 of an untrained head" in c.value for c in at.caption)


def test_supervised_model_keeps_its_class_outputs_on_attribution():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("views/attribution.py").run()
    ok(at)
    assert not at.info
    assert any("probability-bars" in m.value for m in at.markdown)
    assert "p=" in str(at.selectbox(key="attr_target").options)
