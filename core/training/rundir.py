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
                      A reader must ignore a final line without a newline (it is being written); a writer starts
                      on a fresh line, so a line torn by a crash never swallows the next record. A line that is
                      not a JSON object with a string "kind" and a numeric "step" is skipped (is_record).
      status.json     {"state": "running" | "finished" | "stopped" | "failed", "pid", "pid_start", "host", "step",
                       "epoch", "message", "updated", "epochs", "steps_per_epoch", "total_steps", "device"}
                      ("device": what the trainer resolved, e.g. "cpu" or "cuda:0 — NVIDIA H200, 140 GiB")
                      written atomically once every input is checked and training starts, at every metrics record
                      and at the end (a refused command leaves the previous run's status as it was);
                      "updated" is Unix time. "running" with a pid that no longer exists means the process died
                      (kill -9, power loss): last.pt is still the last good checkpoint. "failed" messages name the
                      cause, e.g. "non-finite loss at step 812 (term rec)".
                      "pid_start" is the process' start time (Linux clock ticks since boot, /proc/<pid>/stat
                      field 22): a pid reused by another process does not pass for the run.
      lock            held (fcntl.flock, exclusive) by the one trainer that writes this directory, for the whole run;
                      the kernel releases it when that process dies, however it dies. Taking it is the one atomic
                      check-and-claim of a run name: core.runs.launcher takes it before it starts a trainer and hands
                      it down (the child inherits the locked file, `inherit_claim`), so of two launches at once one
                      starts and the other is refused before anything says "started".
      STOP            created by anyone to ask the run to stop (removed when honoured): the trainer watches for it and
                      stops at once while it sets up or waits for data, else after the current step
      samples/epoch_0001.png   at each evaluation: validation images (top row) over their reconstructions
      last.pt, best.pt         checkpoints (core.model.checkpoint format), written atomically: last.pt at every epoch
                               end, on stop and every TrainConfig.checkpoint_every steps; best.pt after an
                               evaluation marked "best" (highest val accuracy; unsupervised: lowest rec)
      snapshots/step_00000050.pt   the model right after that optimizer step: a weights-only checkpoint (same format,
                               no optimizer or RNG state, metrics {"wall_time"}), written atomically by rank 0 at the
                               steps of core.training.snapshot_steps (1, 2, 5, 10, 20, 50, ... and the last step; at
                               most 30) unless TrainConfig.snapshots is off. The step has at least 8 digits. On
                               resume, snapshots after last.pt's step are void (a crash came after them) and are
                               removed before training goes on, so they are written again from the same weights; a
                               fresh start removes any an earlier attempt left.
      .<file>.<random>.tmp     an atomic write in progress; one left by a kill mid-write is removed when the next
                               trainer claims the directory

The snapshots/ names live in core.training.snapshots and the process checks behind "pid" and "pid_start" in
core.training.processes; this module re-exports them, so `rundir.<name>` stays the one way in to the format.
"""
from __future__ import annotations

import fcntl
import errno
import io
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

import torch

from core.model import atomic_write_bytes
from core.training.processes import pid_alive, process_start_time
from core.training.snapshots import SNAPSHOTS_DIR, list_snapshots, remove_snapshots_after, snapshot_path

__all__ = [
    "open_no_follow", "check_no_links", "LINKS_REFUSED",
    "CONFIG_FILE", "METRICS_FILE", "STATUS_FILE", "STOP_FILE", "LAST_CHECKPOINT", "BEST_CHECKPOINT", "SAMPLES_DIR",
    "LOCK_FILE", "STATES", "RunDirError", "RunBusy",
    "write_config", "read_config", "append_metrics", "is_record", "read_metrics", "write_status", "read_status",
    "load_status", "process_start_time", "pid_alive", "is_live", "check_not_running", "Claim", "claim",
    "inherit_claim", "remove_partial_writes", "request_stop", "stop_requested", "clear_stop",
    "write_samples", "list_samples", "SNAPSHOTS_DIR", "snapshot_path", "list_snapshots", "remove_snapshots_after",
]

CONFIG_FILE = "config.json"
LOCK_FILE = "lock"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"
STOP_FILE = "STOP"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
SAMPLES_DIR = "samples"
STATES = ("running", "finished", "stopped", "failed")


class RunDirError(Exception):
    """A run directory that cannot be used as asked; the message is one line saying why."""


class RunBusy(RunDirError):
    """Another process holds the run directory's lock (a trainer, or a launch starting one)."""


def _write_json(path: Path, values: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(values, indent=2) + "\n").encode())


