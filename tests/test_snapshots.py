"""Snapshots of a run (issue 17): the weights at log-spaced steps in snapshots/step_<8 digits>.pt, written by rank 0
through the checkpoint module, exact across a crash and --resume, and what they cost."""
from __future__ import annotations

import pytest
import torch

from core.data import DataConfig
from core.model import load_checkpoint
from core.training import MAX_SNAPSHOTS, rundir, snapshot_steps, train
from tests.test_train import TINY_DATA, TINY_MODEL, one_thread, tiny_train  # noqa: F401 - one_thread: autouse

STEPS = 100  # 8 steps per epoch (256 images, batch 32): 12.5 epochs, so max_steps ends the run mid-epoch
DATA = DataConfig(max_train=256, max_val=64, shift=1)  # augmentation: its generator must resume too


def snapshot_weights(run) -> dict[int, dict[str, torch.Tensor]]:
    return {step: load_checkpoint(path).model.state_dict() for step, path in rundir.list_snapshots(run)}


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_schedule_is_log_spaced_bounded_and_ends_on_the_last_step():
    assert snapshot_steps(100) == [1, 2, 5, 10, 20, 50, 100]
    assert snapshot_steps(17_180) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 17_180]
    assert snapshot_steps(1) == [1] and snapshot_steps(0) == [] and snapshot_steps(3) == [1, 2, 3]
    huge = snapshot_steps(10**15)
    assert len(huge) == MAX_SNAPSHOTS and huge[-1] == 10**15 and huge == sorted(set(huge))


def test_a_100_step_run_keeps_exactly_the_scheduled_steps_as_weights_only_files(tmp_path):
    run = tmp_path / "run"
    result = train(TINY_MODEL, tiny_train(epochs=13, max_steps=STEPS), DATA, run_dir=run)
    assert result.state == "finished" and result.step == STEPS
    found = rundir.list_snapshots(run)
    assert [step for step, _ in found] == [1, 2, 5, 10, 20, 50, 100]
    assert [path.name for _, path in found][:2] == ["step_00000001.pt", "step_00000002.pt"]
    for step, path in found:
        snapshot = load_checkpoint(path)
        assert snapshot.step == step and snapshot.optimizer_state is None and snapshot.rng_state is None
        assert snapshot.dataset == "mnist5k" and snapshot.train_config["max_steps"] == STEPS
    assert identical(load_checkpoint(found[-1][1]).model.state_dict(), result.model.state_dict())
    assert not identical(load_checkpoint(found[0][1]).model.state_dict(), result.model.state_dict())
    # weights only: a third of last.pt (which carries Adam's two moments)
    assert found[-1][1].stat().st_size < 0.5 * (run / rundir.LAST_CHECKPOINT).stat().st_size
    assert 0 < result.snapshot_seconds
    assert not list((run / rundir.SNAPSHOTS_DIR).glob(".*.tmp"))  # atomic writes leave nothing behind


def test_a_crashed_and_resumed_run_has_the_same_snapshots_byte_for_byte(tmp_path):
    """A crash at step 52 (last.pt from the epoch end at step 48, snapshot 50 written after it), then --resume:
    the same files as an uninterrupted run, every weight equal; the void snapshot 50 is written again."""
    config = tiny_train(epochs=13, max_steps=STEPS)
    train(TINY_MODEL, config, DATA, run_dir=tmp_path / "straight")
    run = tmp_path / "crashed"

    def crash_at_step_52(record) -> None:
        if record["kind"] == "step" and record["step"] == 52:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train(TINY_MODEL, config, DATA, run_dir=run, on_record=crash_at_step_52)
    assert load_checkpoint(run / rundir.LAST_CHECKPOINT).step == 48
    assert [step for step, _ in rundir.list_snapshots(run)] == [1, 2, 5, 10, 20, 50]
    void = rundir.snapshot_path(run, 50)
    void.write_bytes(b"written after last.pt: void")  # whatever it holds, the resumed run rewrites it
    resumed = train(TINY_MODEL, config, DATA, run_dir=run, resume=True)
    assert resumed.state == "finished" and resumed.step == STEPS
    straight, again = snapshot_weights(tmp_path / "straight"), snapshot_weights(run)
    assert list(again) == list(straight) == [1, 2, 5, 10, 20, 50, 100]
    assert all(identical(straight[step], again[step]) for step in straight)


def test_a_fresh_start_removes_an_earlier_attempts_snapshots_and_snapshots_can_be_off(tmp_path):
    run = tmp_path / "run"
    stale = rundir.snapshot_path(run, 7)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an attempt that died before its first checkpoint")
    train(TINY_MODEL, tiny_train(epochs=1), TINY_DATA, run_dir=run)
    assert [step for step, _ in rundir.list_snapshots(run)] == [1, 2, 5, 8]
    off = tmp_path / "off"
    result = train(TINY_MODEL, tiny_train(epochs=1, snapshots=False), TINY_DATA, run_dir=off)
    assert result.state == "finished" and rundir.list_snapshots(off) == [] and result.snapshot_seconds == 0


def test_a_linked_snapshots_folder_is_refused_before_anything_is_written_through_it(tmp_path):
    outside, run = tmp_path / "outside", tmp_path / "run"
    outside.mkdir()
    run.mkdir()
    (run / rundir.SNAPSHOTS_DIR).symlink_to(outside)
    with pytest.raises(rundir.RunDirError, match="symbolic link"):
        train(TINY_MODEL, tiny_train(epochs=1), TINY_DATA, run_dir=run)
    assert list(outside.iterdir()) == []
