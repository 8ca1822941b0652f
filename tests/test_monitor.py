"""core.runs.monitor and core.runs.launcher without a UI: the incremental metrics reader against full re-reads with
core.training.rundir.read_metrics (the reference), run states, decimation, and the launcher's refusals."""
import json
import math
import os
import random
import socket
import subprocess
import sys

import numpy as np
import pytest

from core.training import rundir

from core.runs import MetricsReader, decimate, launch, launcher, make_configs, metrics, monitor, resume, stop
from core.runs.cli import _configs, _parser


def step_record(step: int, rng: random.Random, kind: str = "step") -> dict:
    record = {"kind": kind, "step": step, "epoch": step // 50, "total": rng.random() * 3, "nll": rng.random(),
              "rec": rng.random() / 10, "mid": rng.random(), "mid_0": rng.random(),
              "accuracy": None if rng.random() < 0.2 else rng.random(), "wall_time": step * 0.1, "time": 1e9 + step}
    if kind == "step":
        record.update(lr=1e-3, images_per_s=rng.uniform(100, 5000))
    else:
        record["best"] = rng.random() < 0.5
    return record


def metrics_lines(seed: int, count: int = 400) -> list[str]:
    """Step and eval records with resumes (voiding later steps) and torn lines (crash mid-write) among them."""
    rng = random.Random(seed)
    lines, step = [], 0
    for _ in range(count):
        roll = rng.random()
        if roll < 0.03 and step > 10:
            step = rng.randrange(step)  # a resume from an older checkpoint
            lines.append(json.dumps({"kind": "resume", "step": step, "time": 1e9}))
        elif roll < 0.06:
            torn = json.dumps(step_record(step, rng))
            lines.append(torn[:rng.randrange(1, len(torn) - 1)])  # never a whole record
        elif roll < 0.08:
            lines.append("")
        elif roll < 0.15:
            lines.append(json.dumps(step_record(step, rng, "eval")))
        else:
            step += rng.randint(1, 5)
            lines.append(json.dumps(step_record(step, rng)))
    return lines


def assert_same(reader: MetricsReader, run_dir) -> None:
    for kind in ("step", "eval"):
        expected = rundir.read_metrics(run_dir, kind)
        got = reader.records(kind)
        assert len(got) == len(expected), kind
        for want, have in zip(expected, got):
            for name, value in want.items():
                if name == "kind":
                    continue
                if value is None:
                    assert math.isnan(have[name]), name
                else:
                    assert have[name] == pytest.approx(float(value), rel=1e-12), name


@pytest.mark.parametrize("parser", ["orjson", "json"])
@pytest.mark.parametrize("seed", range(4))
def test_incremental_reads_equal_full_rereads(tmp_path, seed, parser, monkeypatch):
    """The file grows in chunks cut at random bytes (mid-line, mid-number); after every chunk the reader holds
    exactly what a full re-read gives, and never re-reads old bytes. With orjson and with the standard library."""
    if parser == "json":
        monkeypatch.setattr(metrics, "orjson", None)
    elif metrics.orjson is None:
        pytest.skip("orjson is not installed")
    data = ("\n".join(metrics_lines(seed)) + "\n").encode()
    rng = random.Random(seed)
    reader = MetricsReader(tmp_path)
    path = tmp_path / rundir.METRICS_FILE
    position = 0
    while position < len(data):
        cut = min(len(data), position + rng.randint(1, 2000))
        with open(path, "ab") as f:
            f.write(data[position:cut])
        position = cut
        offset_before = reader.offset
        reader.update()
        assert reader.offset >= offset_before
        assert reader.offset == data[:position].rfind(b"\n") + 1  # up to the last complete line, no further
        assert_same(reader, tmp_path)
    torn = sum(1 for line in data.decode().split("\n")[:-1] if line.strip() and not _is_json(line))
    assert reader.malformed == torn > 0


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def test_partial_line_waits_for_its_newline(tmp_path):
    rng = random.Random(0)
    line = json.dumps(step_record(1, rng))
    path = tmp_path / rundir.METRICS_FILE
    path.write_text(line[:30])
    reader = MetricsReader(tmp_path)
    assert reader.update() == 0 and reader.offset == 0 and reader.malformed == 0
    with open(path, "a") as f:
        f.write(line[30:] + "\n")
    assert reader.update() == 1 and reader.count("step") == 1 and reader.malformed == 0
    assert reader.update() == 0  # nothing new, nothing read