def write_config(run_dir: str | os.PathLike, *, model: dict, train: dict, data: dict) -> None:
    _write_json(Path(run_dir) / CONFIG_FILE, {"model": model, "train": train, "data": data})


def read_config(run_dir: str | os.PathLike) -> dict[str, dict]:
    """{'model': ..., 'train': ..., 'data': ...} as plain dicts; RunDirError when the file lacks one of them."""
    path = Path(run_dir) / CONFIG_FILE
    config = json.loads(path.read_text())
    for key in ("model", "train", "data"):
        if not isinstance(config, dict) or not isinstance(config.get(key), dict):
            raise RunDirError(f"{path} is not a run config: it has no {key!r} section")
    return config


def append_metrics(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record (it must carry "kind" and "step") as one whole line."""
    record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
    line = json.dumps(record, allow_nan=False) + "\n"  # strict JSON: non-finite numbers become null
    with open_no_follow(Path(run_dir) / METRICS_FILE) as f:  # appends go to the end, whatever the position
        if _ends_torn(f):
            line = "\n" + line  # end the torn line a crash left, so this record is not glued onto it
        f.write(line.encode())
        f.flush()


def open_no_follow(path: Path) -> IO[bytes]:
    """`path` opened to append and read ("a+b"), created if missing, never through a symbolic link: a link there
    (to a file outside the run folder) is refused with RunDirError instead of being written through."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunDirError(f"{path} is a symbolic link; a run folder's files are never written through one") from None
        raise
    return os.fdopen(fd, "a+b")


LINKS_REFUSED = ("metrics.jsonl", "status.json", "config.json", "last.pt", "best.pt", "samples", "snapshots", "lock",
                 "STOP", "train.log", "launch.json")  # every name the trainer or the app writes in a run folder


def check_no_links(run_dir: str | os.PathLike) -> None:
    """RunDirError when an entry the trainer or the app writes is a symbolic link (writing through it would change a
    file outside the run folder); nothing is written before this check."""
    for name in LINKS_REFUSED:
        path = Path(run_dir) / name
        if path.is_symlink():
            raise RunDirError(f"{path} is a symbolic link (to {os.readlink(path)}); a run folder's files are never "
                              "written through one: remove it, or choose another --run")


def _ends_torn(f: IO[bytes]) -> bool:
    """Whether the file's last byte is something other than a newline (a write cut short)."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return False
    f.seek(size - 1)
    return f.read(1) != b"\n"


def is_record(value: Any) -> bool:
    """Whether a parsed metrics line is a record: a JSON object with a string "kind" and a numeric "step"."""
    return (type(value) is dict and type(value.get("kind")) is str
            and type(value.get("step")) in (int, float))  # bool is no step


def read_metrics(run_dir: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """Every valid record in order ("resume" lines applied and dropped), optionally only those of one kind."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_bytes().split(b"\n")[:-1]:  # the part after the last newline is still being written
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # a torn line from a crash mid-write, or bytes that are not UTF-8
            continue
        if not is_record(record):
            continue  # valid JSON, but not a record
        if record["kind"] == "resume":
            records = [r for r in records if r.get("step", 0) <= record["step"]]
        else:
            records.append(record)
    return [r for r in records if kind is None or r.get("kind") == kind]


def write_status(run_dir: str | os.PathLike, state: str, *, step: int, epoch: int, message: str = "",
                 **extra: Any) -> None:
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    status = {"state": state, "pid": os.getpid(), "pid_start": process_start_time(os.getpid()),
              "host": socket.gethostname(), "step": int(step), "epoch": int(epoch), "message": message,
              "updated": time.time(), **extra}
    _write_json(Path(run_dir) / STATUS_FILE, status)


_STATUS_TYPES = {"state": (str,), "pid": (int,), "pid_start": (int,), "host": (str,), "step": (int,),
                 "epoch": (int,), "message": (str,), "updated": (int, float), "epochs": (int,),
                 "steps_per_epoch": (int,), "total_steps": (int,), "device": (str,), "test": (dict,)}


def load_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The status dict, None when the run has none yet; RunDirError (one line) when status.json is not a status:
    not a JSON object, or a known field of the wrong type (null is allowed for the optional ones)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        status = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{STATUS_FILE} cannot be read: {exc}") from None
    if not isinstance(status, dict):
        raise RunDirError(f"{STATUS_FILE} holds a JSON {type(status).__name__}, not an object")
    for name, types in _STATUS_TYPES.items():
        value = status.get(name)
        if value is not None and (type(value) not in types):
            raise RunDirError(f"{STATUS_FILE}: {name} is {value!r}, not a {' or '.join(t.__name__ for t in types)}")
    return status


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The status dict, or None when the run has none (not started) or it is not a valid status."""
    try:
        return load_status(run_dir)
    except RunDirError:
        return None


def is_live(status: dict[str, Any] | None) -> bool:
    """Whether `status` says running and its process still exists (on this host; another host counts as live)."""
    if not status or status.get("state") != "running":
        return False
    if status.get("host") != socket.gethostname():
        return True
    return pid_alive(status.get("pid"), status.get("pid_start"))


def check_not_running(run_dir: str | os.PathLike) -> None:
    status = read_status(run_dir)
    if is_live(status):
        raise RunDirError(f"{run_dir} is in use by a running training process (pid {status['pid']}); "
                          f"stop it first (create {Path(run_dir) / STOP_FILE}) or choose another --run")


class Claim:
    """This process' exclusive hold on a run directory (see `claim`); `release()` ends it."""

    def __init__(self, lock: IO[bytes]):
        self._lock = lock

    def fileno(self) -> int:
        """The locked file's descriptor, for a child process to inherit the claim (`inherit_claim`)."""
        return self._lock.fileno()

    def release(self) -> None:
        self._lock.close()  # the flock goes with the last descriptor of the locked file (a child may keep one)


def claim(run_dir: str | os.PathLike) -> Claim:
    """Make `run_dir` this process' own: take its lock file's exclusive flock (the kernel drops it when the process
    dies), refuse a directory another process holds (RunBusy) or a live run on another host holds (RunDirError),
    then remove the temporary files of atomic writes a killed trainer left behind. Hold the Claim for the run's
    whole life."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_no_links(run_dir)
    lock = open_no_follow(run_dir / LOCK_FILE)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        status = read_status(run_dir) or {}
        raise RunBusy(f"{run_dir} is in use by a running training process (pid {status.get('pid', '?')}); "
                      f"stop it first (create {run_dir / STOP_FILE}) or choose another --run") from None
    try:
        check_not_running(run_dir)  # a trainer on another host (a shared file system may not pass flocks on)
    except BaseException:
        lock.close()
        raise
    remove_partial_writes(run_dir)
    return Claim(lock)


def inherit_claim(run_dir: str | os.PathLike, fd: int) -> Claim:
    """The claim on `run_dir` that the process which started this one took and passed down as descriptor `fd` (the
    locked file itself, shared with it: the flock is this process' too). RunDirError when `fd` is not `run_dir`'s
    lock file, RunBusy when the lock is held by another open of it."""
    lock_path = Path(run_dir) / LOCK_FILE
    try:
        held, expected = os.fstat(fd), os.stat(lock_path, follow_symlinks=False)
    except OSError as exc:
        raise RunDirError(f"the claim passed down as descriptor {fd} cannot be checked: {exc.strerror}") from None
    if (held.st_dev, held.st_ino) != (expected.st_dev, expected.st_ino):
        raise RunDirError(f"descriptor {fd} is not {lock_path}: no claim was passed down")
    lock = os.fdopen(fd, "a+b")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already (a no-op); free again: taken now
    except BlockingIOError:
        lock.close()
        raise RunBusy(f"{Path(run_dir)} is in use by another training process; the claim passed down was lost") from None
    return Claim(lock)


def remove_partial_writes(run_dir: str | os.PathLike) -> None:
    """Partial files of atomic writes (core.model.atomic_write_bytes: .<name>.<random>.tmp) that a kill or a stop
    mid-write left behind. Call it holding the run's claim: only its trainer writes these names, so none is in
    progress."""
    run_dir = Path(run_dir)
    names = (CONFIG_FILE, STATUS_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT)
    stale = [*(p for name in names for p in run_dir.glob(f".{name}.*.tmp")),
             *(run_dir / SAMPLES_DIR).glob(".epoch_*.png.*.tmp"), *(run_dir / SNAPSHOTS_DIR).glob(".step_*.pt.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)


def request_stop(run_dir: str | os.PathLike) -> None:
    open_no_follow(Path(run_dir) / STOP_FILE).close()


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
    if (Path(run_dir) / SAMPLES_DIR).is_symlink():
        raise RunDirError(f"{Path(run_dir) / SAMPLES_DIR} is a symbolic link; sample pictures are never written through one")
    path = Path(run_dir) / SAMPLES_DIR / f"epoch_{epoch:04d}.png"
    atomic_write_bytes(path, buffer.getvalue())
    return path


def list_samples(run_dir: str | os.PathLike) -> list[Path]:
    """Sample PNGs, oldest epoch first."""
    return sorted((Path(run_dir) / SAMPLES_DIR).glob("epoch_*.png"))
