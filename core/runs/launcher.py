"""Starting, stopping and resuming training processes for the dashboard (or a notebook).

A run is always a separate, detached process, `python -m core.train --run DIR ...` in its own session, with its
output in DIR/train.log: closing the browser tab or restarting the Streamlit server does not stop it, and it
is found again from DIR/status.json (core.training.rundir) and DIR/launch.json (written here: pid, pid_start, host, command,
started; pid_start is rundir.process_start_time, so a reused pid does not pass for the process).

    configs = make_configs(data={"dataset": "mnist5k"}, train={"epochs": 2}, model={"channels": (16, 32)})
    launched = launch(runs_root() / "demo", configs)     # refuses a busy run directory (RunDirError)
    stop(run_dir)                                          # STOP file (core.training.rundir.request_stop)
    resume(run_dir, epochs=20)                             # relaunch with --resume

`launch` claims the run folder itself (rundir.claim: one atomic flock) before it starts the process, and hands the
claim down (the child inherits the locked file, `--claim-fd`): of two launches of one name at the same moment (two
sessions pressing Start), one starts and the other is refused before it reports anything, and no process is
started only to be refused.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from core.training import rundir
from core.model import atomic_write_bytes
from core.data import DataConfig
from core.model import ModelConfig
from core.runs.monitor import CHILDREN, LAUNCH_FILE, LOG_FILE, summarize
from core.training import TrainConfig, check_configs, default_model_config

__all__ = ["Configs", "Launched", "ARCHITECTURES", "make_configs", "parse_channels", "check_run_name", "default_run_name",
           "train_command", "launch", "resume", "stop"]

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURES = {  # name -> channels per stage (None: the dataset's default); kernels 3, pools 2 at every stage
    "default": None,
    "small (16, 32, 64)": (16, 32, 64),
    "tiny (4, 8)": (4, 8),
}
DEFAULT_KERNEL, DEFAULT_POOL = 3, 2
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_CHILDREN = CHILDREN  # the registry of processes started here lives in core.runs.monitor, which reaps them


@dataclass(frozen=True)
class Configs:
    model: ModelConfig
    train: TrainConfig
    data: DataConfig


@dataclass(frozen=True)
class Launched:
    pid: int
    command: list[str]
    log: Path


def parse_channels(text: str) -> tuple[int, ...]:
    """'32 64 128' or '32, 64, 128' -> (32, 64, 128); ValueError with a one-line reason otherwise."""
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"channels must be positive whole numbers, one per stage (e.g. 32 64 128), got {text!r}")
    return tuple(int(p) for p in parts)


def make_configs(*, data: dict[str, Any], train: dict[str, Any], model: dict[str, Any]) -> Configs:
    """Validated configs from options (field name -> value); the model starts from the dataset's default, and
    `channels` alone sets the stage count (3x3 kernels, 2x2 pools). Raises ValueError with a one-line reason."""
    try:
        data_config = DataConfig(**data)
        model = dict(model)
        if model.get("channels") is not None:
            stages = len(model["channels"])
            model.setdefault("kernel_sizes", (DEFAULT_KERNEL,) * stages)
            model.setdefault("pool_sizes", (DEFAULT_POOL,) * stages)
        model_config = default_model_config(data_config.dataset, **{k: v for k, v in model.items() if v is not None})
        train_config = TrainConfig(**train)
    except TypeError as exc:  # an option that is no config field
        raise ValueError(str(exc).splitlines()[0]) from None
    check_configs(model_config, train_config, data_config)  # e.g. cuda asked for where there is none
    return Configs(model_config, train_config, data_config)


def default_run_name(dataset: str) -> str:
    """`<dataset>-<date>-<time>`, with anything outside [A-Za-z0-9._-] in the dataset (folder paths) made '-'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset).strip("-._")[:80] or "run"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_name(name: str) -> str:
    name = name.strip()
    if not _RUN_NAME.fullmatch(name):
        raise ValueError(f"run name {name!r}: use letters, digits, '.', '_' and '-' (starting with a letter or "
                         "digit, at most 100 characters)")
    return name