def test_lines_that_are_not_records_are_skipped_and_counted(tmp_path):
    rng = random.Random(0)
    good = [json.dumps(step_record(s, rng)) for s in (1, 2, 3)]
    lines = [good[0], "[1, 2]", '{"kind": "step"}', "\xff garbage", good[1], '"text"', good[2]]
    (tmp_path / rundir.METRICS_FILE).write_text("\n".join(lines) + "\n")
    reader = MetricsReader(tmp_path)
    reader.update()
    steps, totals = reader.series("step", "total")
    assert list(steps) == [1, 2, 3] and reader.malformed == 4
    assert np.allclose(totals, [json.loads(g)["total"] for g in good])


def test_replaced_or_truncated_file_is_read_again(tmp_path):
    rng = random.Random(0)
    path = tmp_path / rundir.METRICS_FILE
    path.write_text("".join(json.dumps(step_record(s, rng)) + "\n" for s in range(1, 11)))
    reader = MetricsReader(tmp_path)
    reader.update()
    assert reader.count("step") == 10
    path.write_text(json.dumps(step_record(1, rng)) + "\n")  # a new run in the same folder
    reader.update()
    assert reader.count("step") == 1
    path.unlink()
    reader.update()
    assert reader.count("step") == 0


def test_decimate_keeps_short_series_and_averages_long_ones():
    steps = np.arange(1, 11, dtype=float)
    assert decimate_same(steps, steps * 2, 100)
    steps = np.arange(1, 100_001, dtype=float)
    values = np.sin(steps / 1000)
    values[5] = np.nan
    few_steps, few_values = decimate(steps, values, 2000)
    assert len(few_steps) <= 2000 and few_steps[-1] == steps[-1] and few_values[-1] == values[-1]
    bucket = math.ceil(len(steps) / 1999)
    assert few_values[0] == pytest.approx(np.nanmean(values[:bucket]))
    assert few_steps[1] == pytest.approx(steps[bucket:2 * bucket].mean())
    assert np.all(np.diff(few_steps) > 0)


def decimate_same(steps, values, max_points) -> bool:
    out_steps, out_values = decimate(steps, values, max_points)
    return np.array_equal(out_steps, steps) and np.array_equal(out_values, values)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def make_run(root, name, state="running", pid=None, **extra):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    rundir.write_config(run_dir, model={}, train={}, data={})
    rundir.write_status(run_dir, state, step=5, epoch=0, message="hello")
    status = json.loads((run_dir / rundir.STATUS_FILE).read_text())
    status.update(pid=pid if pid is not None else os.getpid(), **extra)
    (run_dir / rundir.STATUS_FILE).write_text(json.dumps(status))
    return run_dir


