"""The explorer against files that change under it or do not fit (issue 23), through AppTest: a checkpoint rewritten in
place with other weights at the same step shows the new weights' numbers on every page that caches a model's results;
a run's snapshot of another input shape is refused in one line (the checkpoint itself shown); a run folder with
thousands of snapshot files shows at most MAX_SNAPSHOTS of them, spread over the run, and says how many it skipped."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app import sidebar
from core.analysis import channel_peaks, layer_views, mse, spread_evenly, top_images
from core.data import load_examples
from core.model import SWWAE, rgb32_config, save_checkpoint
from core.runs import RUNS_ENV
from core.training import MAX_SNAPSHOTS, rundir
from tests.test_app import APP, TIMEOUT, ok
from tests.test_train import TINY_DATA, TINY_MODEL, tiny_train

STEP = 40  # the checkpoint's step: a rewrite keeps it
TOP_COUNT = 9  # top images the Layers page shows per unit
SNAPSHOT_STEPS = (1, 5, 20, STEP)


def save_tiny(path: Path, seed: int, step: int = STEP, config=TINY_MODEL) -> SWWAE:
    """A tiny model with weights drawn from `seed`, saved as a checkpoint of `step` (as a trainer writes it)."""
    torch.manual_seed(seed)
    model = SWWAE(config).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, train_config=asdict(tiny_train()), data_config=asdict(TINY_DATA), step=step)
    return model


def rewrite_in_place(path: Path, seed: int, step: int = STEP) -> SWWAE:
    """Other weights in the file at `path`, at the same step and size, its modification time put back (as `cp -p`,
    `rsync -t` or a rewrite within one clock tick leave it): only its contents say it changed."""
    before = path.stat()
    model = save_tiny(path, seed, step)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    return model


def write_run(run: Path, seed: int = 0) -> None:
    """A finished run folder: config.json, status.json, best.pt at STEP and snapshots at SNAPSHOT_STEPS."""
    run.mkdir(parents=True)
    rundir.write_config(run, model=asdict(TINY_MODEL), train=asdict(tiny_train()), data=asdict(TINY_DATA))
    rundir.write_status(run, "finished", step=STEP, epoch=5, total_steps=STEP)
    save_tiny(run / rundir.BEST_CHECKPOINT, seed)
    for number, step in enumerate(SNAPSHOT_STEPS):
        save_tiny(rundir.snapshot_path(run, step), seed + number + 1, step)


@pytest.fixture
def runs_root(tmp_path):
    saved = os.environ.get(RUNS_ENV)
    os.environ[RUNS_ENV] = str(tmp_path)
    yield tmp_path
    if saved is None:
        os.environ.pop(RUNS_ENV, None)
    else:
        os.environ[RUNS_ENV] = saved


def open_page(page: str, model: Path | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if model is not None:
        at.selectbox(key=sidebar.MODEL_CHOICE).set_value(sidebar.source_of(model)).run()
        ok(at)
    if page != "layers":
        at.switch_page(f"views/{page}.py").run()
    ok(at)
    return at


def examples() -> torch.Tensor:
    return load_examples("mnist5k", channels=1, image_size=28).images


# ---- a checkpoint rewritten in place (hole 2) -----------------------------------------------------------------------

def top_captions(at: AppTest) -> list[str]:
    """The Layers page's top images of the unit shown (stage 1, channel 0): '#index (class): largest what'."""
    return next(c for image in at.get("image") for c in [image.captions] if c and c[0].startswith("#"))


def expected_top_captions(model: SWWAE) -> list[str]:
    """The largest whats of the Layers page's top images of stage 1, channel 0, computed by core.analysis alone."""
    peaks = channel_peaks(model, examples())[0]  # (N, C) at stage 1
    indices = top_images(peaks, 0, TOP_COUNT)
    return [f"{p:.2f}" for p in peaks[indices, 0]]


def test_layers_top_images_follow_a_checkpoint_rewritten_at_the_same_step(runs_root):
    checkpoint = runs_root / "export" / "model.pt"
    first = save_tiny(checkpoint, seed=1)
    at = open_page("layers", checkpoint)
    assert [c.rsplit(": ", 1)[1] for c in top_captions(at)] == expected_top_captions(first)
    recon_before = next(m.value for m in at.metric if m.label == "Recon MSE")

    second = rewrite_in_place(checkpoint, seed=2)
    at.run()
    ok(at)
    assert [c.rsplit(": ", 1)[1] for c in top_captions(at)] == expected_top_captions(second)
    image = examples()[0]
    recon_after = next(m.value for m in at.metric if m.label == "Recon MSE")
    assert recon_after == f"{mse(layer_views(second, image)[2].recon, image):.4f}" != recon_before


def probe_numbers(at: AppTest) -> list[float]:
    table = at.dataframe[0].value
    return [float(v) for column in ("what ÷ input", "switches followed") for v in table[column]]


def test_swap_and_compare_shift_probes_follow_a_checkpoint_rewritten_at_the_same_step(runs_root):
    checkpoint = runs_root / "export" / "model.pt"
    save_tiny(checkpoint, seed=1)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["swap_section"] = "Shift probe: what invariance, where equivariance"
    at.session_state["swap_probe_set"] = "50 dataset digits"  # cached per model: the key that went stale
    at.run()
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(sidebar.source_of(checkpoint)).run()
    at.switch_page("views/swap.py").run()
    ok(at)
    before = probe_numbers(at)
    at.switch_page("views/compare.py").run()
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(sidebar.DEFAULT_CHECKPOINT).run()
    at.selectbox(key="compare_b").set_value(sidebar.source_of(checkpoint)).run()
    ok(at)
    b_before = list(at.table[1].value["B what ÷ input"])

    rewrite_in_place(checkpoint, seed=2)
    at.run()
    ok(at)
    assert list(at.table[1].value["B what ÷ input"]) != b_before  # model B's curves
    at.selectbox(key=sidebar.MODEL_CHOICE).set_value(sidebar.source_of(checkpoint)).run()
    at.switch_page("views/swap.py").run()
    ok(at)
    assert probe_numbers(at) != before


