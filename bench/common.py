"""Shared pieces of the results scripts: the official test sets, test error and MSE, result files."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from core.data import IDX_FILES, DataConfig, DeviceBatches, idx_file, load_idx_split, load_split
from core.model import SWWAE
from core.training import TrainConfig, evaluate

RESULTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "results"
DEFAULT_TEST_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def load_mnist_test(test_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """The official MNIST test set: images (10000, 1, 28, 28) in [0, 1], labels (10000,)."""
    paths = [idx_file(test_dir, name) for name in IDX_FILES["test"]]
    if None in paths:
        raise SystemExit(f"MNIST test files not found in {test_dir} (t10k-images-idx3-ubyte[.gz], "
                         f"t10k-labels-idx1-ubyte[.gz]); pass --test-data DIR")
    images, labels = load_idx_split(*paths)  # (N, 28, 28) uint8, (N,)
    return images.float().div(255).unsqueeze(1), labels


def load_test(pool: str, test_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """The official test set of a pool: MNIST's from `test_dir` for mnist5k and mnist, else the dataset's own
    'test' split (core.data, found where the dataset is installed)."""
    if pool in ("mnist5k", "mnist"):
        return load_mnist_test(test_dir)
    try:
        return load_split(DataConfig(dataset=pool, download=False), "test")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def test_metrics(model: SWWAE, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> dict[str, float]:
    """Test error (%) and reconstruction MSE of `model` over a test set, by the trainer's own evaluation."""
    batches = DeviceBatches(images, labels, batch_size=batch_size, seed=0).in_order()
    metrics = evaluate(model, batches, config=TrainConfig(), device=torch.device("cpu"))
    return {"test_error": 100.0 * (1.0 - metrics["accuracy"]), "test_mse": metrics["rec"]}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def print_figures(figures: dict[str, Any], out: str | os.PathLike | None = None) -> str:
    """Print a benchmark's figures as JSON and, with `out`, save the same text there; returns the text."""
    text = json.dumps(figures, indent=2, default=float)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    return text


def stage_mean(rows: list, shift: int, stage: int, field: str) -> float:
    """The mean of a shift probe field at one shift and stage over its rows (the shift right and the shift down)."""
    mine = [getattr(r, field) for r in rows if r.shift == shift and r.stage == stage]
    return sum(mine) / len(mine) if mine else float("nan")


def invariance_summary(results: dict) -> list[str]:
    """bench.invariance's results as one table, a row per model: what ÷ input at a 1-pixel shift, and switches
    followed when the shift is each stage's stride, against chance (rows average the shift right and down)."""
    from core.analysis import ShiftStage

    lines = ["| model | what ÷ input at 1 px, stage 1 → last | switches followed when the shift = the stage's stride "
             "(chance) |", "|---|---|---|"]
    for name, model in results["models"].items():
        rows = [ShiftStage(**r) for r in model["rows"]]
        stages = sorted({r.stage for r in rows})
        ratios = (" → ".join(f"{stage_mean(rows, 1, s, 'what_per_input'):.2f}" for s in stages)
                  if 1 in results["shifts"] else "—")
        strides = {s: next(r.stride for r in rows if r.stage == s) for s in stages}
        followed = "; ".join(f"stage {s + 1} at {strides[s]} px: {stage_mean(rows, strides[s], s, 'where_followed'):.0%} "
                             f"({stage_mean(rows, strides[s], s, 'where_reference'):.0%})" for s in stages
                             if strides[s] in results["shifts"])
        lines.append(f"| {name} | {ratios} | {followed} |")
    return lines


def plot_error_vs_labels(summary: dict, path: Path, *, xlabel: str, ylabel: str,
                         references: dict | None = None) -> None:
    """Test error (mean ± std over seeds) against the labels N, a line per arm of each pool in `summary`
    ({pool: {N: {arm: {"mean", "std"}}}}), dotted `references` ({name: {N: (mean, std)}}) beside them; a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ns = sorted({int(n) for rows in summary.values() for n in rows})
    for pool, rows in summary.items():
        for arm, style in (("swwae", "-o"), ("supervised", "--s")):
            points = [(int(n), r[arm]["mean"], r[arm]["std"]) for n, r in rows.items() if arm in r]
            if points:
                ax.errorbar(*zip(*points), fmt=style, capsize=3, label=f"{arm} ({pool}, measured)")
    for name, values in (references or {}).items():
        ax.plot(list(values), [v[0] for v in values.values()], ":", marker="x", label=name)
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
