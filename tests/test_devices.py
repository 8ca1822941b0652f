"""Device listing (core.training.devices) with a mocked torch.cuda, and the Train / Runs pages' use of it through AppTest."""
import functools
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.training import rundir
from core.training.devices import GIB, DeviceInfo, describe, list_devices, run_device
from core.runs import RUNS_ENV

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
H200_BYTES = 150_100_000_000  # what torch reports for an H200: ~139.8 GiB
GPUS = [SimpleNamespace(name="NVIDIA H200", total_memory=H200_BYTES),
        SimpleNamespace(name="NVIDIA A100-SXM4-40GB", total_memory=40 * GIB)]


def answering(real, value: bool):
    """A stand-in for a torch `is_available` that answers `value`, wrapping the real one as torch's own are wrapped
    (torch._dynamo reads `torch.backends.mps.is_available.__wrapped__` when it is first imported)."""
    return functools.wraps(real)(lambda: value)


@pytest.fixture
def two_gpus(monkeypatch):
    """torch.cuda as on a machine with two GPUs (no real CUDA call can happen: every function used is mocked)."""
    monkeypatch.setattr(torch.cuda, "is_available", answering(torch.cuda.is_available, True))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(GPUS))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: GPUS[index])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", answering(torch.backends.mps.is_available, False))


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", answering(torch.cuda.is_available, False))
    monkeypatch.setattr(torch.backends.mps, "is_available", answering(torch.backends.mps.is_available, False))


def test_each_gpu_is_listed_by_name_and_memory_and_the_first_is_the_default(two_gpus):
    devices = list_devices()
    assert [d.name for d in devices] == ["cuda:0", "cuda:1", "cpu"]
    assert devices[0] == DeviceInfo("cuda:0", "NVIDIA H200", H200_BYTES)
    assert devices[0].label == "cuda:0 — NVIDIA H200, 140 GiB"
    assert devices[1].label == "cuda:1 — NVIDIA A100-SXM4-40GB, 40 GiB"
    assert devices[2].label == f"cpu — {os.cpu_count()} cores"
    assert describe("cuda:1") == devices[1].label
    assert describe(torch.device("cuda")) == devices[0].label  # no index: the current device
    assert describe("cpu") == devices[2].label


def test_without_a_gpu_only_the_cpu_is_listed(no_gpu):
    assert [d.name for d in list_devices()] == ["cpu"]


def test_mps_comes_before_the_cpu(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", answering(torch.backends.mps.is_available, True))
    assert [d.label for d in list_devices()][:1] == ["mps — Apple GPU"]


def test_run_device_prefers_the_recorded_device_over_the_configured_one(tmp_path):
    assert run_device(tmp_path) == ""  # nothing written yet
    rundir.write_config(tmp_path, model={}, train={"device": "auto"}, data={})
    assert run_device(tmp_path) == "auto"
    rundir.write_status(tmp_path, "running", step=0, epoch=0, device="cuda:0 — NVIDIA H200, 140 GiB")
    assert run_device(tmp_path) == "cuda:0 — NVIDIA H200, 140 GiB"
    assert run_device(tmp_path, status={}) == "auto"  # a status already read, without a device
    (tmp_path / rundir.CONFIG_FILE).write_text("not json")
    assert run_device(tmp_path, status={}) == ""


@pytest.fixture
def empty_runs(tmp_path, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    return tmp_path


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_train_page_lists_the_gpus_first_and_defaults_to_the_first(two_gpus, empty_runs):
    at = open_page("train")
    device = at.selectbox(key="train_device")
    assert device.options == ["cuda:0 — NVIDIA H200, 140 GiB", "cuda:1 — NVIDIA A100-SXM4-40GB, 40 GiB",
                              f"cpu — {os.cpu_count()} cores"]
    assert device.value == "cuda:0"  # the value handed to the trainer is the device name, not its label
    # (not submitted: the form would start a real process, which would find no CUDA)


def test_train_page_without_a_gpu_defaults_to_the_cpu(no_gpu, empty_runs):
    assert open_page("train").selectbox(key="train_device").value == "cpu"


def test_runs_and_train_pages_show_the_device_a_run_trains_on(no_gpu, empty_runs):
    run_dir = empty_runs / "on-gpu"
    rundir.write_config(run_dir, model={}, train={"device": "cuda:0"}, data={})
    rundir.write_status(run_dir, "finished", step=3, epoch=1, message="trained 3 steps, 1 epochs")
    rundir.append_metrics(run_dir, {"kind": "step", "step": 3, "epoch": 1, "total": 0.5})  # the panels need a curve
    at = open_page("runs")
    frame = at.dataframe[0].value
    assert dict(zip(frame["run"], frame["device"])) == {"on-gpu": "cuda:0"}
    assert any("on cuda:0" in c.value.replace("\\", "") for c in at.caption)  # markdown-escaped: cuda\:0
    at = open_page("train")
    assert "on cuda:0" in at.get("progress")[0].proto.text.replace("\\", "")
