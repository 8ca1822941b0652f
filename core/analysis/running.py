"""Running a model for analysis: eval mode without gradients (the mode restored after), images as a batch on the
model's device, class probabilities, and the image distances (MSE, PSNR) every page reports. Images are float
tensors in [0, 1], one image (C, H, W) or a batch (N, C, H, W).
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.model import SWWAE, Encoding, ModelConfig

__all__ = ["evaluating", "as_batch", "cat_encodings", "psnr", "class_probabilities", "classify", "mse", "mse_of",
           "activation_bytes", "batch_size_for", "BATCH_MEMORY_BYTES"]

BATCH_MEMORY_BYTES = 256 * 2**20  # what one batch of an analysis may hold in activations
BYTES_PER_VALUE = 4


@contextlib.contextmanager
def evaluating(model: SWWAE) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def as_batch(images: torch.Tensor, model: SWWAE) -> torch.Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(0)  # (1, C, H, W)
    param = next(model.parameters())
    return images.to(device=param.device, dtype=param.dtype)


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, peak]; inf for a perfect match."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak**2 / mse)


def class_probabilities(logits: torch.Tensor) -> np.ndarray:
    """Softmax of class logits (N, num_classes) -> probabilities (N, num_classes) as numpy float64."""
    return torch.softmax(logits.detach().double(), dim=-1).cpu().numpy()


def classify(model: SWWAE, images: torch.Tensor) -> np.ndarray:
    """Class probabilities of one image (C, H, W) or a batch (N, C, H, W) -> (N, num_classes)."""
    with evaluating(model):
        return class_probabilities(model.encode(as_batch(images, model)).logits)


def mse_of(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.mse_loss(a.float(), b.float()).item()


def mse(recon: torch.Tensor, image: torch.Tensor) -> float:
    """Mean squared error between two images or batches of the same number of pixels, on any devices."""
    return mse_of(recon.detach().cpu().reshape(image.shape), image.detach().cpu())



def cat_encodings(encodings: Sequence[Encoding]) -> Encoding:
    cat = lambda attr: [torch.cat(ts) for ts in zip(*(getattr(e, attr) for e in encodings))]  # noqa: E731
    return Encoding(cat("whats"), cat("wheres"), cat("pre_pool"), torch.cat([e.logits for e in encodings]))


def activation_bytes(config: ModelConfig) -> int:
    """Bytes of one image's encoder and decoder activations (float32): the input and, per stage, the pre-pool map
    (its convolutions' outputs), the what and the decoder's maps of the same sizes."""
    values = config.in_channels * config.image_size ** 2
    for channels, size, pool in zip(config.channels, config.stage_sizes, config.pool_sizes):
        values += 2 * channels * size ** 2 * config.convs_per_stage + 2 * channels * (size // pool) ** 2
    return values * BYTES_PER_VALUE


def batch_size_for(config: ModelConfig, budget_bytes: int = BATCH_MEMORY_BYTES) -> int:
    """How many images one batch may hold within `budget_bytes` of activations (at least 1)."""
    return max(1, budget_bytes // activation_bytes(config))
