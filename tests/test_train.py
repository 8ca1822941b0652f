"""The training engine end to end on tiny configs: learning, checkpoints, exact resume, stopping, the NaN guard,
the run directory, the command line and a 2-process DDP run (gloo, CPU)."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from core.training import rundir
from core.model import load_checkpoint
from core.data import DataConfig, load_split
from core.model import SWWAE, digits_config
from core.runs.cli import main
from core.training import TrainConfig, evaluate, learning_rate, train
from core.data import DeviceBatches

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16)
TINY_DATA = DataConfig(max_train=256, max_val=64)
TINY_FLAGS = ["--channels", "4", "8", "--kernel-sizes", "3", "3", "--pool-sizes", "2", "2", "--head-width", "16",
              "--max-train", "256", "--max-val", "64", "--batch-size", "32", "--device", "cpu", "--quiet"]
STEPS_PER_EPOCH = 256 // 32


def tiny_train(**overrides) -> TrainConfig:
    return TrainConfig(**{"batch_size": 32, "device": "cpu", "log_every": 2, "samples": 4, **overrides})


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead, and the CPU is shared
    yield
    torch.set_num_threads(threads)


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def states_equal(a: dict, b: dict, atol: float = 1e-6) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=atol) for k in a)


def test_tiny_run_learns_and_its_checkpoint_reloads_identically(tmp_path):
    run = tmp_path / "run"
    records = []
    result = train(TINY_MODEL, tiny_train(epochs=3, lr=3e-3), TINY_DATA, run_dir=run, on_record=records.append)
    assert result.state == "finished" and result.step == 3 * STEPS_PER_EPOCH and result.epoch == 3

    evals = rundir.read_metrics(run, kind="eval")
    steps = rundir.read_metrics(run, kind="step")
    assert [r["epoch"] for r in evals] == [1, 2, 3]
    assert evals[-1]["total"] < evals[0]["total"] and steps[-1]["total"] < steps[0]["total"]
    assert evals[-1]["accuracy"] > 0.3  # well above chance (0.1) after 24 tiny steps
    assert records == rundir.read_metrics(run)  # the callback saw exactly what the file holds
    for record in steps:
        assert {"step", "epoch", "total", "nll", "rec", "mid", "mid_0", "accuracy", "lr", "images_per_s",
                "wall_time"} <= record.keys()
    assert [r["step"] for r in steps][-1] == result.step

    status = rundir.read_status(run)
    assert status["state"] == "finished" and status["step"] == result.step and status["pid"] == os.getpid()
    assert rundir.read_config(run) == json.loads(json.dumps({"model": asdict(TINY_MODEL),
                                                             "train": asdict(tiny_train(epochs=3, lr=3e-3)),
                                                             "data": asdict(TINY_DATA)}))
    assert [p.name for p in rundir.list_samples(run)] == ["epoch_0001.png", "epoch_0002.png", "epoch_0003.png"]

    checkpoint = load_checkpoint(run / rundir.LAST_CHECKPOINT)
    assert checkpoint.step == result.step and checkpoint.optimizer_state is not None
    x, _ = load_split(TINY_DATA, "val")
    result.model.eval()
    with torch.no_grad():
        expected = result.model.decode(result.model.encode(x))
        reloaded = checkpoint.model.decode(checkpoint.model.encode(x))
    assert torch.equal(expected.recon, reloaded.recon)
    best = load_checkpoint(run / rundir.BEST_CHECKPOINT)
    best_epoch = max(evals, key=lambda r: r["accuracy"])["epoch"]
    assert best.epoch == best_epoch and best.metrics["last_eval"]["best"]


def test_evaluate_matches_a_direct_computation():
    torch.manual_seed(0)
    model = SWWAE(TINY_MODEL).eval()
    images, labels = load_split(TINY_DATA, "val")
    labels = labels.clone()
    labels[::3] = -1  # some unlabeled samples: accuracy and nll count only the labeled ones
    metrics = evaluate(model, DeviceBatches(images, labels, batch_size=24, seed=0).in_order(),
                       config=tiny_train(), device=torch.device("cpu"))
    with torch.no_grad():
        encoding = model.encode(images)
        recon = model.decode(encoding).recon
    labeled = labels != -1
    assert metrics["rec"] == pytest.approx(torch.mean((recon - images) ** 2).item(), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx((encoding.logits.argmax(1) == labels)[labeled].float().mean().item())
    nll = torch.nn.functional.cross_entropy(encoding.logits[labeled], labels[labeled])
    assert metrics["nll"] == pytest.approx(nll.item(), rel=1e-5)


def test_resume_after_one_epoch_equals_two_epochs_straight(tmp_path):
    config = tiny_train(epochs=2, schedule="none")
    data = DataConfig(max_train=256, max_val=64, shift=2)  # augmentation: the generator state must resume too
    model = digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16, dropout=0.3)
    straight = train(model, config, data, run_dir=tmp_path / "straight")
    first = train(model, tiny_train(epochs=1, schedule="none"), data, run_dir=tmp_path / "resumed")
    assert first.step == STEPS_PER_EPOCH
    resumed = train(model, config, data, run_dir=tmp_path / "resumed", resume=True)
    assert resumed.step == straight.step == 2 * STEPS_PER_EPOCH
    a = load_checkpoint(tmp_path / "straight" / rundir.LAST_CHECKPOINT)
    b = load_checkpoint(tmp_path / "resumed" / rundir.LAST_CHECKPOINT)
    assert states_equal(a.model.state_dict(), b.model.state_dict())
    # the metrics file reads as one run: one eval per epoch, steps strictly increasing
    assert [r["epoch"] for r in rundir.read_metrics(tmp_path / "resumed", kind="eval")] == [1, 2]
    steps = [r["step"] for r in rundir.read_metrics(tmp_path / "resumed", kind="step")]
    assert steps == sorted(set(steps))


def test_stop_file_mid_epoch_then_resume_is_exact(tmp_path):
    """A STOP file mid-epoch (cosine schedule, dropout, shift): stopped, exit state saved; resuming gives the
    same weights as never stopping."""
    config = tiny_train(epochs=2, log_every=1)
    data = DataConfig(max_train=256, max_val=64, shift=1)
    straight = train(TINY_MODEL, config, data, run_dir=tmp_path / "straight")
    run = tmp_path / "stopped"

    def stop_at_step_5(record):
        if record["kind"] == "step" and record["step"] == 5:
            rundir.request_stop(run)

    stopped = train(TINY_MODEL, config, data, run_dir=run, on_record=stop_at_step_5)
    assert stopped.state == "stopped" and stopped.step == 6  # the step after the request finished, then stop
    status = rundir.read_status(run)
    assert status["state"] == "stopped" and status["step"] == 6
    assert not (run / rundir.STOP_FILE).exists()
    assert load_checkpoint(run / rundir.LAST_CHECKPOINT).step == 6
    resumed = train(TINY_MODEL, config, data, run_dir=run, resume=True)
    assert resumed.state == "finished" and resumed.step == straight.step
    assert states_equal(straight.model.state_dict(), resumed.model.state_dict())


def test_nan_guard_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TINY_FLAGS, "--epochs", "1", "--run", str(run)]) == 0
    good = (run / rundir.LAST_CHECKPOINT).read_bytes()
    code = main([*TINY_FLAGS, "--run", str(run), "--resume", "--epochs", "3", "--lr", "1e12", "--optimizer", "sgd"])
    assert code == 1
    status = rundir.read_status(run)
    assert status["state"] == "failed"
    found = re.fullmatch(r"non-finite loss at step (\d+) \(term ([a-z_0-9, ]+)\)", status["message"])
    assert found, status["message"]
    assert STEPS_PER_EPOCH < int(found.group(1)) <= status["step"]  # the first bad step, after the good epoch
    bad_step_record = [r for r in rundir.read_metrics(run, kind="step") if r["step"] >= int(found.group(1))][0]
    assert all(bad_step_record[term] is None for term in found.group(2).split(", "))  # non-finite -> null
    assert (run / rundir.LAST_CHECKPOINT).read_bytes() == good
    assert load_checkpoint(run / rundir.LAST_CHECKPOINT).step == STEPS_PER_EPOCH
    assert "failed: non-finite loss" in capsys.readouterr().out


def test_sigterm_stops_cleanly_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "core.train", *TINY_FLAGS, "--epochs", "200", "--log-every", "1",
               "--run", str(run)]
    process = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (rundir.read_status(run) or {}).get("step", 0) < 2:
        time.sleep(0.1)
    assert rundir.is_live(rundir.read_status(run)), "the run did not start"
    # a second trainer refuses the busy run directory, in one line
    busy = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2 and "in use by a running training process" in busy.stderr
    assert busy.stderr.count("\n") == 1 and "Traceback" not in busy.stderr

    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    status = rundir.read_status(run)
    assert status["state"] == "stopped" and "stopped: stopped at step" in out
    checkpoint = load_checkpoint(run / rundir.LAST_CHECKPOINT)
    assert checkpoint.step == status["step"] >= 2 and checkpoint.optimizer_state is not None
    assert not rundir.is_live(status)

    resumed = train(TINY_MODEL, tiny_train(epochs=200, max_steps=checkpoint.step + 2),
                    DataConfig(max_train=256, max_val=64), run_dir=run, resume=True)
    assert resumed.state == "finished" and resumed.step == checkpoint.step + 2


def test_refuses_a_live_run_directory_and_a_finished_one_without_resume(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rundir.write_status(run, "running", step=0, epoch=0)  # this very process: alive
    assert main([*TINY_FLAGS, "--run", str(run)]) == 2
    assert "in use by a running training process" in capsys.readouterr().err
    rundir.write_status(run, "running", step=0, epoch=0)
    status = json.loads((run / rundir.STATUS_FILE).read_text())
    status["pid"] = 2**22 + 12345  # beyond pid_max: no such process, a stale status from a crash
    (run / rundir.STATUS_FILE).write_text(json.dumps(status))
    assert main([*TINY_FLAGS, "--run", str(run), "--max-steps", "1", "--epochs", "1"]) == 0
    assert main([*TINY_FLAGS, "--run", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("flags, words", [
    (["--mode", "nope"], "mode must be one of"),
    (["--labels", "5", "--mode", "supervised"], "fewer than batch_size"),
    (["--channels", "4", "8", "16"], "kernel_sizes has"),
    (["--resume"], "--resume needs --run"),
    (["--lr", "-1"], "lr must be >= 0"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, capsys, flags, words):
    assert main([*TINY_FLAGS, *flags] + ([] if "--resume" in flags else ["--run", str(tmp_path / "r")])) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


def test_dry_run_exercises_everything(tmp_path, capsys):
    run = tmp_path / "dry"
    assert main([*TINY_FLAGS, "--dry-run", "--run", str(run), "--export", str(tmp_path / "small.pt")]) == 0
    kinds = [r["kind"] for r in rundir.read_metrics(run)]
    assert kinds.count("eval") == 2 and kinds.count("step") == 4
    assert "resume" in (run / rundir.METRICS_FILE).read_text()
    assert rundir.read_status(run)["state"] == "finished"
    exported = load_checkpoint(tmp_path / "small.pt")
    best = load_checkpoint(run / rundir.BEST_CHECKPOINT)
    assert exported.optimizer_state is None and exported.rng_state is None
    assert exported.step == best.step and exported.metrics["eval"] == best.metrics["last_eval"]
    assert states_equal(exported.model.state_dict(), best.model.state_dict(), atol=0)
    assert "exported to" in capsys.readouterr().out


def test_unsupervised_and_supervised_modes(tmp_path):
    unsupervised = train(TINY_MODEL, tiny_train(epochs=1, mode="unsupervised"), TINY_DATA, run_dir=tmp_path / "u")
    assert unsupervised.state == "finished"
    assert all(r["accuracy"] is None for r in rundir.read_metrics(tmp_path / "u", kind="step"))  # no labels
    torch.manual_seed(0)  # the trainer seeds with seed * 1000 + rank = 0 before building the model
    initial = SWWAE(TINY_MODEL).state_dict()
    trained = unsupervised.model.state_dict()
    assert torch.equal(trained["to_logits.5.weight"], initial["to_logits.5.weight"])  # the head is not trained
    assert not torch.equal(trained["encoder_stages.0.0.weight"], initial["encoder_stages.0.0.weight"])

    supervised = train(TINY_MODEL, tiny_train(epochs=1, mode="supervised", batch_size=8),
                       DataConfig(max_train=256, max_val=64, labels=40), run_dir=tmp_path / "s")
    assert supervised.step == 40 // 8  # only the 40 labeled samples are trained on
    semi = train(TINY_MODEL, tiny_train(epochs=1, batch_size=8), DataConfig(max_train=256, max_val=64, labels=40))
    assert semi.step == 256 // 8  # every sample, most of them unlabeled


def test_learning_rate_schedule():
    config = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10)
    assert learning_rate(0, config=config, total_steps=110) == pytest.approx(0.1)
    assert learning_rate(9, config=config, total_steps=110) == pytest.approx(1.0)
    assert learning_rate(60, config=config, total_steps=110) == pytest.approx(0.55)
    assert learning_rate(110, config=config, total_steps=110) == pytest.approx(0.1)
    assert learning_rate(50, config=TrainConfig(lr=0.3, schedule="none"), total_steps=100) == 0.3


def test_metrics_reader_skips_torn_lines_and_applies_resume_markers(tmp_path):
    for step in (1, 2, 3):
        rundir.append_metrics(tmp_path, {"kind": "step", "step": step, "total": float("nan") if step == 3 else 1.0})
    rundir.append_metrics(tmp_path, {"kind": "resume", "step": 2})
    rundir.append_metrics(tmp_path, {"kind": "step", "step": 3, "total": 0.5})
    with open(tmp_path / rundir.METRICS_FILE, "a") as f:
        f.write('{"kind": "step", "st')  # a writer caught mid-line
    records = rundir.read_metrics(tmp_path)
    assert [(r["step"], r["total"]) for r in records] == [(1, 1.0), (2, 1.0), (3, 0.5)]
    assert "NaN" not in (tmp_path / rundir.METRICS_FILE).read_text()  # strict JSON: NaN is written as null


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_WORKER = """
import json, sys, torch
import core.training.state as state
from core.data import DataConfig
from core.model import SWWAE, digits_config
from core.training import TrainConfig, train
torch.set_num_threads(1)
saved, save = [], state.save_checkpoint
def recording_save(path, *args, **kwargs):  # every checkpoint this rank writes, snapshots included
    saved.append(str(path))
    save(path, *args, **kwargs)
