"""Where a dataset's official splits come from: IDX files for MNIST and Fashion-MNIST (core.data.idx, found in
torchvision's layout, a plain folder or the system's dataset packages), torchvision for CIFAR-10, SVHN and STL-10,
and an image folder for `folder:PATH` (listed by core.data.folders: each file once, in a bounded walk). Each returns
a Dataset of (image (C, H, W) float in [0, 1], label) whose `targets` are the labels; IDX and torchvision datasets
also expose their raw pixel array as `data`.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from core.data.folders import FolderError, list_folder
from core.data.idx import IDX_FILES, TORCHVISION_FOLDERS, find_idx, idx_search_dirs, load_idx_split

__all__ = ["DatasetUnavailable", "ArrayDataset", "official_split", "folder_dataset", "INSTALL_HINTS", "missing_files"]

INSTALL_HINTS = {  # how to get a dataset onto a machine without a network, where there is a way
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu)",
}
TORCHVISION_RGB = ("cifar10", "svhn", "stl10")


class DatasetUnavailable(ValueError):
    """A dataset whose files are missing (and could not be downloaded); the message says what to do."""


class ArrayDataset(Dataset):
    """Images held as one uint8 array (N, H, W) with labels (N,): MNIST-like IDX data, 47 MB for 60,000 images."""

    def __init__(self, data: torch.Tensor, targets: torch.Tensor):
        self.data, self.targets = data, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data[i][None].float().div_(255.0), int(self.targets[i])  # (1, H, W)


def official_split(name: str, which: str, *, data_dir: str, download: bool) -> Dataset:
    """The official 'train' or 'test' split of a named dataset (mnist, fashion-mnist, cifar10, svhn, stl10)."""
    if name in TORCHVISION_RGB:
        return _torchvision_split(name, which, data_dir=data_dir, download=download)
    found = find_idx(name, which, data_dir)
    if found is None and download:
        _download_idx(name, data_dir)
        found = find_idx(name, which, data_dir)
    if found is None:
        raise DatasetUnavailable(_missing_idx_message(name, which, data_dir, download))
    return ArrayDataset(*load_idx_split(*found))


def missing_files(name: str, data_dir: str) -> str | None:
    """Without reading or downloading anything: the one-line reason an IDX dataset (mnist, fashion-mnist) is not
    on this machine and how to get it, or None when both its splits are found (or it is not an IDX dataset)."""
    if name not in TORCHVISION_FOLDERS:
        return None
    for which in IDX_FILES:
        if find_idx(name, which, data_dir) is None:
            return _missing_idx_message(name, which, data_dir, download=False)
    return None


def _missing_idx_message(name: str, which: str, data_dir: str, download: bool) -> str:
    images, labels = IDX_FILES[which]
    where = ", ".join(str(d) for d in idx_search_dirs(name, data_dir))
    hint = INSTALL_HINTS.get(name, "put the four IDX files in one of those folders")
    tried = "; a download failed" if download else ""
    return (f"dataset {name!r} is not there: no {images}[.gz] with {labels}[.gz] in {where}{tried}; {hint}, "
            f"or download it on a connected machine, or use --dataset mnist5k (works offline)")


def _download_idx(name: str, data_dir: str) -> None:
    """torchvision's download into data_dir/<folder>/raw/; any failure (offline, blocked) leaves the files missing."""
    import torchvision.datasets as tvd

    maker = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}[name]
    for train in (True, False):
        try:
            maker(data_dir, train=train, download=True)
        except Exception:  # offline, blocked, partial download: all mean "not there"
            return


def _torchvision_split(name: str, which: str, *, data_dir: str, download: bool) -> Dataset:
    import torchvision.datasets as tvd
    from torchvision.transforms import ToTensor

    train = which == "train"
    makers = {
        "cifar10": lambda get: tvd.CIFAR10(data_dir, train=train, transform=ToTensor(), download=get),
        "svhn": lambda get: tvd.SVHN(data_dir, split="train" if train else "test", transform=ToTensor(), download=get),
        "stl10": lambda get: tvd.STL10(data_dir, split="train" if train else "test", transform=ToTensor(),
                                       download=get),
    }
    try:
        return makers[name](False)  # files present: never touch the network
    except (RuntimeError, OSError, ImportError) as exc:
        missing = exc
    if download:
        try:
            return makers[name](True)
        except Exception as exc:  # offline, blocked, partial download: all mean "not there"
            missing = exc
    where = {"cifar10": "cifar-10-batches-py/", "svhn": "train_32x32.mat and test_32x32.mat in it",
             "stl10": "stl10_binary/"}[name]
    reason = str(missing).strip().splitlines()[0] if str(missing).strip() else type(missing).__name__
    tried = "could not be downloaded" if download else "is not there (download is off)"
    raise DatasetUnavailable(
        f"dataset {name!r} {tried} ({reason}); put its files in {os.path.abspath(data_dir)} ({where}), "
        f"run once on a connected machine, or use --dataset mnist5k (works offline)"
    ) from None


class FolderDataset(Dataset):
    """An image folder's images as (image (3, H, W) float in [0, 1], class index), with `classes`, `samples` and
    `targets` as torchvision's ImageFolder has them, but listed by core.data.folders (loops end, each file once)."""

    def __init__(self, root: str):
        self.root = root
        self.classes, self.samples = list_folder(root)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        pixels = torch.from_numpy(np.array(_load_rgb(path), dtype=np.uint8))  # (H, W, 3)
        return pixels.permute(2, 0, 1).float().div_(255.0), label  # (3, H, W), as torchvision's ToTensor


def folder_dataset(path: str, *, val_fraction: float, seed: int) -> tuple[Dataset, torch.Tensor, torch.Tensor]:
    """An image folder (one sub-folder per class) with its (train rows, val rows): a seeded split. Each file is one
    row, so no image is in both."""
    if not Path(path).is_dir():
        raise DatasetUnavailable(f"image folder {path!r} does not exist")
    try:
        folder = FolderDataset(path)
    except (FolderError, OSError) as exc:
        raise DatasetUnavailable(f"image folder {path!r}: {str(exc).splitlines()[0]}") from None
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(seed))
    val_count = max(1, math.ceil(len(folder) * val_fraction))
    return folder, order[val_count:], order[:val_count]


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
