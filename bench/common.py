"""Shared pieces of the results scripts: the official test sets, test error and MSE, result files."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from core.data import IDX_FILES, DataConfig, DeviceBatches, load_idx_split, load_split
from core.model import SWWAE
from core.training import TrainConfig, evaluate

RESULTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "results"
DEFAULT_TEST_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def load_mnist_test(test_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """The official MNIST test set: images (10000, 1, 28, 28) in [0, 1], labels (10000,)."""
    test_dir = Path(test_dir)
    paths = [next((p for p in (test_dir / f"{name}.gz", test_dir / name) if p.is_file()), None)
             for name in IDX_FILES["test"]]
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
