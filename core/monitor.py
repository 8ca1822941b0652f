"""Watching run directories while they train: incremental metrics reading, run state, curves for plotting.

The dashboard's Runs page calls this every refresh tick, so each tick must cost what is *new*, not what is
there: `MetricsReader` keeps a byte offset into `metrics.jsonl` and parses only the bytes appended since the
last tick, into numpy columns per record kind. The format is core.rundir's; this module only reads it.

    reader = MetricsReader(run_dir)          # one per run, kept between ticks (e.g. in st.session_state)
    reader.update()                          # -> number of new records; reads only the new bytes
    reader.series("step", "total")           # (steps, values) numpy arrays
    summary = summarize(run_dir)             # state incl. 'stale' (status says running, process gone)

Reading rules (the same as rundir.read_metrics, which tests hold this reader to): the part after the last newline
is being written and is left for the next tick; a line that is not a record (rundir.is_record) is skipped and
counted in `malformed`; a {"kind": "resume", "step": s} line voids the earlier records with a step
larger than s.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
import socket
import subprocess
import warnings
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import numpy as np

try:
    import orjson
except ImportError:  # optional: the standard library reads the same files, about 3x slower
    orjson = None

from core import rundir

__all__ = ["RUNS_ENV", "runs_root", "MetricsReader", "RunSummary", "ACTIVE_STATES", "summarize", "discover_runs",
           "pid_alive", "decimate", "curve_metrics", "curves", "LAUNCH_FILE", "LOG_FILE", "UNREADABLE", "load_launch",
           "read_launch", "last_log_error", "plain", "CHILDREN", "reap"]

RUNS_ENV = "SWWAE_RUNS_DIR"  # where the dashboard looks for (and starts) runs; default <repo>/runs
ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = "launch.json"  # written by core.launch when the dashboard starts a process:
#                               {pid, pid_start, host, command, started} (pid_start: rundir.process_start_time)
LOG_FILE = "train.log"  # that process's stdout and stderr
ACTIVE_STATES = ("starting", "running")  # states whose numbers can still change
UNREADABLE = "unreadable"  # the state of a run folder whose status.json or launch.json is not what its format says
_INITIAL_CAPACITY = 1024


def runs_root() -> Path:
    """The runs folder: $SWWAE_RUNS_DIR, else runs/ in the repository (read on every call, so tests can set it)."""
    return Path(os.environ.get(RUNS_ENV) or ROOT / "runs").resolve()


# ---- incremental metrics -------------------------------------------------------------------------------------

class _Columns:
    """Float64 columns that grow by doubling; None/missing/non-numeric values become NaN."""

    def __init__(self):
        self.length = 0
        self.data: dict[str, np.ndarray] = {}

    def _reserve(self, extra: int) -> None:
        needed = self.length + extra
        for name, values in self.data.items():
            if len(values) < needed:
                grown = np.full(max(needed, 2 * len(values), _INITIAL_CAPACITY), np.nan)
                grown[:self.length] = values[:self.length]
                self.data[name] = grown

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        names = [name for name in dict.fromkeys(chain.from_iterable(records)) if name != "kind"]  # keys, in C
        for name in [n for n in names if n not in self.data]:  # a new key: earlier rows hold NaN
            self.data[name] = np.full(max(len(next(iter(self.data.values()), ())), _INITIAL_CAPACITY), np.nan)
        self._reserve(len(records))
        stop = self.length + len(records)
        for name in names:
            column = list(map(dict.get, records, repeat(name)))  # record.get(name) for each record, in C
            try:
                self.data[name][self.length:stop] = np.array(column, dtype=np.float64)  # None -> NaN
            except (TypeError, ValueError):  # a string or a list somewhere: keep the numbers
                self.data[name][self.length:stop] = [_number(v) for v in column]
        self.length = stop

    def keep(self, mask: np.ndarray) -> None:
        """Keep the rows where `mask` (length == self.length) is true, in order."""
        kept = int(mask.sum())
        tail = len(mask) if mask.all() else int(np.argmin(mask))  # rows before the first dropped one stay put
        for values in self.data.values():
            if not mask[tail:].any():  # the usual case: the dropped rows are a tail
                values[tail:self.length] = np.nan
            else:
                values[:kept] = values[:self.length][mask]
                values[kept:self.length] = np.nan
        self.length = kept

    def get(self, name: str) -> np.ndarray:
        values = self.data.get(name)
        return values[:self.length] if values is not None else np.full(self.length, np.nan)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan  # bools count as 0/1


class MetricsReader:
    """Reads a run's metrics.jsonl incrementally: each `update()` parses only the bytes appended since the last."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / rundir.METRICS_FILE
        self.reset()

    def reset(self) -> None:
        self.offset = 0  # bytes consumed: everything up to and including the last complete line seen
        self.malformed = 0  # lines skipped because they were not a metrics record
        self.resumes = 0
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file read
        self.columns: dict[str, _Columns] = {}  # kind -> columns ("step", "eval", or anything else written)

    def update(self) -> int:
        """Read what was appended since the last call; returns the number of records added (resumes included).
        Starts over when the file was replaced or truncated."""
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                if self._identity not in (None, (stat.st_dev, stat.st_ino)) or stat.st_size < self.offset:
                    self.reset()
                self._identity = (stat.st_dev, stat.st_ino)
                if stat.st_size == self.offset:
                    return 0
                f.seek(self.offset)
                chunk = f.read(stat.st_size - self.offset)
        except FileNotFoundError:
            if self.offset:
                self.reset()
            return 0
        end = chunk.rfind(b"\n") + 1  # the part after the last newline is still being written
        if end == 0:
            return 0
        self.offset += end
        return self._ingest(chunk[:end].split(b"\n")[:-1])

    def _ingest(self, lines: list[bytes]) -> int:
        pending: dict[str, list[dict[str, Any]]] = {}
        added = 0
        for record in _parse_lines([line for line in lines if line.strip()]):
            if not rundir.is_record(record):
                self.malformed += 1
                continue
            added += 1
            if record["kind"] == "resume":
                self._flush(pending)
                self._void_after(record["step"])
                self.resumes += 1
            else:
                pending.setdefault(record["kind"], []).append(record)
        self._flush(pending)
        return added

    def _flush(self, pending: dict[str, list[dict[str, Any]]]) -> None:
        for kind, records in pending.items():
            self.columns.setdefault(kind, _Columns()).append(records)
        pending.clear()

    def _void_after(self, step: float) -> None:
        for columns in self.columns.values():
            keep = columns.get("step") <= step  # steps only grow between resumes, so usually a tail goes
            if not keep.all():
                columns.keep(keep)

    # ---- reading out ----
    def kinds(self) -> list[str]:
        return [kind for kind, columns in self.columns.items() if columns.length]

    def count(self, kind: str) -> int:
        columns = self.columns.get(kind)
        return columns.length if columns else 0

    def names(self, kind: str) -> list[str]:
        columns = self.columns.get(kind)
        return list(columns.data) if columns else []

    def series(self, kind: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one field over the records of one kind (views: copy before changing them)."""
        columns = self.columns.get(kind)
        if columns is None:
            return np.empty(0), np.empty(0)
        return columns.get("step"), columns.get(name)

    def last(self, kind: str) -> dict[str, float]:
        """The newest record of a kind as {name: value} (NaN for fields it lacks)."""
        columns = self.columns.get(kind)
        if not columns or not columns.length:
            return {}
        return {name: float(values[columns.length - 1]) for name, values in columns.data.items()}

    def records(self, kind: str | None = None) -> list[dict[str, float]]:
        """All records as dicts of floats, in step order per kind (for tests and export; not for every tick)."""
        out = []
        for k, columns in self.columns.items():
            if kind is not None and k != kind:
                continue
            for i in range(columns.length):
                out.append({"kind": k, **{n: float(v[i]) for n, v in columns.data.items()}})
        return out


def _parse_lines(lines: list[bytes]) -> list[Any]:
    """Each line's JSON value, None for a line that is not JSON. orjson (3x faster) when installed; lines it
    refuses go through the standard library too (which also reads NaN and huge integers)."""
    if orjson is not None:
        out = []
        for line in lines:
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                out.append(_parse_one(line))
        return out
    try:  # the standard library: all lines in one call is twice as fast as one call per line
        records = json.loads(b"[" + b",".join(lines) + b"]") if lines else []
        if len(records) == len(lines):  # (a torn line could swallow its neighbour)
            return records
    except ValueError:
        pass
    return [_parse_one(line) for line in lines]


def _parse_one(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:  # JSONDecodeError and invalid UTF-8
        return None


def decimate(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points points for a chart: the means of equal buckets of records (NaN ignored), the last
    record kept exactly so the newest value shows. Short series come back unchanged."""
    count = len(steps)
    if count <= max_points or max_points < 2:
        return steps, values
    bucket = math.ceil(count / (max_points - 1))
    whole = (count - 1) // bucket * bucket  # (count - 1) records in full buckets, the last on its own
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN bucket's mean is NaN, as wanted
        mean_steps = steps[:whole].reshape(-1, bucket).mean(axis=1)  # (K,)
        mean_values = np.nanmean(values[:whole].reshape(-1, bucket), axis=1)  # (K,)
    rest = slice(whole, count)
    tail_steps, tail_values = steps[rest], values[rest]
    return np.concatenate([mean_steps, tail_steps]), np.concatenate([mean_values, tail_values])


NOT_CURVES = ("step", "epoch", "wall_time", "time", "best")  # record fields that are no curve
_CURVE_ORDER = ("total", "nll", "rec", "mid")  # loss terms first, then mid_0.., then the rest
_CURVE_LAST = ("accuracy", "images_per_s", "lr")


def curve_metrics(reader: MetricsReader) -> list[str]:
    """The fields worth a chart, loss terms first: total, nll, rec, mid, mid_0, ..., others, accuracy, images/s, lr."""
    names = dict.fromkeys(n for kind in ("step", "eval") for n in reader.names(kind) if n not in NOT_CURVES)

    def rank(name: str) -> tuple:
        if name in _CURVE_ORDER:
            return (0, _CURVE_ORDER.index(name), 0)
        if name.startswith("mid_") and name[4:].isdigit():
            return (1, int(name[4:]), 0)
        return (3, _CURVE_LAST.index(name), 0) if name in _CURVE_LAST else (2, 0, name)
    return sorted(names, key=rank)


def curves(reader: MetricsReader, max_points: int = 2000) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{metric: {kind ('step' = training, 'eval' = validation): (steps, values)}} ready to plot: at most
    ~max_points per line (decimate), kinds without any value for a metric left out."""
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for name in curve_metrics(reader):
        for kind in ("step", "eval"):
            if name not in reader.names(kind):
                continue
            steps, values = reader.series(kind, name)
            if np.isnan(values).all():
                continue
            few_steps, few_values = decimate(steps, values, max_points)
            out.setdefault(name, {})[kind] = (few_steps.copy(), few_values.copy())  # the reader's buffers move on
    return out


# ---- run state -----------------------------------------------------------------------------------------------

CHILDREN: dict[int, subprocess.Popen] = {}  # training processes started from here (core.launch adds them)


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
    """launch.json, None when there is none; RunDirError (one line) when it is not what core.launch writes."""
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
            if rundir.stop_requested(path):  # stopped (core.launch.stop) before the trainer took over
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
