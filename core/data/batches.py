"""Training batches: the same epoch order for data held on the device and data streamed by a DataLoader.

An epoch's order is a pure function of (seed, epoch), so a run resumed mid-epoch replays it exactly and every
rank of a distributed run agrees on it; rank r takes every world_size-th sample of it (a shard). Each rank gets
the same number of full batches (the last partial batch is dropped), so DDP ranks stay in step. Data held on the
device may be uint8 pixels (IDX data: a quarter of the memory); each batch is then turned into floats in [0, 1].
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from core.model import UNLABELED

__all__ = ["epoch_order", "random_shift", "random_flip", "as_float_images", "DeviceBatches", "StreamBatches"]

PIXEL_MAX = 255.0


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) as floats in [0, 1]; float images as they are."""
    return images.float().div_(PIXEL_MAX) if images.dtype == torch.uint8 else images


def epoch_order(num_samples: int, *, epoch: int, seed: int, rank: int = 0, world_size: int = 1,
                batch_size: int) -> torch.Tensor:
    """Indices (steps * batch_size,) this rank visits in `epoch`, in order."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)  # distinct, reproducible per epoch
    order = torch.randperm(num_samples, generator=generator)
    shard = order[rank::world_size]
    steps = (num_samples // world_size) // batch_size
    return shard[:steps * batch_size]


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift], filling with zeros."""
    if max_shift == 0:
        return images
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)  # (N, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator, device=generator.device)
    offsets = offsets.to(images.device)
    rows = torch.arange(h, device=images.device) + offsets[:, :1]  # (N, H)
    cols = torch.arange(w, device=images.device) + offsets[:, 1:]  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]  # (N, 1, 1)
    crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return crops.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image (N, C, H, W) left-right with probability 1/2, drawn from `generator`."""
    mirror = torch.rand(len(images), generator=generator, device=generator.device).to(images.device) < 0.5  # (N,)
    return torch.where(mirror[:, None, None, None], images.flip(-1), images)


class DeviceBatches:
    """A dataset held on the device as tensors, batched by indexing: no worker processes, no host copies.

    With `labeled_per_batch` = k > 0 (semi-supervised), every batch starts with k labeled samples, cycled
    through the labeled pool in a seeded order, followed by batch_size - k samples of the epoch order whose
    labels are dropped (-1): a fixed labeled/unlabeled mix however few labels there are.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu", labeled_per_batch: int = 0):
        self.images = images.to(device)  # (N, C, H, W)
        self.labels = labels.to(device)  # (N,)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.labeled_per_batch = labeled_per_batch
        self.labeled = torch.nonzero(labels != UNLABELED).flatten()  # (L,) indices of the labeled samples
        if labeled_per_batch and not 0 < labeled_per_batch <= batch_size:
            raise ValueError(f"labeled_per_batch must be in 1..batch_size ({batch_size}), got {labeled_per_batch}")
        if labeled_per_batch and len(self.labeled) == 0:
            raise ValueError("labeled_per_batch needs labeled training samples, but none is labeled")

    @property
    def steps_per_epoch(self) -> int:
        return (len(self.labels) // self.world_size) // self.batch_size

    def epoch(self, epoch: int, *, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images (B, C, H, W), labels (B,)) for each step of `epoch` from `start_step` on."""
        order = epoch_order(len(self.labels), epoch=epoch, seed=self.seed, rank=self.rank,
                            world_size=self.world_size, batch_size=self.batch_size)
        order = order.to(self.images.device).view(-1, self.batch_size)  # (steps, B)
        if self.labeled_per_batch:
            yield from self._mixed(order, epoch, start_step)
            return
        for index in order[start_step:]:
            yield as_float_images(self.images[index]), self.labels[index]

    def _mixed(self, order: torch.Tensor, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        steps, k = order.shape[0], self.labeled_per_batch
        generator = torch.Generator().manual_seed((self.seed * 100_003 + epoch) * 1_009 + self.rank)
        rounds = -(-steps * k // len(self.labeled))  # ceil: enough passes over the labeled pool
        cycle = torch.cat([torch.randperm(len(self.labeled), generator=generator) for _ in range(rounds)])
        labeled = self.labeled[cycle[: steps * k]].to(self.images.device).view(steps, k)  # (steps, k)
        unlabeled = order[:, : self.batch_size - k]  # (steps, B - k)
        dropped = torch.full((self.batch_size - k,), UNLABELED, dtype=self.labels.dtype, device=self.labels.device)
        for step in range(start_step, steps):
            index = torch.cat([labeled[step], unlabeled[step]])  # (B,)
            yield as_float_images(self.images[index]), torch.cat([self.labels[labeled[step]], dropped])

    def in_order(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's shard (every world_size-th sample), unshuffled, in batches; the last may be short."""
        images, labels = self.images[self.rank::self.world_size], self.labels[self.rank::self.world_size]
        for start in range(0, len(labels), self.batch_size):
            yield as_float_images(images[start:start + self.batch_size]), labels[start:start + self.batch_size]


class StreamBatches:
    """A dataset too large for the device, streamed by a DataLoader in the same order as DeviceBatches."""

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", workers: int = 2):
        self.dataset, self.device, self.workers = dataset, torch.device(device), workers
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size

    @property
    def steps_per_epoch(self) -> int:
        return (len(self.dataset) // self.world_size) // self.batch_size

    def epoch(self, epoch: int, *, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(len(self.dataset), epoch=epoch, seed=self.seed, rank=self.rank,
                            world_size=self.world_size, batch_size=self.batch_size)
        loader = DataLoader(Subset(self.dataset, order[start_step * self.batch_size:].tolist()),
                            batch_size=self.batch_size, shuffle=False, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda")
        yield from self._to_device(loader)

    def in_order(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's shard (every world_size-th sample), unshuffled, in batches; the last may be short."""
        shard = list(range(self.rank, len(self.dataset), self.world_size))
        yield from self._to_device(DataLoader(Subset(self.dataset, shard), batch_size=self.batch_size,
                                              num_workers=self.workers, pin_memory=self.device.type == "cuda"))

    def _to_device(self, loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
