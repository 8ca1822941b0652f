"""Issue 23 items 4 and 8: a run name is claimed in one atomic step, and a stop ends a run at any stage.

Item 4: two launches of one run at the same moment (two sessions pressing Start, a launch beside a command-line
trainer, two command-line trainers) start exactly one run; the other gets a one-line refusal before anything says
"Started", and the run that trains is never shown as failed.
Item 8: a stop (the launcher's stop, SIGTERM, Ctrl-C, a STOP file) while the run is still loading its data (here a
FIFO among a folder's images: opening it blocks until a writer comes, and none will) or waiting for a batch ends
the run within seconds, status.json saying stopped, with no partial file left. Tiny settings throughout."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core.training.loop as loop_module
from core.data import DataConfig
from core.model import digits_config, load_checkpoint
from core.runs import CHILDREN, Launched, launch, make_configs, stop, summarize
from core.training import TrainConfig, rundir, train
from tests.test_train import REPO, one_thread, subprocess_env  # noqa: F401 - one_thread: autouse, one CPU thread

TINY = {"train": {"epochs": 1, "batch_size": 4, "device": "cpu", "samples": 2, "log_every": 1},
        "model": {"channels": (4, 8), "head_width": 16}}
MODEL_FLAGS = ["--channels", "4", "8", "--kernel-sizes", "3", "3", "--pool-sizes", "2", "2", "--head-width", "16"]
TINY_FLAGS = [*MODEL_FLAGS, "--max-train", "64", "--max-val", "32", "--batch-size", "32", "--epochs", "1",
              "--device", "cpu", "--quiet"]
STOP_WITHIN_S = 5.0  # a stop while loading must end the process within this (it used to wait forever)
TINY_MODEL = digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16)
TINY_DATA = DataConfig(max_train=96, max_val=32)  # 3 steps per epoch of 32


def tiny_train(**overrides) -> TrainConfig:
    return TrainConfig(**{"batch_size": 32, "device": "cpu", "log_every": 1, "samples": 2, "epochs": 1, **overrides})


@pytest.fixture(autouse=True)
def single_threaded_children(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # launched trainers inherit it: the CPU is shared


def tiny_configs(dataset: str = "mnist5k", **train):
    data = {"dataset": dataset} | ({"max_train": 64, "max_val": 32} if dataset == "mnist5k" else {})
    return make_configs(data=data, train=TINY["train"] | train, model=TINY["model"])


def end_process(pid: int) -> None:
    """Kill a trainer this test started that is still there (a failed test must not leave one blocked)."""
    process = CHILDREN.pop(pid, None)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process is not None:
        process.wait(timeout=30)


def wait_for_exit(process: subprocess.Popen, timeout: float) -> float:
    """Seconds until `process` exits (inf when it is still running after `timeout`)."""
    started = time.monotonic()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return float("inf")
    return time.monotonic() - started


def one_line(text: str) -> str:
    assert text.strip() and "\n" not in text.strip() and "Traceback" not in text, text
    return text.strip()


# ---- item 4: one run per name, claimed atomically -----------------------------------------------------------------

def test_two_launches_at_the_same_moment_start_one_run_and_refuse_the_other(tmp_path):
    """Two sessions press Start on one run name at once: one is told "Started" and its settings are the ones that
    train; the other gets a one-line refusal; the Runs page never shows the run as failed."""
    run = tmp_path / "race"
    settings = [tiny_configs(lr=1e-3), tiny_configs(lr=2e-3)]
    both_ready = threading.Barrier(2)
    outcomes: dict[int, Launched | Exception] = {}

    def press_start(session: int) -> None:
        both_ready.wait()
        try:
            outcomes[session] = launch(run, settings[session])
        except (rundir.RunDirError, ValueError, OSError) as exc:
            outcomes[session] = exc

    sessions = [threading.Thread(target=press_start, args=(i,)) for i in range(2)]
    for session in sessions:
        session.start()
    for session in sessions:
        session.join(timeout=60)
    started = [i for i, outcome in outcomes.items() if isinstance(outcome, Launched)]
    try:
        assert len(started) == 1 and len(outcomes) == 2, f"both launches reported Started: {outcomes}"
        refusal = one_line(str(outcomes[1 - started[0]]))
        assert isinstance(outcomes[1 - started[0]], rundir.RunDirError) and "busy" in refusal, refusal
        process = CHILDREN[outcomes[started[0]].pid]
        states = set()
        while process.poll() is None:
            states.add(summarize(run).state)
            time.sleep(0.05)
        states.add(summarize(run).state)
        assert process.returncode == 0 and summarize(run).state == "finished", (states, summarize(run).message)
        assert "failed" not in states, states
        assert rundir.read_config(run)["train"]["lr"] == settings[started[0]].train.lr  # what was started trained
    finally:
        for outcome in outcomes.values():
            if isinstance(outcome, Launched):
                end_process(outcome.pid)


def test_a_launch_beside_a_command_line_trainer_that_holds_the_run_is_refused(tmp_path):
    """A command-line trainer has claimed the run and is still loading its data (no status yet): a launch of the same
    name is refused in one line instead of reporting "Started" for a process that can only be refused."""
    images = image_folder_with_a_fifo(tmp_path)
    run = tmp_path / "run"
    trainer = subprocess.Popen([sys.executable, "-m", "core.train", "--dataset", f"folder:{images}", *MODEL_FLAGS,
                                "--batch-size", "4", "--device", "cpu", "--quiet", "--run", str(run)],
                               cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    launched = None
    try:
        wait_until_blocked_on_the_fifo(trainer.pid)
        with pytest.raises(rundir.RunDirError) as refused:
            launched = launch(run, tiny_configs())
        assert "busy" in one_line(str(refused.value))
        assert summarize(run).state != "failed"
        trainer.send_signal(signal.SIGTERM)
        assert wait_for_exit(trainer, timeout=STOP_WITHIN_S + 5) < STOP_WITHIN_S
        assert trainer.returncode == 0 and rundir.read_status(run)["state"] == "stopped"
    finally:
        if launched is not None:
            end_process(launched.pid)
        if trainer.poll() is None:
            trainer.kill()
        trainer.communicate(timeout=30)


def test_two_command_line_trainers_started_together_train_once(tmp_path):
    """Two `python -m core.train --run DIR` started at once: exactly one trains, the other exits 2 with one line.
    (This held before the launcher's fix: the trainer's own claim was already one flock; kept as a guard.)"""
    run = tmp_path / "run"
    commands = [[sys.executable, "-m", "core.train", *TINY_FLAGS, "--lr", lr, "--run", str(run)]
                for lr in ("0.001", "0.002")]
    trainers = [subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for command in commands]
    results = [trainer.communicate(timeout=120) for trainer in trainers]
    codes = [trainer.returncode for trainer in trainers]
    assert sorted(codes) == [0, 2], (codes, results)
    winner, loser = codes.index(0), codes.index(2)
    assert one_line(results[loser][1]).startswith("error: ")
    assert rundir.read_status(run)["state"] == "finished"
    assert rundir.read_config(run)["train"]["lr"] == float(commands[winner][commands[winner].index("--lr") + 1])


# ---- item 8: a stop that stops, at any stage ---------------------------------------------------------------------

def image_folder_with_a_fifo(tmp_path: Path) -> Path:
    """Two classes of six 28x28 images, and a FIFO named like an image: reading it blocks while no writer comes."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / name / f"{i}.png")
    os.mkfifo(root / "a" / "slow.png")
    return root


