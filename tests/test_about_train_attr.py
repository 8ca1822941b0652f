"""Issue 24 items 4, 6, 7: the About page and its glossary anchors, the Train form's defaults and time estimate, and the
Attribution page's class-sensitivity line and SWWAE unit decoding, checked against numpy and core.analysis directly."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from app.glossary import GLOSSARY, anchor, term_link
from core.analysis import (
    METHODS, NEARLY_SAME, attribute, evaluating, map_correlation, target_contrast, top_unit, unit_decodings,
)
from core.data import load_examples
from core.model import load_checkpoint
from tests.test_attribution import image, model  # noqa: F401 - shared fixtures
from tests.test_runs_app import ok, open_page

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "checkpoints" / "default.pt"
REQUIRED_TERMS = ("what", "where", "switch", "pooling window", "stride", "L2rec", "L2M", "invariance", "equivariance",
                  "tie", "soft pooling", "unpooling")


# --- core: the numbers the Attribution page prints -----------------------------------------------------------------

def test_map_correlation_is_numpys_corrcoef():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(28, 28)), rng.normal(size=(28, 28))
    b += 0.7 * a
    assert map_correlation(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-12)
    assert map_correlation(a, 3 * a + 1) == pytest.approx(1.0)
    assert np.isnan(map_correlation(a, np.full_like(a, 2.0)))  # a constant map correlates with nothing


def test_target_contrast_correlates_the_two_most_likely_classes_maps(model, image):
    contrasts = target_contrast(model, image, METHODS, ig_steps=8)
    with torch.no_grad():
        first, second = model.encode(image.unsqueeze(0)).logits[0].topk(2).indices.tolist()
    assert [c.method for c in contrasts] == list(METHODS)
    for contrast in contrasts:
        assert (contrast.first.target, contrast.second.target) == (first, second)
        maps = [attribute(model, image, contrast.method, target, ig_steps=8).values.mean(0) for target in (first, second)]
        np.testing.assert_allclose(contrast.first.values.mean(0), maps[0], rtol=1e-5, atol=1e-7)
        assert contrast.correlation == pytest.approx(np.corrcoef(maps[0].ravel(), maps[1].ravel())[0, 1], abs=1e-6)
        assert contrast.nearly_same == (contrast.correlation >= NEARLY_SAME)


def test_top_unit_is_the_strongest_top_channel_decoded_alone(model, image):
    unit = top_unit(model, image)
    with torch.no_grad():
        whats = model.encode(image.unsqueeze(0)).whats[-1][0]  # (C, h, w)
    assert (unit.view.stage, unit.view.channel) == (len(model.config.channels) - 1, int(whats.amax((1, 2)).argmax()))
    decodings, contributions = unit_decodings(model, image.unsqueeze(0), unit.view.stage, unit.view.channel)
    np.testing.assert_allclose(unit.view.decoding, decodings[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(unit.contribution * unit.scale, contributions[0].numpy().mean(0), rtol=1e-5, atol=1e-6)
    assert np.abs(unit.contribution).max() == pytest.approx(1.0)


# --- the glossary and the About page --------------------------------------------------------------------------------

def test_glossary_links_name_the_about_pages_anchors():
    assert set(REQUIRED_TERMS) <= set(GLOSSARY)
    assert term_link("tie") == "[tie](about#tie)"
    assert term_link("pooling window", "windows") == "[windows](about#pooling-window)"
    assert len({anchor(term) for term in GLOSSARY}) == len(GLOSSARY)  # one anchor per term
    with pytest.raises(AssertionError, match="not in the glossary"):
        term_link("wormhole")


def test_about_page_shows_every_term_under_its_anchor_and_a_five_step_tour():
    at = open_page("about")
    headings = {h.value: h.proto.anchor for h in at.subheader}
    for term in GLOSSARY:
        assert headings.get(term) == anchor(term), (term, headings)
        assert any(GLOSSARY[term] in m.value for m in at.markdown), term
    links = [link.proto for link in at.get("page_link")]
    tour = [link for link in links if re.match(r"\d · ", link.label)]
    assert [link.label[0] for link in tour] == list("12345")
    assert [link.page for link in tour] == ["", "", "swap", "compare", "runs"]  # url paths; Layers is the default page


# --- the Train form -------------------------------------------------------------------------------------------------

def test_train_form_defaults_agree_and_fields_apply_only_when_they_matter():
    at = open_page("train")
    assert at.selectbox(key="train_mode").value == "supervised"
    labelled = next(n for n in at.number_input if n.label == "Labelled images kept")
    assert labelled.disabled and labelled.value is None and labelled.placeholder == "every label"
    assert not any(n.value == -1 for n in at.number_input)  # no magic values in the form
    assert at.number_input(key="train_max_train").value is None and at.number_input(key="train_max_steps").value is None
    channels = next(t for t in at.text_input if t.label == "Custom channels")
    assert channels.disabled and channels.value == "32 64 128"  # the default architecture's, shown, not editable

    at.selectbox(key="train_mode").set_value("semi-supervised").run()
    ok(at)
    assert at.number_input(key="train_labels").value >= 1 and not at.number_input(key="train_labels").disabled
    at.selectbox(key="train_architecture").set_value("custom").run()
    assert not at.text_input(key="train_channels").disabled
    at.text_input(key="train_channels").input("8").run()  # one stage: no intermediate reconstruction to weigh
    assert at.number_input(key="train_lambda_mid").disabled
    at.text_input(key="train_folder").input("/nonexistent/images").run()
    assert at.selectbox(key="train_dataset").disabled  # a folder replaces the dataset


def test_train_form_estimates_the_runs_time_from_measured_steps():
    at = open_page("train")
    at.selectbox(key="train_architecture").set_value("tiny (4, 8)")
    at.selectbox(key="train_device").set_value("cpu")
    at.number_input(key="train_epochs").set_value(3)
    at.number_input(key="train_batch_size").set_value(50).run()
    ok(at)
    assert any(re.fullmatch(r"\*\*About \d+ (s|min)\*\* on this machine's CPU", m.value) for m in at.markdown), \
        [m.value for m in at.markdown]
    detail = next(c.value for c in at.caption if c.value.startswith("Estimate:"))
    assert "270 steps (90 per epoch of 4,500 images)" in detail, detail  # 3 epochs × 4,500 // 50
    at.number_input(key="train_max_steps").set_value(40).run()
    assert "40 steps" in next(c.value for c in at.caption if c.value.startswith("Estimate:"))


# --- the Attribution page -------------------------------------------------------------------------------------------

def test_attribution_sanity_line_quotes_the_maps_correlation():
    at = open_page("attribution")
    at.select_slider(key="attr_ig_steps").set_value(8).run()
    ok(at)
    line = next(m.value for m in at.markdown if "r = " in m.value and "correlat" in m.value)
    quoted = dict(re.findall(r"(Integrated Gradients|Saliency|Deconvolution \(Zeiler-Fergus\)|Guided Backprop) "
                             r"r = (-?\d\.\d\d)", line))
    assert len(quoted) == 4, line

    checkpoint = load_checkpoint(DEFAULT)
    examples = load_examples(checkpoint.dataset, channels=1, image_size=28)
    image = examples.images[at.number_input(key="attr_index").value]
    with evaluating(checkpoint.model), torch.no_grad():  # logits, not probabilities: no ties where p underflows
        first, second = checkpoint.model.encode(image.unsqueeze(0)).logits[0].topk(2).indices.tolist()
    labels = dict(zip(METHODS, ("Integrated Gradients", "Saliency", "Deconvolution (Zeiler-Fergus)", "Guided Backprop")))
    for method, label in labels.items():
        maps = [attribute(checkpoint.model, image, method, target, ig_steps=8).values.mean(0) for target in (first, second)]
        assert float(quoted[label]) == pytest.approx(np.corrcoef(maps[0].ravel(), maps[1].ravel())[0, 1], abs=0.0051)
    assert any("decoded alone" in str(chart.proto.spec) for chart in at.get("plotly_chart")), "no unit decoding"
    assert any("switches" in c.value and "correlate at r =" in c.value for c in at.caption)
