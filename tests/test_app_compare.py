"""The Compare page, the step slider over a run's snapshots (sidebar and Compare's model B) and the Runs page's
what-and-where-over-training row, through AppTest: each control, and the figures against what Layers and Swap (and
core.analysis directly) compute for each model alone."""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app import sidebar
from core.analysis import cross_where, layer_views, mse
from core.data import load_examples
from core.model import SWWAE, load_checkpoint, rgb32_config, save_checkpoint
from core.runs import RUNS_ENV
from core.training import rundir, train
from tests.test_app import APP, TIMEOUT, ok
from tests.test_train import TINY_DATA, TINY_MODEL, tiny_train

HARD, NONE, SOFT = "checkpoints/ablation_hard.pt", "checkpoints/ablation_none.pt", "checkpoints/ablation_soft.pt"


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """A runs folder with one finished 100-step run (snapshots 1, 2, 5, 10, 20, 50, 100), a corrupt checkpoint and a
    model of another input shape."""
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train(TINY_MODEL, tiny_train(epochs=13, max_steps=100), TINY_DATA, run_dir=root / "tiny")
    torch.set_num_threads(threads)
    (root / "broken").mkdir()
    (root / "broken" / "last.pt").write_bytes(b"not a checkpoint")
    (root / "rgb").mkdir()
    rgb = rgb32_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=8)
    save_checkpoint(root / "rgb" / "best.pt", SWWAE(rgb))
    saved = os.environ.get(RUNS_ENV)
    os.environ[RUNS_ENV] = str(root)
    yield root
    if saved is None:
        os.environ.pop(RUNS_ENV, None)
    else:
        os.environ[RUNS_ENV] = saved


