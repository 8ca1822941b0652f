"""IDX files (the format of MNIST and Fashion-MNIST), read and checked, and found where they are.

An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte, the only type these datasets use), the number
of dimensions, each dimension as a big-endian uint32, then the values. It may be gzipped (told by its first two
bytes, not by its name). `read_idx` checks all of it and the byte length; a file that is truncated, corrupt or not
IDX raises one `IdxError` line naming the file and what is wrong, never a short array.

Where a dataset's files are looked for (`find_idx`), in order:
1. `data_dir/<torchvision folder>/raw/` (torchvision's layout: `data/FashionMNIST/raw/`),
2. `data_dir` itself (a folder holding the IDX files, e.g. `--data-dir /usr/share/datasets/fashion-mnist`),
3. the system's folders: Debian's `dataset-fashion-mnist` package installs `/usr/share/datasets/fashion-mnist/`.
Each file may be `name` or `name.gz`. A split is found in the first folder that holds both its files.

A loaded split stays uint8 (60,000 x 28 x 28 is 47 MB) and is cached per process, keyed by the files' paths,
sizes and modification times, so the trainer, the app and the benchmarks read it once.
"""
from __future__ import annotations

import functools
import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

__all__ = ["IdxError", "IDX_FILES", "SYSTEM_DIRS", "TORCHVISION_FOLDERS", "read_idx", "find_idx", "idx_file", "load_idx_split",
           "idx_search_dirs"]

UNSIGNED_BYTE = 0x08
MAX_VALUES = 2**31  # a header asking for more than 2 G values is no dataset this program reads
IDX_FILES = {  # split -> (images file, labels file), as the official archives name them (without .gz)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
SYSTEM_DIRS = {  # Debian's dataset packages; the project's shared evaluation folder for the MNIST test set
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (Path("/usr/share/datasets/mnist"), Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"),
}


class IdxError(ValueError):
    """An IDX file that is not what its format says; the message names the file and the fault."""


def _open(path: Path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _read_exact(stream, count: int, path: Path, what: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise IdxError(f"{path}: truncated: {what} needs {count:,} bytes, the file has {len(data):,}")
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in an IDX file (gzipped or not) as uint8, shape from its header. IdxError when it is not one."""
    path = Path(path)
    try:
        with _open(path) as stream:
            header = _read_exact(stream, 4, path, "the header")
            if header[:2] != b"\x00\x00":
                raise IdxError(f"{path}: not an IDX file (magic number {header.hex()})")
            if header[2] != UNSIGNED_BYTE:
                raise IdxError(f"{path}: values of type 0x{header[2]:02x}, expected unsigned bytes (0x08)")
            ndim = header[3]
            if not 1 <= ndim <= 4:
                raise IdxError(f"{path}: {ndim} dimensions, expected 1 to 4")
            dims = tuple(int(d) for d in np.frombuffer(_read_exact(stream, 4 * ndim, path, "the dimensions"), ">u4"))
            count = math.prod(dims)
            if count > MAX_VALUES:
                raise IdxError(f"{path}: its header declares {count:,} values, more than this program reads")
            data = _read_exact(stream, count, path, f"{'x'.join(map(str, dims))} values")
            if stream.read(1):
                raise IdxError(f"{path}: more bytes than its header's {'x'.join(map(str, dims))} values")
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise IdxError(f"{path}: cannot be read ({str(exc).strip() or type(exc).__name__})") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def idx_search_dirs(dataset: str, data_dir: str | os.PathLike) -> list[Path]:
    """The folders looked in for `dataset`'s files, in order (see the module docstring)."""
    data_dir = Path(data_dir)
    return [data_dir / TORCHVISION_FOLDERS[dataset] / "raw", data_dir, *SYSTEM_DIRS.get(dataset, ())]


def idx_file(folder: str | os.PathLike, name: str) -> Path | None:
    """`folder/name`, else `folder/name.gz`, whichever is a file; None when neither is."""
    folder = Path(folder)
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx(dataset: str, split: str, data_dir: str | os.PathLike) -> tuple[Path, Path] | None:
    """(images file, labels file) of `split` ('train' | 'test') from the first folder holding both, else None."""
    for folder in idx_search_dirs(dataset, data_dir):
        found = [idx_file(folder, name) for name in IDX_FILES[split]]
        if all(found):
            return found[0], found[1]
    return None


def load_idx_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, H, W) uint8, labels (N,) int64) from an IDX pair, checked against each other; cached."""
    keys = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in (images_path, labels_path)]
    return _load_cached(*keys)


@functools.lru_cache(maxsize=4)
def _load_cached(images_key: tuple, labels_key: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    images_path, labels_path = Path(images_key[0]), Path(labels_key[0])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise IdxError(f"{images_path}: {images.ndim} dimensions, expected 3 (count, height, width)")
    if labels.ndim != 1:
        raise IdxError(f"{labels_path}: {labels.ndim} dimensions, expected 1 (count)")
    if len(images) != len(labels):
        raise IdxError(f"{labels_path}: {len(labels):,} labels for the {len(images):,} images of {images_path.name}")
    images = torch.from_numpy(images.copy())  # (N, H, W) uint8, writable and owned
    images.requires_grad_(False)
    return images, torch.from_numpy(labels.astype(np.int64))
