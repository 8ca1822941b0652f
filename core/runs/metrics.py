"""Reading a run's metrics.jsonl while it grows: `MetricsReader` keeps a byte offset and parses only the bytes
appended since the last call, into numpy columns per record kind; `curves` turns them into plottable series.

    reader = MetricsReader(run_dir)          # one per run, kept between ticks (e.g. in st.session_state)
    reader.update()                          # -> number of new records; reads only the new bytes
    reader.series("step", "total")           # (steps, values) numpy arrays

Reading rules (the same as rundir.read_metrics, which tests hold this reader to): the part after the last newline
is being written and is left for the next tick; a line that is not a record (rundir.is_record) is skipped and
counted in `malformed`; a {"kind": "resume", "step": s} line voids the earlier records with a step
larger than s. A line longer than MAX_RECORD_BYTES is skipped as it streams by (counted in `oversized` too), in
CHUNK_BYTES pieces: a 200 MB line costs one pass over its bytes, never 200 MB of memory, and is never read again.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from itertools import chain, repeat
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

try:
    import orjson
except ImportError:  # optional: the standard library reads the same files, about 3x slower
    orjson = None

from core.training import rundir

__all__ = ["MetricsReader", "decimate", "curve_metrics", "curves"]

_INITIAL_CAPACITY = 1024
MAX_RECORD_BYTES = 2**20  # a record is about 1 KB; a longer line is no record (skipped, never held whole)
CHUNK_BYTES = 8 * 2**20  # read at most this much at a time



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
        self.oversized = 0  # ... of them, lines longer than MAX_RECORD_BYTES
        self._skipping = False  # inside an oversized line, up to its newline
        self.resumes = 0
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file read
        self.columns: dict[str, _Columns] = {}  # kind -> columns ("step", "eval", or anything else written)

    def update(self) -> int:
        """Read what was appended since the last call; returns the number of records added (resumes included).
        Starts over when the file was replaced or truncated. Reads in CHUNK_BYTES pieces; a line longer than
        MAX_RECORD_BYTES is no record: it is skipped (counted in `malformed` and `oversized`) as it streams by,
        never held whole, and never read again."""
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                if self._identity not in (None, (stat.st_dev, stat.st_ino)) or stat.st_size < self.offset:
                    self.reset()
                self._identity = (stat.st_dev, stat.st_ino)
                return self._read_to(f, stat.st_size)
        except FileNotFoundError:
            if self.offset:
                self.reset()
            return 0

    def _read_to(self, f: BinaryIO, size: int) -> int:
        added = 0
        while self.offset < size:
            f.seek(self.offset)
            chunk = f.read(min(CHUNK_BYTES, size - self.offset))
            if not chunk:
                break
            if self._skipping:  # inside an oversized line: drop bytes up to its newline
                newline = chunk.find(b"\n")
                self.offset += len(chunk) if newline < 0 else newline + 1
                self._skipping = newline < 0
                continue
            end = chunk.rfind(b"\n") + 1  # the part after the last newline is still being written
            if end == 0:
                if len(chunk) <= MAX_RECORD_BYTES:
                    break  # an unfinished line: read it again, whole, when its newline arrives
                self._skip_oversized()
                self.offset += len(chunk)
                continue
            lines = chunk[:end].split(b"\n")[:-1]
            long_lines = sum(len(line) > MAX_RECORD_BYTES for line in lines)  # complete: nothing left to skip
            self.oversized, self.malformed = self.oversized + long_lines, self.malformed + long_lines
            self.offset += end
            added += self._ingest([line for line in lines if len(line) <= MAX_RECORD_BYTES])
        return added

    def _skip_oversized(self) -> None:
        self.oversized += 1
        self.malformed += 1
        self._skipping = True

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
