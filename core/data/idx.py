"""IDX files (the format of MNIST and Fashion-MNIST), read and checked, and found where they are.

An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte, the only type these datasets use), the number
of dimensions, each dimension as a big-endian uint32, then the values. It may be gzipped (told by its first two
bytes, not by its name). `read_idx` checks all of it and the byte length; a file that is truncated, corrupt or not
IDX raises one `IdxError` line naming the file and what is wrong, never a short array.

A header is legal long before it is sensible, and a few hundred KB of gzip can declare gigabytes. So the header is
judged before a byte of the body is inflated: no zero-sized dimension (a dataset of nothing, or of 0x0 images),
no side over MAX_SIDE (no model this program builds or loads takes larger images), at most MAX_VALUES values, and
no more than the file can hold (its exact size when plain; MAX_GZIP_RATIO times its size when gzipped: deflate
inflates no further), and no large body from a far smaller gzip (over BOMB_BYTES at over BOMB_RATIO:1, which no
real image data compresses to: MNIST's images compress 5:1, Fashion-MNIST's 2:1). The body is then read in
CHUNK_BYTES pieces, so memory follows what the file holds rather than what its header claims, and the read stops
at the first byte past the promised count.

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
from typing import IO

import numpy as np
import torch

from core.model.checkpoint import MAX_IMAGE_SIZE

__all__ = ["IdxError", "IDX_FILES", "SYSTEM_DIRS", "TORCHVISION_FOLDERS", "read_idx", "find_idx", "idx_file", "load_idx_split",
           "idx_search_dirs"]

UNSIGNED_BYTE = 0x08
MAX_VALUES = 2**30  # 1 GiB of uint8: EMNIST ByClass, the largest public IDX set, is 547 MB; MNIST 47 MB
MAX_SIDE = MAX_IMAGE_SIZE  # pixels per image side: no model this program builds or loads takes larger images
MAX_GZIP_RATIO = 1032  # deflate's limit: a gzip file inflates to at most this many times its size
BOMB_RATIO, BOMB_BYTES = 100, 64 * 2**20  # a body over 64 MB at over 100:1 is blank pixels or a bomb (MNIST: 5:1)
CHUNK_BYTES = 2**20  # the body is read (and inflated) this much at a time
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


def _open(path: Path) -> tuple[IO[bytes], bool]:
    """(a binary stream of the file's content, whether it is gzipped), told by the first two bytes."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return (gzip.open(path, "rb") if gzipped else open(path, "rb")), gzipped


def _read_exact(stream, count: int, path: Path, what: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise IdxError(f"{path}: truncated: {what} needs {count:,} bytes, the file has {len(data):,}")
    return data


def _shape(dims: tuple[int, ...]) -> str:
    return "x".join(map(str, dims))


def _read_header(stream, path: Path) -> tuple[int, ...]:
    """The dimensions an IDX header declares, after its magic number and value type are checked."""
    header = _read_exact(stream, 4, path, "the header")
    if header[:2] != b"\x00\x00":
        raise IdxError(f"{path}: not an IDX file (magic number {header.hex()})")
    if header[2] != UNSIGNED_BYTE:
        raise IdxError(f"{path}: values of type 0x{header[2]:02x}, expected unsigned bytes (0x08)")
    ndim = header[3]
    if not 1 <= ndim <= 4:
        raise IdxError(f"{path}: {ndim} dimensions, expected 1 to 4")
    return tuple(int(d) for d in np.frombuffer(_read_exact(stream, 4 * ndim, path, "the dimensions"), ">u4"))


def _check_dims(dims: tuple[int, ...], path: Path, ndim: int | None) -> None:
    """Refuse a header this program cannot use, before its body is read: the wrong number of dimensions, a
    zero-sized one (nothing to train on or show; 100x0x0 images failed on every page), more values than it reads,
    or image sides over MAX_SIDE (2x15000x15000 images took 1.5 GB to load as examples)."""
    if ndim is not None and len(dims) != ndim:
        what = "(count, height, width)" if ndim == 3 else "(count)" if ndim == 1 else ""
        raise IdxError(f"{path}: {len(dims)} dimensions, expected {ndim} {what}".rstrip())
    if 0 in dims:
        raise IdxError(f"{path}: its header declares {_shape(dims)} values: a zero-sized dimension holds no data")
    if math.prod(dims) > MAX_VALUES:
        raise IdxError(f"{path}: its header declares {math.prod(dims):,} values, more than this program reads")
    if len(dims) > 1 and max(dims[1:]) > MAX_SIDE:
        raise IdxError(f"{path}: its header declares {_shape(dims)} values; image sides are at most {MAX_SIDE} "
                       "pixels (the largest model input this program builds)")


def _check_fits_file(dims: tuple[int, ...], path: Path, gzipped: bool) -> None:
    """Refuse a header promising more than the file can hold, before anything is inflated or allocated: a plain
    file's body is exactly the rest of it; a gzipped one inflates to at most MAX_GZIP_RATIO times the file, and a
    large body at over BOMB_RATIO times it is no image data (0.5 MB of gzip held 500 MB of zero pixels)."""
    header_bytes, size = 4 + 4 * len(dims), path.stat().st_size
    count = math.prod(dims)
    if not gzipped and size - header_bytes > count:
        raise IdxError(f"{path}: more bytes than its header's {_shape(dims)} values")
    most = size * MAX_GZIP_RATIO if gzipped else size - header_bytes
    if count > most:
        held = f"{size:,} bytes of gzip inflate to at most {most:,}" if gzipped else f"the file has {most:,}"
        raise IdxError(f"{path}: truncated: {_shape(dims)} values need {count:,} bytes, {held}")
    if gzipped and count > BOMB_BYTES and count > size * BOMB_RATIO:
        raise IdxError(f"{path}: {size:,} bytes of gzip declaring {_shape(dims)} values ({count // size:,}:1) are "
                       f"blank images or a decompression bomb; image data compresses far less")


def _read_body(stream, dims: tuple[int, ...], path: Path) -> np.ndarray:
    """The values, read CHUNK_BYTES at a time into one array: memory follows what arrives, not what the header
    claims, and the first byte past the promised count stops the read."""
    count = math.prod(dims)
    values = np.empty(count, dtype=np.uint8)  # untouched pages cost nothing until a chunk lands in them
    filled = 0
    while filled < count:
        chunk = stream.read(min(CHUNK_BYTES, count - filled))
        if not chunk:
            raise IdxError(f"{path}: truncated: {_shape(dims)} values need {count:,} bytes, the file has {filled:,}")
        values[filled:filled + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        filled += len(chunk)
    if stream.read(1):
        raise IdxError(f"{path}: more bytes than its header's {_shape(dims)} values")
    return values.reshape(dims)


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """The array in an IDX file (gzipped or not) as uint8, writable, shape from its header; with `ndim`, that many
    dimensions. IdxError (one line) when it is not one, or not one this program can use (module docstring)."""
    path = Path(path)
    try:
        stream, gzipped = _open(path)
        with stream:
            dims = _read_header(stream, path)
            _check_dims(dims, path, ndim)
            _check_fits_file(dims, path, gzipped)
            return _read_body(stream, dims, path)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise IdxError(f"{path}: cannot be read ({str(exc).strip() or type(exc).__name__})") from None


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
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    if len(images) != len(labels):
        raise IdxError(f"{labels_path}: {len(labels):,} labels for the {len(images):,} images of {images_path.name}")
    images = torch.from_numpy(images)  # (N, H, W) uint8, writable and owned: read_idx's own array, no copy
    images.requires_grad_(False)
    return images, torch.from_numpy(labels.astype(np.int64))