def wait_until_blocked_on_the_fifo(pid: int, timeout: float = 90) -> None:
    """Until process `pid` waits in open() of the FIFO for a writer (the kernel's wait_for_partner)."""
    deadline = time.monotonic() + timeout
    where = ""
    while time.monotonic() < deadline:
        try:
            where = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            pytest.fail(f"the trainer (pid {pid}) exited before it reached the FIFO")
        if where == "wait_for_partner":
            return
        time.sleep(0.05)
    if where == "0":
        pytest.skip("this kernel does not say where a process waits (/proc/PID/wchan)")
    pytest.fail(f"the trainer never blocked on the FIFO (it waits in {where!r})")


def no_partial_files(run: Path) -> list[Path]:
    return [path for path in run.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.parametrize("how", ["stop()", "SIGTERM", "SIGINT", "STOP file"])
def test_a_stop_while_loading_data_ends_the_run_at_once_and_cleanly(tmp_path, how):
    """The run is launched and blocks reading its data (status: starting, loading data); the stop ends the process
    within seconds, exit code 0, status.json stopped, no partial file; it used to wait until kill -9."""
    run = tmp_path / "run"
    launched = launch(run, tiny_configs(f"folder:{image_folder_with_a_fifo(tmp_path)}"))
    process = CHILDREN[launched.pid]
    try:
        wait_until_blocked_on_the_fifo(launched.pid)
        summary = summarize(run)
        assert summary.state == "starting" and "loading data" in summary.message
        asked = time.monotonic()
        if how == "stop()":
            stop(run)
        elif how == "STOP file":
            rundir.request_stop(run)
        else:
            os.kill(launched.pid, getattr(signal, how))
        seconds = wait_for_exit(process, timeout=STOP_WITHIN_S + 5)
        assert seconds < STOP_WITHIN_S, f"the run did not end within {STOP_WITHIN_S} s of the stop"
        print(f"{how}: ended {time.monotonic() - asked:.2f} s after the request")
        assert process.returncode == 0, monitor_log(run)
        status = rundir.read_status(run)
        assert status is not None and status["state"] == "stopped", (status, monitor_log(run))
        assert status["pid"] == launched.pid and "before training started" in status["message"]
        assert summarize(run).state == "stopped"
        assert not no_partial_files(run) and not (run / rundir.LAST_CHECKPOINT).exists()
        assert "Traceback" not in monitor_log(run)
        rundir.claim(run).release()  # nothing holds the run any more
    finally:
        end_process(launched.pid)


def monitor_log(run: Path) -> str:
    return (run / "train.log").read_text()[-2000:] if (run / "train.log").exists() else "no log"


class BlockingBatches:
    """Batches that, once training runs (`run`'s status says so), call `on_block` and then block in open() of a FIFO
    as a slow or stuck read would: wrapping the training split, at the second batch of the first epoch; wrapping the
    validation split, at the first evaluation (set-up reads it too, to pick the sample images)."""

    def __init__(self, batches, *, fifo: Path, run: Path, on_block):
        self.batches, self.fifo, self.run, self.on_block = batches, fifo, run, on_block
        self.blocked = False

    def __getattr__(self, name):
        return getattr(self.batches, name)

    def block(self) -> None:
        if not self.blocked and (rundir.read_status(self.run) or {}).get("state") == "running":
            self.blocked = True
            self.on_block()
            open(self.fifo, "rb").close()

    def epoch(self, epoch: int, *, start_step: int = 0):
        batches = self.batches.epoch(epoch, start_step=start_step)
        yield next(batches)
        self.block()
        yield from batches

    def in_order(self):
        self.block()
        yield from self.batches.in_order()


def unblock_later(fifo: Path, seconds: float) -> threading.Timer:
    """Let a reader still blocked on `fifo` go after `seconds` (so a stop that does not work fails, not hangs)."""
    def open_for_writing():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO when no reader waits: nothing to free
        except OSError:
            pass
    timer = threading.Timer(seconds, open_for_writing)
    timer.daemon = True
    timer.start()
    return timer


@pytest.mark.parametrize("when", ["train", "evaluation"])
@pytest.mark.parametrize("how", ["STOP file", "SIGTERM"])
def test_a_stop_while_waiting_for_a_batch_ends_the_run_at_once(tmp_path, monkeypatch, when, how):
    """Training has started and the next batch does not come (a blocked read mid-epoch or in the evaluation): the
    stop ends the run at once, with last.pt at the last finished step and a resume that goes on from it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    make_batches = loop_module._make_batches

    run = tmp_path / "run"
    asked, timers = [], []

    def ask_to_stop():
        asked.append(time.monotonic())
        if how == "STOP file":
            rundir.request_stop(run)
        else:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    def stop_soon():  # the read has begun: ask for the stop while it blocks, and free it later if the stop fails
        timers.extend([threading.Timer(0.3, ask_to_stop), unblock_later(fifo, 0.3 + STOP_WITHIN_S + 3)])
        timers[0].start()

    def blocking(data, model_config, train_config, split, **kwargs):
        batches = make_batches(data, model_config, train_config, split, **kwargs)
        blocks = split == ("train" if when == "train" else "val")
        return BlockingBatches(batches, fifo=fifo, run=run, on_block=stop_soon) if blocks else batches

    monkeypatch.setattr(loop_module, "_make_batches", blocking)
    result = train(TINY_MODEL, tiny_train(epochs=2), TINY_DATA, run_dir=run)
    seconds = time.monotonic() - asked[0]
    for timer in timers:
        timer.cancel()
    timers[0].join()
    assert seconds < STOP_WITHIN_S, f"the run ended {seconds:.1f} s after the stop"
    print(f"{how} while waiting for a {when} batch: train() returned {seconds:.2f} s after the request")
    expected_step = 1 if when == "train" else 3  # the finished steps: 1 of the epoch, or the whole epoch (3)
    assert result.state == "stopped" and result.step == expected_step, result
    status = rundir.read_status(run)
    assert status["state"] == "stopped" and status["step"] == expected_step
    assert load_checkpoint(run / rundir.LAST_CHECKPOINT).step == expected_step
    assert not no_partial_files(run) and not (run / rundir.STOP_FILE).exists()
    monkeypatch.setattr(loop_module, "_make_batches", make_batches)
    resumed = train(TINY_MODEL, tiny_train(epochs=2), TINY_DATA, run_dir=run, resume=True)
    assert resumed.state == "finished" and resumed.step == 6
    assert [r["epoch"] for r in rundir.read_metrics(run, "eval")] == [1, 2]  # no evaluation lost to the stop
