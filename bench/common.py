"""Shared pieces of the results scripts: the official MNIST test set, test error and MSE, result files."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data import DeviceBatches
from core.model import SWWAE
from core.training import TrainConfig, evaluate

RESULTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "results"
DEFAULT_TEST_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped), as the MNIST files are stored: big-endian header, then uint8 data."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist_test(test_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """The official MNIST test set: images (10000, 1, 28, 28) in [0, 1], labels (10000,)."""
    test_dir = Path(test_dir)
    paths = {kind: next((p for p in (test_dir / f"t10k-{kind}-ubyte.gz", test_dir / f"t10k-{kind}-ubyte")
                         if p.is_file()), None) for kind in ("images-idx3", "labels-idx1")}
    missing = [kind for kind, path in paths.items() if path is None]
    if missing:
        raise SystemExit(f"MNIST test files not found in {test_dir} (t10k-images-idx3-ubyte[.gz], "
                         f"t10k-labels-idx1-ubyte[.gz]); pass --test-data DIR")
    images = torch.from_numpy(_read_idx(paths["images-idx3"]).copy()).float().div_(255).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(paths["labels-idx1"]).astype(np.int64))
    return images, labels


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
