"""The Runs page's refresh tick on CPU: `python -m bench.monitor [--lines N] [--new 100] [--repeat R]`.

A run directory with N metric lines (step records plus an eval every 1,000 steps) is read the way the Runs page
does on each tick: find the runs, read their status, read the metrics (a fresh MetricsReader = the full load;
the same reader after `--new` more lines = the incremental tick), build the decimated curves and the plotly
figure JSON that st.plotly_chart sends. Baseline in the same run: a naive tick that re-reads the whole file
with core.training.rundir.read_metrics and builds the columns from the records. Prints JSON (milliseconds, median of R).
Targets: full load <= 1 s, incremental tick <= 100 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

TARGETS_MS = {"full_load": 1000.0, "incremental_tick": 100.0}
MAX_POINTS = 2000  # as app/views/runs.py


def record_lines(start: int, count: int, rng: random.Random) -> str:
    lines = []
    for step in range(start, start + count):
        loss = 2.5 / (1 + step / 500)
        lines.append(json.dumps({
            "kind": "step", "step": step, "epoch": step // 1000, "total": loss + rng.random() * 0.1,
            "nll": loss * 0.8, "rec": 0.2 / (1 + step / 300), "mid": 0.3 / (1 + step / 400), "mid_0": 0.2, "mid_1": 0.1,
            "accuracy": min(1.0, step / 50_000), "lr": 1e-3, "images_per_s": rng.uniform(8000, 9000),
            "wall_time": step * 0.01, "time": 1.7e9 + step * 0.01}))
        if step % 1000 == 0:
            lines.append(json.dumps({"kind": "eval", "step": step, "epoch": step // 1000, "total": loss, "nll": loss,
                                     "rec": 0.1, "mid": 0.2, "mid_0": 0.1, "mid_1": 0.1, "accuracy": 0.9,
                                     "best": True, "wall_time": step * 0.01, "time": 1.7e9}))
    return "\n".join(lines) + "\n"


def make_run(root: Path, lines: int) -> Path:
    from core.training import rundir

    run_dir = root / "big"
    run_dir.mkdir(parents=True)
    rundir.write_config(run_dir, model={}, train={}, data={})
    rundir.write_status(run_dir, "running", step=lines, epoch=lines // 1000, total_steps=10 * lines)
    steps = round(lines * 1000 / 1001)  # one eval line per 1,000 step lines
    (run_dir / rundir.METRICS_FILE).write_text(record_lines(1, steps, random.Random(0)))
    return run_dir


def tick(root: Path, readers: dict, *, figure: bool = True) -> dict[str, float]:
    """What one refresh of the Runs page computes; returns the milliseconds of each part."""
    from app.curves import curves_figure
    from core.runs import MetricsReader, curves, discover_runs, summarize

    times = {}
    start = time.perf_counter()
    found = {path.name: summarize(path) for path in discover_runs(root)}
    times["status"] = time.perf_counter() - start
    start = time.perf_counter()
    for name, summary in found.items():
        readers.setdefault(name, MetricsReader(summary.path)).update()
    times["read"] = time.perf_counter() - start
    start = time.perf_counter()
    series = {name: curves(reader, MAX_POINTS) for name, reader in readers.items()}
    times["curves"] = time.perf_counter() - start
    if figure:
        start = time.perf_counter()
        curves_figure(series).to_json()
        times["figure"] = time.perf_counter() - start
    times["total"] = sum(times.values())
    return {k: v * 1000 for k, v in times.items()}


def naive_tick(root: Path) -> dict[str, float]:
    """The baseline: re-read and re-parse the whole file every tick, then build the columns."""
    import numpy as np

    from core.training import rundir
    from core.runs import decimate, discover_runs

    start = time.perf_counter()
    for run_dir in discover_runs(root):
        records = rundir.read_metrics(run_dir)
        for kind in ("step", "eval"):
            rows = [r for r in records if r["kind"] == kind]
            steps = np.array([r["step"] for r in rows], dtype=float)
            for name in ("total", "nll", "rec", "mid", "mid_0", "mid_1", "accuracy", "images_per_s", "lr"):
                values = np.array([r.get(name) for r in rows], dtype=float)
                decimate(steps, values, MAX_POINTS)
    return {"total": (time.perf_counter() - start) * 1000}


def median(samples: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(s[key] for s in samples), 2) for key in samples[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=100, help="lines appended before each incremental tick")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("SWWAE_APP_THREADS", "1")))  # as the app does
    from core.training import rundir

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = make_run(root, args.lines)
        metrics = run_dir / rundir.METRICS_FILE
        tick(root, {})  # warm-up: imports, page cache
        full = [tick(root, {}) for _ in range(args.repeat)]  # a fresh reader each time: the first tick of a page
        readers: dict = {}
        tick(root, readers)
        rng = random.Random(1)
        incremental = []
        next_step = args.lines + 1
        for _ in range(args.repeat):
            with open(metrics, "a") as f:
                f.write(record_lines(next_step, args.new, rng))
            next_step += args.new
            incremental.append(tick(root, readers))
        naive = [naive_tick(root) for _ in range(args.repeat)]
        report = {
            "device": "cpu", "metric_lines": sum(1 for _ in open(metrics)), "file_mb": round(metrics.stat().st_size / 2**20, 1),
            "new_lines_per_tick": args.new, "max_points_per_line": MAX_POINTS,
            "full_load_ms": median(full), "incremental_tick_ms": median(incremental),
            "naive_full_reread_tick_ms": median(naive)["total"],
            "records_held": readers["big"].count("step") + readers["big"].count("eval"),
            "targets_ms": TARGETS_MS,
        }
    report["speedup_incremental_vs_naive"] = round(report["naive_full_reread_tick_ms"]
                                                   / report["incremental_tick_ms"]["total"], 1)
    report["meets_targets"] = {"full_load": report["full_load_ms"]["total"] <= TARGETS_MS["full_load"],
                               "incremental_tick": report["incremental_tick_ms"]["total"] <= TARGETS_MS["incremental_tick"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
