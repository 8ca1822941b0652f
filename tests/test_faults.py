"""Issue 11, items 4-15: the run directory under faults and races, pages that one bad file could break, and the
command line. Each test reproduces one item (named in its docstring) and failed before the fix. Tiny models on
mnist5k, in-process where possible: the CPU is shared."""
import errno
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app import sidebar
from core.training import rundir
from core.runs import MetricsReader, monitor
from core.model import load_checkpoint, save_checkpoint
from core.runs.cli import main
from core.data import DataConfig
from core.model import SWWAE, digits_config
from core.training import TrainConfig, train
from tests.test_train import one_thread  # noqa: F401 - autouse: tiny models run single-threaded

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app" / "main.py")
TIMEOUT = 120
TINY_MODEL = digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16)
TINY_DATA = DataConfig(max_train=96, max_val=32)  # 3 steps per epoch of 32 (a dry run has 2)
TINY_FLAGS = ["--channels", "4", "8", "--kernel-sizes", "3", "3", "--pool-sizes", "2", "2", "--head-width", "16",
              "--max-train", "64", "--max-val", "32", "--batch-size", "32", "--device", "cpu", "--quiet"]


def tiny_train(**overrides) -> TrainConfig:
    return TrainConfig(**{"batch_size": 32, "device": "cpu", "log_every": 1, "samples": 2, "epochs": 1, **overrides})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 1-epoch run (3 steps); tests copy it before changing anything."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert train(TINY_MODEL, tiny_train(), TINY_DATA, run_dir=run).state == "finished"
    return run


def copy_run(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / "run"))


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# ---- 4. a torn last line ---------------------------------------------------------------------------------------

def test_a_torn_last_line_does_not_swallow_the_next_resume_marker(tmp_path):
    """Item 4: metrics.jsonl ends without a newline (a write cut short); the resume record appended next must
    still void the steps after its checkpoint."""
    for step in (1, 2, 3, 4):
        rundir.append_metrics(tmp_path, {"kind": "step", "step": step, "total": 1.0})
    with open(tmp_path / rundir.METRICS_FILE, "a") as f:
        f.write('{"kind": "step", "step": 5, "to')  # the trainer was killed mid-line
    rundir.append_metrics(tmp_path, {"kind": "resume", "step": 2})
    rundir.append_metrics(tmp_path, {"kind": "step", "step": 3, "total": 0.5})
    assert [(r["step"], r["total"]) for r in rundir.read_metrics(tmp_path)] == [(1, 1.0), (2, 1.0), (3, 0.5)]
    reader = MetricsReader(tmp_path)
    reader.update()
    assert reader.series("step", "step")[0].tolist() == [1, 2, 3] and reader.malformed == 1


# ---- 5. two trainers at once ------------------------------------------------------------------------------------

def test_two_trainers_started_at_the_same_instant_one_claims_the_run(tmp_path, monkeypatch):
    """Item 5: both trainers pass the "is anyone running here?" check before either writes (forced here with a
    barrier); exactly one may train, the other is refused, and every step is logged once."""
    run = tmp_path / "run"
    check = rundir.check_not_running
    checked: list = []
    outcomes: list = []

    def check_then_wait(run_dir):
        """The race window, held open until the other trainer has checked too, or has ended (refused)."""
        check(run_dir)
        checked.append(run_dir)
        deadline = time.monotonic() + 60
        while len(checked) < 2 and not outcomes and time.monotonic() < deadline:
            time.sleep(0.01)

    monkeypatch.setattr(rundir, "check_not_running", check_then_wait)

    def trainer():
        try:
            outcomes.append(train(TINY_MODEL, tiny_train(), TINY_DATA, run_dir=run).state)
        except rundir.RunDirError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=trainer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcome == "finished" for outcome in outcomes) == [False, True], outcomes
    assert any("in use by a running training process" in outcome for outcome in outcomes), outcomes
    assert [r["step"] for r in rundir.read_metrics(run, kind="step")] == [1, 2, 3]


# ---- 6. a reused pid --------------------------------------------------------------------------------------------

