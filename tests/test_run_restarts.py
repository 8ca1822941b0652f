"""Runs that must not change, and runs that must restart cleanly (issue 18 items 1, 2, 9 and 10): a dry run never
writes into an existing run; a fresh start where an attempt died before its first checkpoint voids that attempt's
records instead of appending to them; under torchrun one process group serves both halves of a dry run, and a
refusal on rank 0 ends every rank with its one-line reason, in bounded time."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.training import rundir
from tests.test_train import REPO, TINY_DATA, TINY_FLAGS, TINY_MODEL, subprocess_env, tiny_train
from core.training import train

DDP_TIMEOUT_S = "30"  # the collective timeout under test: a stuck rank ends within it


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "done"
    result = train(TINY_MODEL, tiny_train(epochs=1), TINY_DATA, run_dir=run)
    assert result.state == "finished"
    return run


@pytest.mark.parametrize("extra", [[], ["--resume"]])
def test_a_dry_run_never_writes_into_an_existing_run(finished_run, extra):
    before = snapshot(finished_run)
    done = subprocess.run([sys.executable, "-m", "core.train", "--dry-run", "--quiet", "--run", str(finished_run),
                           *extra], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "a dry run never writes into an existing run" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert snapshot(finished_run) == before  # not a byte changed


def test_a_fresh_start_after_an_attempt_that_died_before_its_checkpoint_starts_clean(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    old = [{"kind": "step", "step": s, "epoch": 0, "total": 9.0} for s in (1, 2, 3)]
    (run / rundir.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in old))
    rundir.write_status(run, "failed", step=3, epoch=0, message="killed")
    result = train(TINY_MODEL, tiny_train(epochs=1, log_every=1), TINY_DATA, run_dir=run)
    assert result.state == "finished"
    steps = [r["step"] for r in rundir.read_metrics(run, "step")]
    assert steps == sorted(set(steps)) and steps[0] == 1 and len(steps) == result.step  # no 1, 2, 3, 1, 2, ...
    assert all(r.get("total") != 9.0 for r in rundir.read_metrics(run, "step"))
    text = (run / rundir.METRICS_FILE).read_text()
    assert text.startswith("".join(json.dumps(r) + "\n" for r in old))  # the old records are still in the file


def torchrun(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(29500 + os.getpid() % 1000), "-m", "core.train", *args]
    env = {**subprocess_env(), "SWWAE_DDP_TIMEOUT_S": DDP_TIMEOUT_S, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_torchrun_dry_runs_finish_every_time(tmp_path):
    """The dry run trains twice in one process; a second process group used to hang about one time in two."""
    for attempt in range(4):
        done = torchrun([*TINY_FLAGS, "--dry-run", "--quiet", "--run-dir", str(tmp_path / f"dry{attempt}")],
                        timeout=150)
        assert done.returncode == 0, done.stderr[-2000:]
        assert rundir.read_status(tmp_path / f"dry{attempt}")["state"] == "finished"


def test_a_refusal_on_rank_0_ends_every_rank_with_its_reason(finished_run):
    before = snapshot(finished_run)
    done = torchrun([*TINY_FLAGS, "--quiet", "--run-dir", str(finished_run)], timeout=120)
    assert done.returncode != 0
    # rank 0's own refusal and rank 1's copy of it (the two ranks share stderr: their lines may interleave)
    assert done.stderr.count("error: ") == 2 and done.stderr.count("already holds a run") == 2, done.stderr[-2000:]
    assert "rank 0 refused the run" in done.stderr
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("name", ["metrics.jsonl", "samples", "lock", "train.log"])
def test_nothing_is_written_through_a_symbolic_link_in_a_run_folder(tmp_path, name):
    """Issue 18 item 8: appends, sample pictures, the lock and the log used to follow a link out of the folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / ("dir" if name == "samples" else "file")
    if name == "samples":
        target.mkdir()
    else:
        target.write_text("precious\n")
    before = snapshot(outside)
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to(target)
    with pytest.raises(rundir.RunDirError, match="symbolic link"):
        train(TINY_MODEL, tiny_train(epochs=1), TINY_DATA, run_dir=run)
    from core.runs import launch, make_configs
    with pytest.raises(rundir.RunDirError, match="symbolic link"):
        launch(run, make_configs(data={"dataset": "mnist5k"}, train={}, model={}))
    with pytest.raises(rundir.RunDirError, match="symbolic link"):
        rundir.append_metrics(run, {"kind": "step", "step": 1}) if name == "metrics.jsonl" else rundir.claim(run)
    assert snapshot(outside) == before and not list(run.glob("status.json"))