def test_run_states(tmp_path):
    assert monitor.summarize(make_run(tmp_path, "live")).state == "running"
    stale = monitor.summarize(make_run(tmp_path, "stale", pid=dead_pid()))
    assert stale.state == "stale" and "gone" in stale.message and not stale.active
    assert monitor.summarize(make_run(tmp_path, "remote", pid=dead_pid(), host="elsewhere")).state == "running"
    assert monitor.summarize(make_run(tmp_path, "done", state="finished")).state == "finished"
    assert monitor.summarize(make_run(tmp_path, "broken", state="failed")).message == "hello"

    launched = tmp_path / "launched"  # the dashboard started a process that gave up before training
    launched.mkdir()
    (launched / monitor.LOG_FILE).write_text("$ python -m core.train ...\nerror: unknown dataset 'x'\n")
    (launched / monitor.LAUNCH_FILE).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(),
                                                            "started": 1.0}))
    summary = monitor.summarize(launched)
    assert summary.state == "failed" and summary.message.endswith("error: unknown dataset 'x'")
    rundir.request_stop(launched)
    assert monitor.summarize(launched).state == "stopped"
    (launched / monitor.LAUNCH_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                            "started": 1.0}))
    assert monitor.summarize(launched).state == "starting"
    assert {p.name for p in monitor.discover_runs(tmp_path)} == {"live", "stale", "remote", "done", "broken",
                                                                  "launched"}


def test_zombie_child_counts_as_dead(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    launcher._CHILDREN[process.pid] = process  # what launch() registers
    while process.poll() is None:  # let it exit; poll reaps it, as reap() does for unwaited children
        pass
    assert not monitor.pid_alive(process.pid)
    assert not launcher._CHILDREN


def test_make_configs_and_the_command_agree_with_the_cli(tmp_path):
    configs = make_configs(
        data={"dataset": "mnist5k", "labels": 100, "max_train": 256},
        train={"mode": "semi-supervised", "lambda_rec": 0.5, "lambda_mid": 0.0, "epochs": 3, "batch_size": 32,
               "lr": 2e-3, "device": "cpu", "bf16": False},
        model={"channels": (8, 16), "pooling": "soft"})
    command = launcher.train_command(tmp_path / "run", configs)
    assert command[1:3] == ["-m", "core.train"]
    model, train, data = _configs(_parser().parse_args(command[3:]))  # what the CLI will build from it
    assert (model, train, data) == (configs.model, configs.train, configs.data)
    assert model.kernel_sizes == (3, 3) and model.pool_sizes == (2, 2)


@pytest.mark.parametrize("options, reason", [
    ({"data": {"dataset": "nope"}}, "unknown dataset"),
    ({"train": {"epochs": 0}}, "epochs must be at least 1"),
    ({"train": {"lr": -1.0}}, "lr must be >= 0"),
    ({"model": {"channels": (4, 4, 4, 4, 4, 4)}}, "too small"),
    ({"model": {"pooling": "average"}}, "pooling must be one of"),
    ({"train": {"colour": 3}}, "colour"),
])
def test_make_configs_refuses_bad_input(options, reason):
    kwargs = {"data": {"dataset": "mnist5k"}, "train": {}, "model": {}} | options
    with pytest.raises(ValueError, match=reason):
        make_configs(**kwargs)
    with pytest.raises(ValueError, match="whole numbers"):
        launcher.parse_channels("32 x 64")
    with pytest.raises(ValueError, match="run name"):
        launcher.check_run_name("../escape")


def test_launch_refuses_busy_existing_and_empty_run_dirs(tmp_path):
    configs = make_configs(data={"dataset": "mnist5k"}, train={}, model={})
    make_run(tmp_path, "busy")
    with pytest.raises(rundir.RunDirError, match="busy"):
        launch(tmp_path / "busy", configs)
    with pytest.raises(rundir.RunDirError, match="busy"):
        resume(tmp_path / "busy")
    done = make_run(tmp_path, "done", state="finished")
    (done / rundir.METRICS_FILE).write_text("")
    with pytest.raises(rundir.RunDirError, match="nothing to resume"):
        resume(done)
    launcher._check_free(done, resume=False)  # metrics but no last.pt: an attempt that died early may start afresh
    (done / rundir.LAST_CHECKPOINT).write_bytes(b"")
    with pytest.raises(rundir.RunDirError, match="already exists"):
        launch(done, configs)
    with pytest.raises(rundir.RunDirError, match="not running"):
        stop(done)
    stop(tmp_path / "busy")
    assert rundir.stop_requested(tmp_path / "busy")