state.save_checkpoint = recording_save
model = digits_config(channels=(4, 8), kernel_sizes=(3, 3), pool_sizes=(2, 2), head_width=16)
result = train(model, TrainConfig(epochs=2, batch_size=16, device="cpu", log_every=2, samples=2),
               DataConfig(max_train=128, max_val=32, shift=1), run_dir=sys.argv[1])
torch.save({k: v for k, v in result.model.state_dict().items()}, sys.argv[2])
open(sys.argv[2] + ".saved.json", "w").write(json.dumps(saved))
"""


def test_two_process_gloo_run_keeps_ranks_identical_and_only_rank_0_writes(tmp_path):
    run, port = tmp_path / "run", free_port()
    processes = []
    for rank in range(2):
        env = {**subprocess_env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        processes.append(subprocess.Popen([sys.executable, "-c", DDP_WORKER, str(run), str(tmp_path / f"rank{rank}.pt")],
                                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert states_equal(rank0, rank1, atol=0)
    steps_per_epoch = (128 // 2) // 16  # the data is sharded: each rank sees half
    status = rundir.read_status(run)
    assert status["pid"] == processes[0].pid and status["state"] == "finished"
    assert status["steps_per_epoch"] == steps_per_epoch
    steps = [r["step"] for r in rundir.read_metrics(run, kind="step")]
    assert steps == [2, 4, 6, 8]  # one writer: no duplicated records
    assert len(rundir.read_metrics(run, kind="eval")) == 2
    assert states_equal(load_checkpoint(run / rundir.LAST_CHECKPOINT).model.state_dict(), rank0, atol=0)
    # snapshots: the schedule of the 8-step run, written by rank 0 alone, the last one equal to the final weights
    saved = [json.loads(Path(f"{tmp_path / f'rank{r}.pt'}.saved.json").read_text()) for r in range(2)]
    assert saved[1] == [] and [Path(p).name for p in saved[0] if "snapshots" in p] == [
        "step_00000001.pt", "step_00000002.pt", "step_00000005.pt", "step_00000008.pt"]
    assert [step for step, _ in rundir.list_snapshots(run)] == [1, 2, 5, 8]
    assert states_equal(load_checkpoint(rundir.snapshot_path(run, 8)).model.state_dict(), rank0, atol=0)


def test_export_keeps_the_previous_file_when_stopped_before_any_evaluation(tmp_path):
    """Ctrl-C in epoch 1 of `--export checkpoints/default.pt` must not replace the shipped model."""
    export = tmp_path / "shipped.pt"
    export.write_bytes(b"previous model")
    result = train(TINY_MODEL, tiny_train(epochs=2), TINY_DATA, run_dir=tmp_path / "run", should_stop=lambda: True,
                   export_path=export)
    assert result.state == "stopped" and export.read_bytes() == b"previous model"
    args = ["--run", str(tmp_path / "cli"), "--epochs", "1", "--max-steps", "1", "--export", str(tmp_path / "cli.pt"),
            "--max-train", "64", "--max-val", "32", "--quiet", *TINY_FLAGS]
    done = subprocess.run([sys.executable, "-m", "core.train", *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "exported to" in done.stdout and (tmp_path / "cli.pt").is_file()
