"""The Train and Runs pages through AppTest, with real training processes (tiny models on mnist5k, seconds
each) in a temporary runs folder ($SWWAE_RUNS_DIR), never the repository's runs/."""
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.training import rundir
from core.runs import RUNS_ENV, pid_alive, read_launch, summarize

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")
TIMEOUT = 120
TINY = ["--channels", "4", "8", "--kernel-sizes", "3", "3", "--pool-sizes", "2", "2", "--head-width", "0",
        "--device", "cpu", "--batch-size", "32", "--max-train", "128", "--max-val", "64", "--log-every", "1"]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    saved = {name: os.environ.get(name) for name in (RUNS_ENV, "OMP_NUM_THREADS")}
    os.environ[RUNS_ENV] = str(root)
    os.environ["OMP_NUM_THREADS"] = "1"  # training processes share the CPU with the tests
    yield root
    for run_dir in root.iterdir():  # leave no training process behind, whatever happened
        launched = read_launch(run_dir)
        if launched and pid_alive(launched["pid"]):
            os.kill(launched["pid"], signal.SIGKILL)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def cli_run(runs_root):
    """A run started from a terminal, not from the app; it trains while other tests run."""
    run_dir = runs_root / "from-cli"
    process = subprocess.Popen([sys.executable, "-m", "core.train", "--dataset", "mnist5k", "--run", str(run_dir),
                                "--epochs", "2", "--quiet", *TINY], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    yield run_dir, process
    if process.poll() is None:
        process.kill()
        process.wait()


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page(f"views/{page}.py").run()
    ok(at)
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def wait_for(run_dir: Path, states: tuple[str, ...], at: AppTest | None = None, timeout: float = 180,
             min_step: int = 0):
    """Rerun the app (when given) until the run reaches one of `states`; returns its summary."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if at is not None:
            at.run()
            assert not at.exception, [e.value for e in at.exception]
        summary = summarize(run_dir)
        if summary.state in states and summary.step >= min_step:
            if at is not None:  # the state may have changed after the rerun above: show the page that state
                at.run()
                assert not at.exception, [e.value for e in at.exception]
            return summary
        time.sleep(0.5)
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").exists() else ""
    raise AssertionError(f"{run_dir.name} is {summarize(run_dir).state}, not {states}, after {timeout} s\n{log}")


def decode(values):
    """A plotly JSON array: a list, or {"dtype", "bdata"} (base64 typed array)."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def curve(at: AppTest, run: str, kind: str = "train", axis: str = "x") -> tuple[list, list]:
    """(steps, values) of one run's line in one chart (axis 'x' = the first chart, the total loss)."""
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    for trace in spec["data"]:
        if trace["name"] == f"{run} · {kind}" and trace.get("xaxis", "x") == axis:
            return decode(trace["x"]), decode(trace["y"])
    raise AssertionError(f"no {run} {kind} line in chart {axis}: {[t['name'] for t in spec['data']]}")


def table(at: AppTest) -> dict[str, str]:
    frame = at.dataframe[0].value
    return dict(zip(frame["run"], frame["state"]))


def fill_form(at: AppTest, name: str, **numbers) -> AppTest:
    at.text_input(key="train_name").input(name)
    at.selectbox(key="train_architecture").set_value("tiny (4, 8)")
    at.selectbox(key="train_device").set_value("cpu")
    values = {"epochs": 1, "batch_size": 32, "max_train": 128, "log_every": 1} | numbers
    for key, value in values.items():
        at.number_input(key=f"train_{key}").set_value(value)
    return at


def test_train_page_starts_a_run_and_the_runs_page_plots_it(runs_root, cli_run):
    at = fill_form(open_page("train"), "tiny", epochs=2)
    at.button(key="train_start").click().run()
    ok(at)
    assert any("Started tiny" in s.value for s in at.success), [s.value for s in at.success]
    run_dir = runs_root / "tiny"
    assert json.loads((run_dir / "launch.json").read_text())["command"][1:3] == ["-m", "core.train"]
    summary = wait_for(run_dir, ("finished", "failed"), at)
    assert summary.state == "finished", summary.message

    at.switch_page("views/runs.py").run()
    ok(at)
    at.multiselect(key="runs_selected").set_value(["tiny"]).run()
    ok(at)
    assert table(at)["tiny"].endswith("finished")
    logged = rundir.read_metrics(run_dir, "step")
    steps, totals = curve(at, "tiny")
    assert steps == [r["step"] for r in logged] and len(steps) == 8  # 2 epochs of 128 / 32 steps, each logged
    assert np.allclose(totals, [r["total"] for r in logged])
    val_steps, _ = curve(at, "tiny", "val")
    assert val_steps == [r["step"] for r in rundir.read_metrics(run_dir, "eval")] == [4, 8]
    latest = [image for image in at.get("image") if "validation images" in image.captions[0]]
    assert len(latest) == 1  # the latest reconstructions (the others: its snapshot steps, below)
    assert sum("at every snapshot step" in image.captions[0] for image in at.get("image")) == 2
    at.button(key="runs_open_tiny").click().run()  # Open in explorer: best.pt in the Layers page
    ok(at)
    assert at.session_state["model_loaded"] == str(run_dir / "best.pt")
    assert at.title[0].value == "Layers" and len(at.tabs) == 2  # the tiny model's two stages


def test_stop_mid_run_ends_stopped_and_resume_continues(runs_root):
    at = fill_form(open_page("train"), "long", epochs=1000, log_every=5)
    at.button(key="train_start").click().run()
    ok(at)
    run_dir = runs_root / "long"
    at.button(key="train_start").click().run()  # the same name again: refused, the running one untouched
    assert not at.exception and len(at.error) == 1 and "busy" in at.error[0].value
    wait_for(run_dir, ("running",), at, min_step=5)
    assert table(open_page("runs"))["long"] == "running"  # a new session (as after a server restart) finds it
    at.button(key="train_stop").click().run()
    ok(at)
    summary = wait_for(run_dir, ("stopped", "failed", "finished"), at, timeout=60)
    assert summary.state == "stopped" and summary.message.startswith("stopped at step")
    assert (run_dir / "last.pt").is_file() and not (run_dir / "STOP").exists()
    stopped_at = summary.step
    assert stopped_at < 4000

    at.button(key="train_resume").click().run()  # continue from last.pt, in a new process
    ok(at)
    wait_for(run_dir, ("running",), at, min_step=stopped_at + 5)
    runs = open_page("runs")
    runs.multiselect(key="runs_selected").set_value(["long"]).run()
    runs.button(key="runs_stop_long").click().run()  # the Runs page can stop it too
    ok(runs)
    summary = wait_for(run_dir, ("stopped", "failed", "finished"), runs, timeout=60)
    assert summary.state == "stopped" and summary.step > stopped_at
    runs.run()
    steps, _ = curve(runs, "long")
    assert steps == [r["step"] for r in rundir.read_metrics(run_dir, "step")]
    assert steps[-1] == summary.step and any(json.loads(line)["kind"] == "resume"
                                             for line in (run_dir / "metrics.jsonl").read_text().splitlines())


def test_a_cli_run_is_listed_and_plotted(runs_root, cli_run):
    run_dir, process = cli_run
    assert process.wait(timeout=240) == 0, process.stderr.read().decode()[-2000:]
    at = open_page("runs")
    assert table(at)["from-cli"].endswith("finished")
    at.multiselect(key="runs_selected").set_value(["from-cli"]).run()
    ok(at)
    steps, _ = curve(at, "from-cli")
    assert steps == [r["step"] for r in rundir.read_metrics(run_dir, "step")]
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    titles = " ".join(a["text"] for a in chart["layout"]["annotations"])
    for title in ("total loss", "nll", "rec", "mid_0", "accuracy", "images / s"):
        assert title in titles


def write_run(root: Path, name: str, state: str, pid: int, lines: list[str]) -> Path:
    run_dir = root / name
    run_dir.mkdir()
    rundir.write_config(run_dir, model={}, train={}, data={})
    rundir.write_status(run_dir, state, step=3, epoch=0, message="", epochs=1, total_steps=10)
    status = json.loads((run_dir / rundir.STATUS_FILE).read_text())
    (run_dir / rundir.STATUS_FILE).write_text(json.dumps({**status, "pid": pid}))
    (run_dir / rundir.METRICS_FILE).write_text("".join(lines))
    return run_dir


def record(step: int) -> str:
    return json.dumps({"kind": "step", "step": step, "epoch": 0, "total": 1.0 / step, "rec": 0.1, "accuracy": 0.5,
                       "images_per_s": 100.0}) + "\n"


def test_a_run_whose_process_died_is_stale(runs_root):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    write_run(runs_root, "crashed", "running", process.pid, [record(1), record(2)])
    at = open_page("runs")
    assert "stale" in table(at)["crashed"]
    at.multiselect(key="runs_selected").set_value(["crashed"]).run()
    ok(at)
    assert any("is gone" in c.value for c in at.caption)
    assert "runs_stop_crashed" not in [b.key for b in at.button]  # nothing to stop: the process is gone
    assert curve(at, "crashed")[0] == [1, 2]


def test_partial_and_malformed_lines_plot_the_good_lines(runs_root):
    lines = [record(1), record(2), '{"kind": "step", "step": 3, "total": \n', record(4), '{"kind": "step", "st']
    write_run(runs_root, "torn", "finished", os.getpid(), lines)
    at = open_page("runs")
    at.multiselect(key="runs_selected").set_value(["torn"]).run()
    ok(at)
    steps, totals = curve(at, "torn")
    assert steps == [1, 2, 4] and np.allclose(totals, [1.0, 0.5, 0.25])
    assert any("1 malformed line skipped" in c.value for c in at.caption)


def test_many_active_runs_show_a_few_and_bound_the_selection(tmp_path, monkeypatch):
    """Issue 18 item 7: 300 active runs were all selected by default (300 pictures, 601 buttons per tick)."""
    root = tmp_path / "many"
    for index in range(40):
        run = root / f"run-{index:03d}"
        run.mkdir(parents=True)
        rundir.write_config(run, model={}, train={"samples": 4}, data={"dataset": "mnist5k"})
        rundir.write_status(run, "running", step=index, epoch=0, total_steps=100)  # this live process: active
    monkeypatch.setenv(RUNS_ENV, str(root))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("views/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    picker = at.multiselect(key="runs_selected")
    assert 1 <= len(picker.value) <= 4 and picker.max_selections == 8
    page_buttons = [b for b in at.button if b.key.startswith("runs_")]  # the sidebar has its own
    assert len(page_buttons) <= 2 * 4 + 2  # open / stop-or-resume per shown run, Refresh, and the formation's Play


def test_train_page_can_turn_snapshots_off(runs_root):
    at = fill_form(open_page("train"), "no-snapshots", epochs=1)
    at.checkbox(key="train_snapshots").uncheck()
    at.button(key="train_start").click().run()
    ok(at)
    run_dir = runs_root / "no-snapshots"
    assert wait_for(run_dir, ("finished", "failed"), at).state == "finished"
    assert rundir.read_config(run_dir)["train"]["snapshots"] is False
    assert rundir.list_snapshots(run_dir) == [] and not (run_dir / rundir.SNAPSHOTS_DIR).exists()