def start_time(pid: int) -> int:
    """proc(5): field 22 of /proc/<pid>/stat, the start time in clock ticks since boot (after "(comm)": field 3)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[22 - 3])


def test_a_reused_pid_does_not_keep_a_dead_run_running(tmp_path):
    """Item 6: status.json says running with a pid that now belongs to another process (here: this test's, with
    another start time). The run is stale: resumable, not "in use"."""
    rundir.write_status(tmp_path, "running", step=3, epoch=0)
    status = json.loads((tmp_path / rundir.STATUS_FILE).read_text())
    assert status["pid"] == os.getpid() and rundir.is_live(status)  # the real process: live
    status["pid_start"] = start_time(os.getpid()) - 1  # the process that wrote it started earlier
    (tmp_path / rundir.STATUS_FILE).write_text(json.dumps(status))
    assert not rundir.is_live(rundir.read_status(tmp_path))
    rundir.check_not_running(tmp_path)  # the CLI's --resume is not refused
    assert monitor.summarize(tmp_path).state == "stale"

    launched = tmp_path / "launched"  # a process the dashboard started, then died; its pid was reused
    launched.mkdir()
    (launched / monitor.LAUNCH_FILE).write_text(json.dumps({
        "pid": os.getpid(), "pid_start": start_time(os.getpid()) - 1, "host": socket.gethostname(),
        "command": [], "started": time.time()}))
    assert monitor.summarize(launched).state == "failed"


# ---- 7. a refused resume changes nothing ------------------------------------------------------------------------

@pytest.mark.parametrize("flags, reason", [(["--batch-size", "16"], "steps per epoch"),
                                          (["--dry-run"], "a dry run never writes into an existing run")])
def test_a_refused_resume_changes_nothing_on_disk(finished_run, tmp_path, capsys, flags, reason):
    """Item 7: `--resume --batch-size 16` and `--dry-run --resume` on a finished run are refused; status.json
    (and every other file) stays as it was. (The dry run's reason is its own since issue 18 item 9.)"""
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    assert main(["--run", str(run), "--resume", "--device", "cpu", "--quiet", *flags]) == 2
    assert reason in one_line_error(capsys)
    assert snapshot(run) == before
    assert rundir.read_status(run)["state"] == "finished"


# ---- 8. stale temporary files -----------------------------------------------------------------------------------

def test_stale_partial_checkpoint_files_are_removed_when_a_run_starts_or_resumes(finished_run, tmp_path):
    """Item 8: a kill during an atomic write leaves .last.pt.<random>.tmp behind."""
    run = copy_run(finished_run, tmp_path)
    stale = [run / ".last.pt.k1ll3d.tmp", run / ".best.pt.abc123.tmp", run / "samples" / ".epoch_0002.png.x.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = run / "notes.tmp"  # not a temporary of ours
    keep.write_text("mine")
    assert train(TINY_MODEL, tiny_train(epochs=2), TINY_DATA, run_dir=run, resume=True).state == "finished"
    assert not any(p.exists() for p in stale) and keep.exists()

    fresh = tmp_path / "fresh"  # killed while writing its very first checkpoint
    fresh.mkdir()
    (fresh / ".last.pt.k1ll3d.tmp").write_bytes(b"half")
    rundir.claim(fresh).release()
    assert not (fresh / ".last.pt.k1ll3d.tmp").exists()


# ---- 9. disk full -----------------------------------------------------------------------------------------------

def test_a_full_disk_exits_with_the_failure_code(tmp_path, capsys, monkeypatch):
    """Item 9: writing metrics.jsonl fails with ENOSPC: a failure (1), not bad input. (The disk is filled by
    patching the append; a link to /dev/full is refused outright since issue 18 item 8.)"""
    run = tmp_path / "run"
    run.mkdir()

    def full_disk(run_dir, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir, "append_metrics", full_disk)
    assert main([*TINY_FLAGS, "--run", str(run), "--epochs", "1"]) == 1
    assert "No space left on device" in one_line_error(capsys)
    assert rundir.read_status(run)["state"] == "failed"


# ---- 10 and 13: the Runs and Train pages ------------------------------------------------------------------------

HTML_NAME = "<img src=x onerror=alert(1)>"
BAD_FILES = {  # run name -> (file, content)
    "status-list": (rundir.STATUS_FILE, "[1]"),
    "status-step-abc": (rundir.STATUS_FILE, json.dumps({"state": "running", "step": "abc", "epoch": 0})),
    "launch-started-x": (monitor.LAUNCH_FILE, json.dumps({"pid": 1, "host": "h", "command": [], "started": "x"})),
    "status-not-json": (rundir.STATUS_FILE, "{"),
}


@pytest.fixture
def runs_root(finished_run, tmp_path, monkeypatch) -> Path:
    """A runs folder with a good run, and one whose name and message look like HTML and markdown."""
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(finished_run, root / "good")
    shutil.copytree(finished_run, root / HTML_NAME)
    status = rundir.read_status(root / HTML_NAME)
    rundir.write_status(root / HTML_NAME, "failed", step=status["step"], epoch=status["epoch"],
                        message="<b>bold</b> [link](http://x) :red-badge[boom]")
    monkeypatch.setenv(monitor.RUNS_ENV, str(root))
    return root


@pytest.fixture
def bad_runs_root(runs_root) -> Path:
    """The same, plus one run folder per kind of broken file."""
    for name, (file, content) in BAD_FILES.items():
        (runs_root / name).mkdir()
        (runs_root / name / file).write_text(content)
    return runs_root


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_one_bad_status_or_launch_file_shows_as_one_row(bad_runs_root):
    """Item 10: status.json `[1]`, `"step": "abc"`, launch.json `"started": "x"`: each bad run is one row with
    its error; the good runs and both pages keep working."""
    at = open_page("runs")
    frame = at.dataframe[0].value
    states = dict(zip(frame["run"], frame["state"]))
    assert states["good"] == "finished" and all(states[name] == "unreadable" for name in BAD_FILES), states
    for name in BAD_FILES:
        summary = monitor.summarize(bad_runs_root / name)
        assert not summary.active and BAD_FILES[name][0] in summary.message, summary
    at.multiselect(key="runs_selected").set_value(["good", *BAD_FILES]).run()
    assert not at.exception, [e.value for e in at.exception]

    at.switch_page("views/train.py").run()
    for name in [*BAD_FILES, "good"]:
        at.selectbox(key="train_manage").set_value(name).run()
        assert not at.exception, [e.value for e in at.exception]


def test_run_names_and_messages_from_disk_are_escaped(runs_root):
    """Item 13: a folder named like an HTML element, a message with HTML and markdown: shown as text."""
    at = open_page("runs")
    at.multiselect(key="runs_selected").set_value([HTML_NAME]).run()
    assert not at.exception, [e.value for e in at.exception]
    bodies = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert any("img src=x" in body for body in bodies)  # the panel is there...
    assert not any("<img" in body or "<b>" in body or "](http" in body or ":red-badge[boom" in body
                   for body in bodies), bodies  # ...with nothing from disk read as HTML or markdown
    at.switch_page("views/train.py").run()
    at.selectbox(key="train_manage").set_value(HTML_NAME).run()
    assert not at.exception
    texts = [p.proto.text for p in at.get("progress")]
    assert texts and not any("<b>" in text or "](http" in text for text in texts), texts


# ---- 11. one reader's rules --------------------------------------------------------------------------------------

def test_read_metrics_follows_the_incremental_readers_rules(tmp_path):
    """Item 11: invalid UTF-8, and a non-numeric step before a resume line, are skipped by both readers alike."""
    lines = [b'{"kind": "step", "step": 1, "total": 1.0}', b'\xff\xfe not utf-8',
             b'{"kind": "step", "step": "abc", "total": 9.0}', b'{"kind": "step", "step": 2, "total": 2.0}',
             b'{"kind": "step", "step": true, "total": 9.0}', b'{"kind": "resume", "step": 1}',
             b'{"kind": "step", "step": 2, "total": 0.5}', b'[1, 2]']
    (tmp_path / rundir.METRICS_FILE).write_bytes(b"\n".join(lines) + b"\n")
    records = rundir.read_metrics(tmp_path)
    assert [(r["step"], r["total"]) for r in records] == [(1, 1.0), (2, 0.5)]
    reader = MetricsReader(tmp_path)
    reader.update()
    assert [(r["step"], r["total"]) for r in reader.records("step")] == [(1, 1.0), (2, 0.5)]


# ---- 12. a model the explorer cannot draw ------------------------------------------------------------------------

def test_a_two_channel_checkpoint_is_refused_at_load_with_one_line(tmp_path):
    """Item 12: the CLI makes 2-channel models (`--in-channels 2 --input-mean .5 .5 --input-std .5 .5`); the
    explorer refuses one at load, keeps its model, and every page keeps working."""
    config = replace(TINY_MODEL, in_channels=2, input_mean=(0.5, 0.5), input_std=(0.5, 0.5))
    save_checkpoint(tmp_path / "two.pt", SWWAE(config))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.file_uploader(key=sidebar.MODEL_UPLOAD).set_value(
        ("two.pt", (tmp_path / "two.pt").read_bytes(), "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "2-channel model cannot be shown" in at.error[0].value
    assert at.session_state[sidebar.MODEL_LOADED] == sidebar.DEFAULT_CHECKPOINT
    at.session_state[sidebar.MODEL_REQUEST] = str(tmp_path / "two.pt")  # "Open in explorer" on such a run
    for page in ("layers", "swap", "attribution"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
    assert at.session_state[sidebar.MODEL_LOADED] == sidebar.DEFAULT_CHECKPOINT


# ---- 14. torchrun ------------------------------------------------------------------------------------------------

def test_the_readmes_torchrun_command_trains_two_processes(tmp_path):
    """Item 14: `torchrun --nproc_per_node 2 -m core.train ... --run-dir DIR`, the real entry point (gloo, CPU).
    (`--run` there is taken by torchrun as an abbreviation of its own --run-path.)"""
    run = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun) if torchrun.exists() else "torchrun", "--standalone", "--nproc_per_node", "2",
               "-m", "core.train", *TINY_FLAGS, "--max-train", "128", "--epochs", "1", "--log-every", "1",
               "--run-dir", str(run)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished: trained 2 steps" in done.stdout  # 128 samples, 2 ranks, 32 per batch: 2 steps
    assert rundir.read_status(run)["state"] == "finished"
    assert [r["step"] for r in rundir.read_metrics(run, kind="step")] == [1, 2]  # rank 0 alone wrote


# ---- 15. one line, not a traceback -------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, words", [
    (["--device", "foo"], "unknown device 'foo'"),
    (["--num-classes", "2"], "set --num-classes 10"),
    (["--lr", "inf"], "lr must be >= 0 and finite"),
    (["--input-std", "0"], "input_std must be finite and > 0"),
    (["--shift", "14"], "less than half the image size"),
])
def test_bad_input_is_one_line_not_a_traceback(tmp_path, capsys, flags, words):
    """Item 15: each of these once ended in a traceback, a crash mid-run or a silently broken run."""
    run = tmp_path / "run"
    assert main([*TINY_FLAGS, *flags, "--run", str(run)]) == 2
    assert words in one_line_error(capsys)
    assert not (run / rundir.STATUS_FILE).exists()


def test_a_run_folder_with_broken_files_gives_one_line(finished_run, tmp_path, capsys):
    """Item 15: config.json without its "model" key; a list-valued status.json."""
    run = copy_run(finished_run, tmp_path)
    config = json.loads((run / rundir.CONFIG_FILE).read_text())
    del config["model"]
    (run / rundir.CONFIG_FILE).write_text(json.dumps(config))
    assert main(["--run", str(run), "--resume", "--quiet"]) == 2
    assert "no 'model' section" in one_line_error(capsys)

    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / rundir.STATUS_FILE).write_text("[1]")
    assert main([*TINY_FLAGS, "--run", str(listed), "--max-steps", "1", "--epochs", "1"]) == 0
    assert rundir.read_status(listed)["state"] == "finished"


# ---- random SIGKILLs, then resume ---------------------------------------------------------------------------------

KILL_DATA = DataConfig(max_train=128, max_val=32, shift=1)  # 4 steps per epoch; shift: the augment RNG resumes too


def kill_config() -> TrainConfig:
    return tiny_train(epochs=4, checkpoint_every=2)  # 16 steps; last.pt every 2 steps and at each epoch end


def wait_for_step(run: Path, process, step: int, timeout: float = 120) -> bool:
    """Whether `process` reported `step` (False: it ended first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.is_alive():
        status = rundir.read_status(run) or {}
        if status.get("pid") == process.pid and status.get("step", 0) >= step:
            return True
        time.sleep(0.005)
    return False


def test_random_sigkills_then_resume_log_each_step_once_and_match_an_uninterrupted_run(tmp_path, monkeypatch):
    """Kill -9 the trainer at random moments (mid-step, mid-write, mid-checkpoint) three times, resuming each
    time: every step is logged exactly once and the final weights equal an uninterrupted run's."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    context = multiprocessing.get_context("forkserver")  # a clean process that imports torch once for all kills
    context.set_forkserver_preload(["core.training"])
    straight = train(TINY_MODEL, kill_config(), KILL_DATA, run_dir=tmp_path / "straight")
    run = tmp_path / "killed"
    rng = random.Random(11)
    kills = 0
    for target in (rng.randint(3, 5), rng.randint(7, 9), rng.randint(11, 13)):  # after >= 1 checkpoint each
        process = context.Process(target=train, args=(TINY_MODEL, kill_config(), KILL_DATA),
                                  kwargs={"run_dir": run, "resume": (run / rundir.LAST_CHECKPOINT).exists()})
        process.start()
        if wait_for_step(run, process, target):
            time.sleep(rng.uniform(0, 0.05))  # land anywhere in the next step, log line or checkpoint write
            process.kill()
            kills += 1
        process.join(timeout=60)
    assert kills == 3
    resumed = train(TINY_MODEL, kill_config(), KILL_DATA, run_dir=run, resume=True)
    assert resumed.state == "finished" and resumed.step == straight.step == 16

    def logged(run_dir, kind):
        return [(r["step"], r["total"], r["rec"]) for r in rundir.read_metrics(run_dir, kind=kind)]
    assert [step for step, *_ in logged(run, "step")] == list(range(1, 17))  # each step once
    assert logged(run, "step") == logged(tmp_path / "straight", "step")
    assert logged(run, "eval") == logged(tmp_path / "straight", "eval")
    killed_state = load_checkpoint(run / rundir.LAST_CHECKPOINT).model.state_dict()
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(killed_state[name].cpu(), tensor.cpu()), name