def open_page(page: str, model: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if model is not None:
        at.selectbox(key=sidebar.MODEL_CHOICE).set_value(model).run()
        ok(at)
    if page != "layers":
        at.switch_page(f"views/{page}.py").run()
    ok(at)
    return at


def metrics_rows(at: AppTest) -> dict[str, dict]:
    """The overview table's rows by model ("A", "B"), its figures as numbers."""
    return {row["model"]: row for row in at.table[0].value.to_dict("records")}


def probe_table(at: AppTest) -> dict[str, list[str]]:
    table = at.table[1].value
    return {name: list(table[name]) for name in table.columns}


def differences_line(at: AppTest) -> str:
    """The one line saying what A and B differ in."""
    return next(m.value for m in at.markdown if m.value.startswith("A and B "))


def findings(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown if m.value.startswith("- "))


def layers_mse(at: AppTest) -> str:
    """The reconstruction MSE the Layers page states (its overview line, or a metric where it has one)."""
    metrics = [m.value for m in at.metric if m.label == "Recon MSE"]
    lines = [found.group(1) for m in at.markdown if (found := re.search(r"reconstruction MSE ([0-9.]+)", m.value))]
    return (metrics or lines)[0]


def layers_recon_mse(model: str, index: int) -> str:
    at = open_page("layers", model)
    at.number_input(key="layers_index").set_value(index).run()
    ok(at)
    return layers_mse(at)


def test_compare_opens_on_the_where_ablation_and_matches_the_layers_page(runs_root):
    at = open_page("compare")
    assert at.title[0].value == "Compare"
    assert at.selectbox(key="compare_b").value == NONE  # the shipped model's where ablation, trained without where
    assert differences_line(at) == ("A and B differ in pooling (hard vs none), width (32/64/128 vs 16/32/64) and "
                                    "supervision (labels vs none): the differences below mix them.")
    at.number_input(key="compare_index").set_value(7).run()
    ok(at)
    rows = metrics_rows(at)
    assert rows["A"]["recon MSE"] == layers_recon_mse(sidebar.DEFAULT_CHECKPOINT, 7)  # both show 4 decimals
    assert rows["B"]["recon MSE"] == layers_recon_mse(NONE, 7)
    assert rows["B"]["top classes"] == "trained without labels"  # unsupervised: no prediction
    text = findings(at)
    assert f"B's reconstruction MSE is {rows['B']['recon MSE']}" in text and f"A's {rows['A']['recon MSE']}" in text
    assert "They disagree" not in text and "Both predict" not in text
    assert "same architecture" in " ".join(c.value for c in at.caption)  # 32/64/128 against 16/32/64: no crossing
    assert len(at.tabs) == 3 and len(at.get("image")) >= 3


def test_the_probe_table_equals_the_swap_pages_for_each_model(runs_root):
    at = open_page("compare")
    at.radio(key="compare_probe_set").set_value("50 dataset images").run()
    ok(at)
    table = probe_table(at)
    for model, column in ((sidebar.DEFAULT_CHECKPOINT, "A"), (NONE, "B")):
        swap = open_page("swap", model)
        swap.session_state["swap_section"] = "Shift probe: what invariance, where equivariance"
        swap.run()
        swap.radio(key="swap_probe_set").set_value("50 dataset digits").run()
        ok(swap)
        reference = swap.dataframe[0].value
        for name in ("what ÷ input", "switches followed", "chance"):  # the same numbers, from the same function
            assert table[f"{column} {name}"] == [f"{v:.3f}" for v in reference[name]], name
    text = findings(at)
    followed = [float(table[f"{m} switches followed"][0]) for m in "AB"]
    assert f"A {followed[0]:.0%}, B {followed[1]:.0%}" in text
    at.slider(key="compare_probe_shift").set_value(4).run()
    at.radio(key="compare_probe_axis").set_value("down (y)").run()
    ok(at)
    assert probe_table(at) != table
    shifted = probe_table(at)
    at.radio(key="compare_probe_set").set_value("this input (chance: another dataset image)").run()
    ok(at)
    assert probe_table(at) != shifted


def test_the_where_ablation_opens_on_its_other_end_and_follows_a(runs_root):
    at = open_page("compare", HARD)
    assert at.selectbox(key="compare_b").value == NONE
    assert differences_line(at) == "A and B differ in one thing: pooling (hard vs none)."
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(NONE).run()  # a new A: B is chosen again for it
    ok(at)
    assert at.selectbox(key="compare_b").value == HARD
    assert differences_line(at) == "A and B differ in one thing: pooling (none vs hard)."
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(SOFT).run()
    ok(at)
    assert at.selectbox(key="compare_b").value == HARD
    at.selectbox(key="compare_b").set_value(NONE).run()  # picked by hand: it stays when A changes
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(HARD).run()
    ok(at)
    assert at.selectbox(key="compare_b").value == NONE


def test_a_runs_checkpoint_opens_on_its_earlier_snapshot(runs_root):
    last = sidebar.source_of(runs_root / "tiny" / "last.pt")
    at = open_page("compare", last)
    assert at.selectbox(key="compare_b").value == last
    assert at.select_slider(key="compare_b_step_widget").value == 10  # the middle of the snapshots 1 ... 50
    assert any(f"**B**: {last} at step 10, an earlier snapshot of A's run" in c.value for c in at.caption)
    assert differences_line(at) == "A and B differ in one thing: training step (100 vs 10)."
    image = load_examples("mnist5k", channels=1, image_size=28).images[0]
    snapshot = load_checkpoint(rundir.snapshot_path(runs_root / "tiny", 10)).model
    assert metrics_rows(at)["B"]["recon MSE"] == f"{mse(layer_views(snapshot, image)[2].recon, image):.4f}"


def test_same_architecture_crosses_b_where_into_a_decoder(runs_root):
    at = open_page("compare", HARD)
    at.selectbox(key="compare_b").set_value(NONE).run()
    ok(at)
    image = load_examples("mnist5k", channels=1, image_size=28).images[0]
    expected = cross_where(load_checkpoint(HARD).model, load_checkpoint(NONE).model, image, [0, 1, 2])
    text = findings(at)
    assert f"stages 1, 2, 3: MSE {expected.mse:.4f}" in text
    assert f"A's own {expected.own_mse:.4f}" in text
    assert f"{100 * expected.same_switch[0]:.0f}% at stage 1" in text
    picture = str(at.get("image")[-1].proto)
    for stage in range(3):
        at.checkbox(key=f"compare_cross_{stage}").uncheck().run()
    ok(at)
    assert "A's decoder with B's where" not in findings(at)  # nothing crossed: no such sentence
    assert str(at.get("image")[-1].proto) != picture


def test_model_b_of_another_shape_or_unreadable_is_one_line(runs_root):
    at = open_page("compare")
    rgb = sidebar.source_of(runs_root / "rgb" / "best.pt")
    at.selectbox(key="compare_b").set_value(rgb).run()
    assert not at.exception
    assert "choose a model B of A's input shape" in at.warning[0].value
    at.selectbox(key="compare_b").set_value(sidebar.source_of(runs_root / "broken" / "last.pt")).run()
    assert not at.exception
    assert len(at.error) == 1 and "Could not load" in at.error[0].value and "\n" not in at.error[0].value


def test_model_b_step_slider_shows_a_snapshot(runs_root):
    at = open_page("compare")
    at.selectbox(key="compare_b").set_value(sidebar.source_of(runs_root / "tiny" / "last.pt")).run()
    ok(at)
    slider = at.select_slider(key="compare_b_step_widget")
    assert list(slider.options) == ["1", "2", "5", "10", "20", "50", "100 (last.pt)"]
    latest = metrics_rows(at)["B"]["recon MSE"]
    slider.set_value(1).run()
    ok(at)
    assert any("at step 1 (snapshot)" in c.value for c in at.caption)
    image = load_examples("mnist5k", channels=1, image_size=28).images[0]
    first = load_checkpoint(rundir.snapshot_path(runs_root / "tiny", 1)).model
    assert metrics_rows(at)["B"]["recon MSE"] == f"{mse(layer_views(first, image)[2].recon, image):.4f}"
    assert metrics_rows(at)["B"]["recon MSE"] != latest


def test_sidebar_step_slider_changes_what_layers_shows(runs_root):
    at = open_page("layers", sidebar.source_of(runs_root / "tiny" / "best.pt"))
    slider = at.select_slider(key=f"{sidebar.SNAPSHOT_STEP}_widget")
    assert slider.value == 96  # best.pt: the last epoch end, between the snapshots of 50 and 100
    assert list(slider.options)[-3:] == ["50", "96 (best.pt)", "100"]
    before = layers_mse(at)
    slider.set_value(5).run()
    ok(at)
    assert at.session_state[sidebar.SNAPSHOT_STEP] == 5
    after = layers_mse(at)
    image = load_examples("mnist5k", channels=1, image_size=28).images[0]
    model = load_checkpoint(rundir.snapshot_path(runs_root / "tiny", 5)).model
    assert after == f"{mse(layer_views(model, image)[2].recon, image):.4f}" != before
    at.switch_page("views/swap.py").run()  # the step holds on every page
    ok(at)
    assert any("at step 5 (snapshot)" in c.value for c in at.caption)
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(sidebar.DEFAULT_CHECKPOINT).run()
    ok(at)
    assert at.session_state[sidebar.SNAPSHOT_STEP] is None  # another model starts at its own file


def test_runs_page_shows_the_where_at_every_snapshot_step(runs_root):
    at = open_page("runs")
    at.selectbox(key="runs_formation_run").set_value("tiny").run()
    ok(at)
    captions = [img.proto.imgs[0].caption for img in at.get("image") if img.proto.imgs]
    assert any("at every snapshot step" in c and "stage 1" in c for c in captions)
    at.selectbox(key="runs_formation_stage").set_value(1).run()
    at.selectbox(key="runs_formation_channel").set_value(3).run()
    at.selectbox(key="runs_formation_image").set_value(2).run()
    ok(at)
    captions = [img.proto.imgs[0].caption for img in at.get("image") if img.proto.imgs]
    assert any("stage 2, channel 3" in c for c in captions)


def test_an_unreadable_snapshot_is_one_line_and_the_checkpoint_stays(runs_root):
    run = runs_root / "tiny-corrupt"
    shutil.copytree(runs_root / "tiny", run, ignore=shutil.ignore_patterns("lock"))
    rundir.snapshot_path(run, 5).write_bytes(b"truncated")
    at = open_page("layers", sidebar.source_of(run / "last.pt"))
    checkpoint_mse = layers_mse(at)
    at.select_slider(key=f"{sidebar.SNAPSHOT_STEP}_widget").set_value(5).run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("Could not load the snapshot")
    assert "\n" not in at.error[0].value
    assert layers_mse(at) == checkpoint_mse  # the checkpoint itself is shown
    assert not any("(snapshot)" in c.value for c in at.caption)
    at.switch_page("views/runs.py").run()
    at.selectbox(key="runs_formation_run").set_value("tiny-corrupt").run()
    assert not at.exception
    assert any("1 snapshot(s) could not be read: step 5" in w.value for w in at.warning)


def test_compare_draws_the_chosen_stage_tab(runs_root):
    at = open_page("compare")
    first = [str(image.proto) for image in at.get("image")]
    at.session_state["compare_stage_tab"] = "Stage 3"  # = clicking the tab
    at.run()
    ok(at)
    assert [str(image.proto) for image in at.get("image")] != first
    key = next(c.value for c in at.caption if c.value.startswith("Where key."))  # beside the where key picture
    assert "Grey: a tie, a window whose largest value occurs more than once" in key
    assert "B (none): its decoder ignores the switches" in key