def reconstructions_row(at: AppTest) -> str:
    """The URL of the Runs page's picture of the samples' reconstructions at every snapshot step."""
    return next(image.proto.imgs[0].url for image in at.get("image")
                if image.proto.imgs and image.proto.imgs[0].caption.startswith("Reconstructions of"))


def test_runs_formation_follows_a_snapshot_rewritten_in_place(runs_root):
    run = runs_root / "tiny"
    write_run(run)
    at = open_page("runs")
    at.selectbox(key="runs_formation_run").set_value("tiny").run()
    ok(at)
    before = reconstructions_row(at)
    rewrite_in_place(rundir.snapshot_path(run, 5), seed=99, step=5)
    at.run()
    ok(at)
    assert reconstructions_row(at) != before  # step 5's reconstructions (and MSE) come from the new weights


# ---- a snapshot of another input shape (hole 1) ---------------------------------------------------------------------

RGB = rgb32_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=8)


def test_a_snapshot_of_another_input_shape_is_refused_in_one_line_on_every_page(runs_root):
    run = runs_root / "mixed"
    write_run(run)
    save_tiny(rundir.snapshot_path(run, 5), seed=7, step=5, config=RGB)  # a 3x32x32 model in a 1x28x28 run
    at = open_page("layers", run / rundir.BEST_CHECKPOINT)
    at.select_slider(key=f"{sidebar.SNAPSHOT_STEP}_widget").set_value(5).run()
    for page in ("layers", "swap", "attribution", "compare"):
        if page != "layers":
            at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        refusals = [e.value for e in at.error if "snapshot of step 5" in e.value]
        assert len(refusals) == 1 and "\n" not in refusals[0], (page, [e.value for e in at.error])
        assert "3x32x32" in refusals[0] and "1x28x28" in refusals[0]
        assert refusals[0].endswith("/best.pt.")  # the checkpoint itself, named
        assert "(snapshot)" not in " ".join(c.value for c in at.caption)  # the checkpoint itself is shown


def test_compare_refuses_model_b_snapshot_of_another_input_shape(runs_root):
    run = runs_root / "mixed"
    write_run(run)
    save_tiny(rundir.snapshot_path(run, 5), seed=7, step=5, config=RGB)
    at = open_page("compare")
    at.selectbox(key="compare_b").set_value(sidebar.source_of(run / rundir.BEST_CHECKPOINT)).run()
    ok(at)
    at.select_slider(key="compare_b_step_widget").set_value(5).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("snapshot of step 5" in e.value and "3x32x32" in e.value for e in at.error)
    assert at.table  # the comparison is drawn, with B's checkpoint itself


# ---- thousands of snapshot files (hole 7) ---------------------------------------------------------------------------

def test_spread_evenly_keeps_the_first_and_last_and_at_most_the_limit():
    items = list(range(2_004))
    chosen = spread_evenly(items, 30)
    assert len(chosen) == 30 and chosen[0] == 0 and chosen[-1] == 2_003
    assert chosen == sorted(set(chosen))
    gaps = np.diff(chosen)
    assert gaps.max() - gaps.min() <= 1  # even
    assert spread_evenly(items[:30], 30) == items[:30] and spread_evenly([], 30) == []
    assert spread_evenly(items[:31], 30)[-1] == 30
    with pytest.raises(ValueError):
        spread_evenly(items, 1)


def add_copies(run: Path, count: int, first_step: int = 1_000) -> None:
    """`count` more snapshot files, links to one snapshot (files copied in by hand or another tool)."""
    source = rundir.snapshot_path(run, 5)
    for step in range(first_step, first_step + count):
        os.link(source, rundir.snapshot_path(run, step))


def test_runs_page_draws_at_most_max_snapshots_of_thousands_and_says_how_many_it_skipped(runs_root):
    run = runs_root / "crowded"
    write_run(run)
    add_copies(run, 2_000)  # 2,004 files in all
    at = open_page("runs")
    at.selectbox(key="runs_formation_run").set_value("crowded").run()
    ok(at)
    steps = next(c.value for c in at.caption if c.value.startswith("Snapshot steps"))
    assert len(steps.split(": ", 1)[1].split(", ")) == MAX_SNAPSHOTS
    assert steps.split(": ", 1)[1].startswith("1, ") and steps.endswith("2,999")  # the first and the last
    assert any("1,974 of the run's 2,004 snapshot files skipped" in c.value for c in at.caption)


def test_sidebar_step_slider_over_ten_thousand_snapshot_files_offers_a_spread_and_works(runs_root):
    run = runs_root / "crowded"
    write_run(run)
    add_copies(run, 10_000)
    at = open_page("layers", run / rundir.BEST_CHECKPOINT)
    slider = at.select_slider(key=f"{sidebar.SNAPSHOT_STEP}_widget")
    assert len(slider.options) <= MAX_SNAPSHOTS + 1  # the spread and best.pt itself
    assert slider.options[0] == "1" and slider.options[-1] == "10,999"
    assert any("9,974 more snapshot files" in c.value for c in at.sidebar.caption)
    slider.set_value(10_999).run()
    ok(at)
    assert "at step 5 (snapshot)" in at.caption[0].value  # the file of step 10,999 is a copy of step 5's
    at.switch_page("views/swap.py").run()
    ok(at)
    assert at.select_slider(key=f"{sidebar.SNAPSHOT_STEP}_widget").value == 10_999
