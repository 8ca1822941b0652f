"""The one module that knows the run-directory format. The trainer writes it; anything may read it while it runs.

    runs/<name>/
      config.json     {"model": {...ModelConfig}, "train": {...TrainConfig}, "data": {...DataConfig}}
                      written atomically when a run starts (and again on resume).
      metrics.jsonl   append-only, one JSON object per line, each line written whole and flushed:
                        {"kind": "step", "step", "epoch", "total", "nll", "rec", "mid", "mid_0", ...,
                         "accuracy", "lr", "images_per_s", "wall_time", "time"}
                          one per logged training step; loss terms are the means over the steps since the last
                          record; accuracy is over the labeled training samples in them (null if none).
                        {"kind": "eval", "step", "epoch", "total", "nll", "rec", "mid", "mid_0", ..., "accuracy",
                         "best", "wall_time", "time"}
                          one per evaluation (end of every epoch), on the validation split; "rec" is the
                          reconstruction MSE; "best" says whether best.pt was just written.
                        {"kind": "resume", "step", "time"}
                          a run resumed from a checkpoint taken at `step`: records before this line with a
                          larger step (written after that checkpoint, before a crash) are void.
                      "step" is the number of optimizer steps done; "epoch" the number of finished epochs when the
                      record was written; "wall_time" is seconds of training so far (kept across resumes);
                      "time" is Unix time; a non-finite value is written as null (the file is strict JSON).
                      A reader must ignore a final line without a newline (it is being written).
      status.json     {"state": "running" | "finished" | "stopped" | "failed", "pid", "host", "step", "epoch",
                       "message", "updated", "epochs", "steps_per_epoch", "total_steps"}
                      written atomically at the start ("starting"), at every metrics record and at the end;
                      "updated" is Unix time. "running" with a pid that no longer exists means the process died
                      (kill -9, power loss): last.pt is still the last good checkpoint. "failed" messages name the
                      cause, e.g. "non-finite loss at step 812 (term rec)".
      STOP            created by anyone to ask the run to stop after the current step (removed when honoured)
      samples/epoch_0001.png   at each evaluation: validation images (top row) over their reconstructions
      last.pt, best.pt         checkpoints (core.checkpoint format), written atomically: last.pt at every epoch
                               end, on stop and every TrainConfig.checkpoint_every steps; best.pt after an
                               evaluation marked "best" (highest val accuracy; unsupervised: lowest rec)
"""
from __future__ import annotations

import io
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import atomic_write_bytes

__all__ = [
    "CONFIG_FILE", "METRICS_FILE", "STATUS_FILE", "STOP_FILE", "LAST_CHECKPOINT", "BEST_CHECKPOINT", "SAMPLES_DIR",
    "STATES", "RunDirError",
    "write_config", "read_config", "append_metrics", "read_metrics", "write_status", "read_status",
    "pid_alive", "is_live", "check_not_running", "request_stop", "stop_requested", "clear_stop",
    "write_samples", "list_samples",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"
STOP_FILE = "STOP"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
SAMPLES_DIR = "samples"
STATES = ("running", "finished", "stopped", "failed")


class RunDirError(Exception):
    """A run directory that cannot be used as asked; the message is one line saying why."""


def _write_json(path: Path, values: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(values, indent=2) + "\n").encode())


def write_config(run_dir: str | os.PathLike, *, model: dict, train: dict, data: dict) -> None:
    _write_json(Path(run_dir) / CONFIG_FILE, {"model": model, "train": train, "data": data})


def read_config(run_dir: str | os.PathLike) -> dict[str, dict]:
    """{'model': ..., 'train': ..., 'data': ...} as plain dicts."""
    return json.loads((Path(run_dir) / CONFIG_FILE).read_text())


def append_metrics(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record (it must carry "kind" and "step") as one whole line."""
    record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
    line = json.dumps(record, allow_nan=False) + "\n"  # strict JSON: non-finite numbers become null
    with open(Path(run_dir) / METRICS_FILE, "a") as f:
        f.write(line)
        f.flush()


def read_metrics(run_dir: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """Every valid record in order ("resume" lines applied and dropped), optionally only those of one kind."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_text().split("\n")[:-1]:  # the part after the last newline is still being written
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line from a crash mid-write
        if not isinstance(record, dict):
            continue  # valid JSON, but not a record
        if record.get("kind") == "resume":
            records = [r for r in records if r.get("step", 0) <= record["step"]]
        else:
            records.append(record)
    return [r for r in records if kind is None or r.get("kind") == kind]


def write_status(run_dir: str | os.PathLike, state: str, *, step: int, epoch: int, message: str = "",
                 **extra: Any) -> None:
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    status = {"state": state, "pid": os.getpid(), "host": socket.gethostname(), "step": int(step),
              "epoch": int(epoch), "message": message, "updated": time.time(), **extra}
    _write_json(Path(run_dir) / STATUS_FILE, status)


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The status dict, or None when the run has none (not started) or it cannot be read."""
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def pid_alive(pid: Any) -> bool:
    """Whether process `pid` runs on this host (a zombie, exited but not yet reaped, counts as dead)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (TypeError, ValueError, OverflowError):
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) said it exists


def is_live(status: dict[str, Any] | None) -> bool:
    """Whether `status` says running and its process still exists (on this host; another host counts as live)."""
    if not status or status.get("state") != "running":
        return False
    if status.get("host") != socket.gethostname():
        return True
    return pid_alive(status.get("pid"))


def check_not_running(run_dir: str | os.PathLike) -> None:
    status = read_status(run_dir)
    if is_live(status):
        raise RunDirError(f"{run_dir} is in use by a running training process (pid {status['pid']}); "
                          f"stop it first (create {Path(run_dir) / STOP_FILE}) or choose another --run")


def request_stop(run_dir: str | os.PathLike) -> None:
    (Path(run_dir) / STOP_FILE).touch()


def stop_requested(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / STOP_FILE).exists()


def clear_stop(run_dir: str | os.PathLike) -> None:
    (Path(run_dir) / STOP_FILE).unlink(missing_ok=True)


def write_samples(run_dir: str | os.PathLike, epoch: int, images: torch.Tensor, recon: torch.Tensor) -> Path:
    """Save images (N, C, H, W) over their reconstructions as samples/epoch_XXXX.png; returns the path."""
    from torchvision.utils import make_grid
    from PIL import Image

    grid = make_grid(torch.cat([images, recon]).float().clamp(0, 1).cpu(), nrow=len(images), padding=2)  # (C, H', W')
    pixels = grid.mul(255).round().byte().permute(1, 2, 0).numpy()  # (H', W', C)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path = Path(run_dir) / SAMPLES_DIR / f"epoch_{epoch:04d}.png"
    atomic_write_bytes(path, buffer.getvalue())
    return path


def list_samples(run_dir: str | os.PathLike) -> list[Path]:
    """Sample PNGs, oldest epoch first."""
    return sorted((Path(run_dir) / SAMPLES_DIR).glob("epoch_*.png"))
