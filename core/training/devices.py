"""The devices this machine can train on, named for people: each CUDA device by name and memory, then MPS, then CPU.

    devices = list_devices()        # [DeviceInfo('cuda:0', 'NVIDIA H200', 150_...), DeviceInfo('cpu', ...)]
    devices[0].label                # 'cuda:0 — NVIDIA H200, 140 GiB'; the first entry is the default choice
    run_device(run_dir)             # what a run trains on, from its run directory

Pure torch (no Streamlit): the Train page lists these, and the trainer may record `describe(device)`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from core.training import rundir

__all__ = ["DeviceInfo", "describe", "list_devices", "run_device", "resolve_device"]

GIB = 2**30


@dataclass(frozen=True)
class DeviceInfo:
    name: str  # as TrainConfig.device takes it: 'cuda:0', 'mps', 'cpu'
    model: str  # what it is: 'NVIDIA H200', 'Apple GPU', '16 cores'
    memory_bytes: int | None = None  # total device memory (None: not a separate memory, e.g. the CPU's RAM)

    @property
    def label(self) -> str:
        """'cuda:0 — NVIDIA H200, 140 GiB' (the memory rounded to whole GiB); 'cpu — 16 cores'."""
        detail = self.model if self.memory_bytes is None else f"{self.model}, {self.memory_bytes / GIB:.0f} GiB"
        return f"{self.name} — {detail}"


def _cuda_info(index: int) -> DeviceInfo:
    properties = torch.cuda.get_device_properties(index)
    return DeviceInfo(f"cuda:{index}", properties.name, int(properties.total_memory))


def list_devices() -> list[DeviceInfo]:
    """Every device to train on, fastest kind first (CUDA devices in index order, MPS, CPU): the first is the
    default choice. Reads device properties only; puts no tensor on any device."""
    found = [_cuda_info(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        found.append(DeviceInfo("mps", "Apple GPU"))
    found.append(DeviceInfo("cpu", f"{os.cpu_count() or 1} cores"))
    return found


def describe(device: str | torch.device) -> str:
    """One device's label, e.g. describe(torch.device('cuda', 0)) -> 'cuda:0 — NVIDIA H200, 140 GiB'."""
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_info(device.index if device.index is not None else torch.cuda.current_device()).label
    return next((d.label for d in list_devices() if d.name == device.type), str(device))


def run_device(run_dir: str | os.PathLike, status: dict | None = None) -> str:
    """What a run trains on: status.json's "device" when the trainer records the device it resolved, else the
    device config.json asked for (e.g. 'cuda', 'cpu', or 'auto': resolved when it started, not recorded); '' when
    neither file says. `status`: status.json as already read (RunSummary.status), to save reading it again."""
    status = (rundir.read_status(run_dir) if status is None else status) or {}
    if isinstance(status.get("device"), str) and status["device"]:
        return status["device"]
    try:
        asked = rundir.read_config(Path(run_dir))["train"].get("device")
    except (OSError, ValueError, rundir.RunDirError):  # no config.json yet, or not a run's
        return ""
    return asked if isinstance(asked, str) else ""


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r}: training runs on cpu, cuda or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device