def _flags(config: Any, reference: Any) -> list[str]:
    """--field value for each field of `config` that differs from `reference` (a CLI accepts them all)."""
    out: list[str] = []
    for f in fields(config):
        value = getattr(config, f.name)
        if value == getattr(reference, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, tuple):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def train_command(run_dir: str | os.PathLike, configs: Configs | None = None, *, resume: bool = False,
                  **train_overrides: Any) -> list[str]:
    """The `python -m core.train` command line of a run: options that differ from the defaults, or --resume
    plus the training options to change (e.g. epochs=20)."""
    command = [sys.executable, "-m", "core.train", "--run", str(Path(run_dir).resolve()), "--quiet"]
    if resume:
        overrides = [f for f in fields(TrainConfig) if f.name in train_overrides]
        if len(overrides) != len(train_overrides):
            raise ValueError(f"not training options: {sorted(set(train_overrides) - {f.name for f in overrides})}")
        command.append("--resume")
        for f in overrides:
            command += ["--" + f.name.replace("_", "-"), str(train_overrides[f.name])]
        return command
    assert configs is not None, "a new run needs its configs"
    return (command + _flags(configs.data, DataConfig()) + _flags(configs.train, TrainConfig())
            + _flags(configs.model, default_model_config(configs.data.dataset)))


def _check_free(run_dir: Path, *, resume: bool) -> None:
    rundir.check_no_links(run_dir)
    summary = summarize(run_dir)
    if (run_dir.exists() and summary.active) and (summary.status or (run_dir / LAUNCH_FILE).exists()):
        raise rundir.RunDirError(f"run {run_dir.name} is busy: {summary.state} (pid {summary.pid}); stop it first "
                                 "or choose another name")
    if resume and not (run_dir / rundir.LAST_CHECKPOINT).is_file():
        raise rundir.RunDirError(f"nothing to resume: run {run_dir.name} has no {rundir.LAST_CHECKPOINT} yet")
    if not resume and (run_dir / rundir.LAST_CHECKPOINT).exists():  # metrics alone: an attempt that died before its
        raise rundir.RunDirError(f"run {run_dir.name} already exists; resume it or choose another name")  # checkpoint


def launch(run_dir: str | os.PathLike, configs: Configs | None = None, *, resume: bool = False,
           **train_overrides: Any) -> Launched:
    """Start `python -m core.train` for `run_dir` as a detached process (own session, output in train.log), holding
    the run's claim from before the start (see the module). Raises RunDirError (one line) when the directory is
    busy (another launch or trainer holds it), already holds a run (new) or holds none (resume)."""
    run_dir = Path(run_dir).resolve()
    _check_free(run_dir, resume=resume)  # read only: a refused launch creates nothing
    command = train_command(run_dir, configs, resume=resume, **train_overrides)
    claim = _claim(run_dir)
    try:
        _check_free(run_dir, resume=resume)  # again, now that no other launch or trainer can start here
        rundir.clear_stop(run_dir)
        started = time.time()  # before the process can write its first status
        log_path = run_dir / LOG_FILE
        with rundir.open_no_follow(log_path) as log:
            log.write(f"\n$ {' '.join(command)}  # {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            process = subprocess.Popen([*command, "--claim-fd", str(claim.fileno())], cwd=ROOT,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                       pass_fds=(claim.fileno(),))
        CHILDREN[process.pid] = process  # polled by monitor.reap, so it never lingers as a zombie
        launch_record = {"pid": process.pid, "pid_start": rundir.process_start_time(process.pid),
                         "host": socket.gethostname(), "command": command, "started": started}
        atomic_write_bytes(run_dir / LAUNCH_FILE, (json.dumps(launch_record, indent=2) + "\n").encode())
    finally:
        claim.release()  # the child holds the lock from here, through its inherited descriptor
    return Launched(process.pid, command, log_path)


def _claim(run_dir: Path) -> rundir.Claim:
    """The run folder's claim (rundir.claim), refused in the launcher's words when another process holds it."""
    try:
        return rundir.claim(run_dir)
    except rundir.RunBusy:
        raise rundir.RunBusy(f"run {run_dir.name} is busy: another launch or training process holds it; stop it "
                             "first or choose another name") from None


def resume(run_dir: str | os.PathLike, **train_overrides: Any) -> Launched:
    """Continue a stopped, finished, failed or stale run from its last.pt (e.g. `resume(d, epochs=20)`)."""
    return launch(run_dir, resume=True, **train_overrides)


def stop(run_dir: str | os.PathLike) -> None:
    """Ask a run to stop (STOP file): at once while it sets up (loading data) or waits for a batch, else after its
    current step. A process that has not reported yet (still importing, or one that would clear the STOP file when
    it claims the folder) also gets SIGTERM. Raises RunDirError when the run is not active."""
    run_dir = Path(run_dir)
    summary = summarize(run_dir)
    if not summary.active:
        raise rundir.RunDirError(f"run {run_dir.name} is not running ({summary.state})")
    rundir.request_stop(run_dir)
    if summary.state == "starting" and summary.pid and summary.host == socket.gethostname():
        try:
            os.kill(int(summary.pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
