"""Watching run directories: where runs live, which processes this program started, each run's state (including
'stale': the status says running, the process is gone) and the folders that hold runs. The Runs page calls this
every refresh tick; the metrics themselves are read incrementally by core.runs.metrics. The format is
core.training.rundir's; this module only reads it.

    summary = summarize(run_dir)             # state, step, best evaluation, ...
    runs = discover_runs()                   # run folders under runs_root(), newest first
"""
from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.training import rundir

__all__ = ["RUNS_ENV", "runs_root", "RunSummary", "ACTIVE_STATES", "summarize", "discover_runs", "pid_alive",
           "LAUNCH_FILE", "LOG_FILE", "UNREADABLE", "load_launch", "read_launch", "last_log_error", "plain", "CHILDREN",
           "reap"]

RUNS_ENV = "SWWAE_RUNS_DIR"  # where the dashboard looks for (and starts) runs; default <repo>/runs
ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = "launch.json"  # written by core.runs.launcher when the dashboard starts a process:
#                               {pid, pid_start, host, command, started} (pid_start: rundir.process_start_time)
LOG_FILE = "train.log"  # that process's stdout and stderr
ACTIVE_STATES = ("starting", "running")  # states whose numbers can still change
UNREADABLE = "unreadable"  # the state of a run folder whose status.json or launch.json is not what its format says


def runs_root() -> Path:
    """The runs folder: $SWWAE_RUNS_DIR, else runs/ in the repository (read on every call, so tests can set it)."""
    return Path(os.environ.get(RUNS_ENV) or ROOT / "runs").resolve()


CHILDREN: dict[int, subprocess.Popen] = {}  # training processes started from here (core.runs.launcher adds them)


def reap() -> None:
    """Collect the exit status of finished CHILDREN (so their pids read as dead, not as zombies)."""
    for pid, process in list(CHILDREN.items()):
        if process.poll() is not None:
            del CHILDREN[pid]


def pid_alive(pid: Any, start: Any = None) -> bool:
    """rundir.pid_alive, after reaping this process's finished children (else they linger as zombies)."""
    reap()
    return rundir.pid_alive(pid, start)


_LAUNCH_TYPES = {"pid": (int,), "pid_start": (int, type(None)), "host": (str,), "started": (int, float)}


def load_launch(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """launch.json, None when there is none; RunDirError (one line) when it is not what core.runs.launcher writes."""
    try:
        launch = json.loads((Path(run_dir) / LAUNCH_FILE).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise rundir.RunDirError(f"{LAUNCH_FILE} cannot be read: {exc}") from None
    if not isinstance(launch, dict):
        raise rundir.RunDirError(f"{LAUNCH_FILE} holds a JSON {type(launch).__name__}, not an object")
    for name, types in _LAUNCH_TYPES.items():
        if type(launch.get(name)) not in types:
            raise rundir.RunDirError(f"{LAUNCH_FILE}: {name} is {launch.get(name)!r}, not a "
                                     f"{' or '.join(t.__name__ for t in types if t is not type(None))}")
    return launch


def read_launch(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """launch.json, or None when there is none or it is not valid."""
    try:
        return load_launch(run_dir)
    except rundir.RunDirError:
        return None


def last_log_error(run_dir: str | os.PathLike, max_bytes: int = 8192) -> str:
    """The reason a launched process gave up: its 'error: ...' line, else the last line of its log."""
    try:
        with open(Path(run_dir) / LOG_FILE, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - max_bytes))
            tail = f.read().decode(errors="replace")
    except OSError:
        return "no log"
    lines = [line.strip() for line in tail.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line.split(":")[0]]
    return (errors or lines or ["the process exited without output"])[-1]


@dataclass
class RunSummary:
    """What the Runs page shows about one run, from status.json (and launch.json for runs the app started)."""

    name: str
    path: Path
    state: str  # starting | running | finished | stopped | failed | stale | unreadable
    message: str = ""
    step: int = 0
    total_steps: int | None = None
    epoch: int = 0
    epochs: int | None = None
    pid: int | None = None
    host: str = ""
    updated: float | None = None
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def has_best(self) -> bool:
        return (self.path / rundir.BEST_CHECKPOINT).is_file()


def summarize(run_dir: str | os.PathLike) -> RunSummary:
    """The run's state. 'stale': status.json says running but its process (on this host) is gone; 'starting': a
    process was launched (or config.json written) and has not written its status yet; 'unreadable': status.json or
    launch.json is broken (the message says how), so this one run shows its error and the others are unaffected."""
    path = Path(run_dir)
    try:
        status = rundir.load_status(path) or {}
        launch = load_launch(path)
    except rundir.RunDirError as exc:
        return RunSummary(name=path.name, path=path, state=UNREADABLE, message=str(exc))
    summary = RunSummary(name=path.name, path=path, state="starting", status=status)
    if status:
        summary.message = str(status.get("message") or "")
        summary.step, summary.epoch = status.get("step") or 0, status.get("epoch") or 0
        summary.total_steps, summary.epochs = status.get("total_steps"), status.get("epochs")
        summary.pid, summary.host, summary.updated = status.get("pid"), str(status.get("host") or ""), status.get("updated")
    if launch and (not status or launch["started"] > (status.get("updated") or 0)):
        # launched after the last status: the new process has not reported yet (or died before it could)
        summary.pid, summary.host = launch["pid"], launch["host"]
        if launch["host"] == socket.gethostname() and not pid_alive(launch["pid"], launch.get("pid_start")):
            if rundir.stop_requested(path):  # stopped (core.runs.launcher.stop) before the trainer took over
                summary.state, summary.message = "stopped", "stopped before training started"
            else:
                summary.state, summary.message = "failed", f"exited before training started: {last_log_error(path)}"
        else:
            summary.message = "starting (loading data)"
        return summary
    if not status:
        summary.message = "no status yet"
        return summary
    state = status.get("state")
    summary.state = state if state in rundir.STATES or state in ACTIVE_STATES else "failed"
    if summary.active and status.get("host") == socket.gethostname() and not pid_alive(status.get("pid"),
                                                                                       status.get("pid_start")):
        summary.state = "stale"
        summary.message = f"process {status.get('pid')} is gone (killed or crashed); resume it from last.pt"
    return summary


_MARKDOWN_SYNTAX = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:$])")


def plain(text: Any) -> str:
    """Text from disk (a run folder's name, a status or log message) as markdown that shows it literally: HTML
    escaped, markdown syntax backslash-escaped, so no element, link, badge or formatting can come out of it."""
    return _MARKDOWN_SYNTAX.sub(r"\\\1", html.escape(str(text), quote=False))


def discover_runs(root: str | os.PathLike | None = None) -> list[Path]:
    """Run directories under `root` (default runs_root()): those with a config.json, status.json or launch.json,
    newest first (by their status' update time, else the folder's)."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if not path.is_dir():
            continue
        marks = [path / name for name in (rundir.STATUS_FILE, LAUNCH_FILE, rundir.CONFIG_FILE, rundir.METRICS_FILE)]
        times = []
        for mark in marks:
            try:  # files come and go (atomic replaces): never fail on a race
                times.append(mark.stat().st_mtime)
            except OSError:
                pass
        if times and any(m.name != rundir.METRICS_FILE for m in marks if m.exists()):
            found.append((max(times), path))
    return [path for _, path in sorted(found, key=lambda item: (-item[0], item[1].name))]
