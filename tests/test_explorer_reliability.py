"""The explorer against files that change under it or do not fit (issue 23), through AppTest: a checkpoint rewritten in
place with other weights at the same step shows the new weights' numbers on every page that caches a model's results;
a run's snapshot of another input shape is refused in one line (the checkpoint itself shown); a run folder with
thousands of snapshot files shows at most MAX_SNAPSHOTS of them, spread over the run, and says how many it skipped;
no page imports a library that another session's page may be using half made."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app import sidebar
from core.analysis import channel_peaks, spread_evenly, top_images
from core.data import load_examples
from core.model import SWWAE, rgb32_config, save_checkpoint
from core.runs import RUNS_ENV
from core.training import MAX_SNAPSHOTS, rundir
from tests.test_app import APP, ROOT, TIMEOUT, ok
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


def shown(at: AppTest) -> sidebar.Explorer:
    """The Explorer the pages of the last run were given."""
    return at.session_state[sidebar.EXPLORER]


def same_weights(a: SWWAE, b: SWWAE) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


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
    identity = shown(at).identity

    second = rewrite_in_place(checkpoint, seed=2)
    at.run()
    ok(at)
    assert shown(at).identity != identity
    assert same_weights(shown(at).model, second)  # the model itself, not only the analyses
    assert [c.rsplit(": ", 1)[1] for c in top_captions(at)] == expected_top_captions(second)


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
        assert shown(at).source == sidebar.source_of(run / rundir.BEST_CHECKPOINT)  # the checkpoint itself


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
    assert shown(at).source == sidebar.source_of(rundir.snapshot_path(run, 10_999))
    at.switch_page("views/swap.py").run()
    ok(at)
    assert at.select_slider(key=f"{sidebar.SNAPSHOT_STEP}_widget").value == 10_999


# ---- libraries imported while several sessions run (hole 9) ---------------------------------------------------------

# Libraries that Plotly, Narwhals and Streamlit look up in sys.modules without importing them: one imported by a
# session's page is half made for a moment, and another session's figure fails on it.
WATCHED = ("pandas", "pyarrow", "narwhals", "PIL", "matplotlib", "captum", "jinja2")
# Records each import of a WATCHED module made by code that a page runs: the innermost module being executed is the
# entry script or a page (app/main.py, app/views/*.py), not a module being imported (an import nested in another
# module's import is serialised by that module's import lock, so it happens once, before any page uses it).
LATE_IMPORTS = f"""
import json, sys, traceback
from streamlit.testing.v1 import AppTest

late = set()

class Record:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {WATCHED!r}:
            running = [f.filename for f in traceback.extract_stack() if f.name == "<module>"
                       and not f.filename.startswith("<frozen")]
            if running and (running[-1].endswith("app/main.py") or "app/views/" in running[-1]):
                late.add(name)
        return None

at = AppTest.from_file({APP!r}, default_timeout=300)
sys.meta_path.insert(0, Record())
at.run()
for page in ("swap", "compare", "attribution"):
    at.switch_page(f"views/{{page}}.py").run()
    assert not at.exception, [e.value for e in at.exception]
print(json.dumps(sorted(late)))
"""


def test_every_library_the_pages_import_lazily_is_imported_before_any_page_runs():
    """A fresh interpreter runs the explorer pages as a server's first session does: every watched library (and each
    submodule the pages reach) is imported by app.preload, which app/main.py imports first, never by a page."""
    result = subprocess.run([sys.executable, "-c", LATE_IMPORTS], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# ---- sessions asking for the same slow analysis at once (hole 10) ---------------------------------------------------

def test_sessions_asking_for_one_slow_analysis_at_once_compute_it_once(monkeypatch):
    """Three sessions' threads ask for the same model's shift probe over the dataset at the same moment (the Swap and
    Compare pages' slowest cached work): it is computed once, the others wait for it (Streamlit's per-key compute
    lock), rather than every session computing it on the shared cores. (Through the cached function itself: AppTest
    gives every run a cache store of its own, so it cannot show this.)"""
    import threading
    import time

    from app import probes

    calls = []

    def slow_shift_curves(model, images, shifts, reference=None):
        calls.append(threading.get_ident())
        time.sleep(1.0)  # wide enough for the other sessions to ask meanwhile
        return [len(images)]

    monkeypatch.setattr(probes, "shift_curves", slow_shift_curves)
    images = torch.zeros(8, 1, 28, 28)
    answers = []
    sessions = [threading.Thread(target=lambda: answers.append(
        probes.dataset_curves(f"test-model@{os.getpid()}-{id(images)}", "mnist5k", 4, None, images)))
        for _ in range(3)]
    for session in sessions:
        session.start()
    for session in sessions:
        session.join()
    assert answers == [[4]] * 3
    assert len(calls) == 1, f"computed {len(calls)} times"
