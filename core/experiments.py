"""What-where experiments as pure functions of a model and images: the dashboard and benchmarks call these.

Every function runs the model in eval mode without gradients and restores the model's previous mode.
Images are float tensors in [0, 1], one image (C, H, W) or a batch (N, C, H, W).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.model import SWWAE, Decoding, Encoding
from core.pooling import where_offsets

__all__ = [
    "SwapResult", "StageView", "ProbeStage",
    "swap_where", "swap_matrix", "no_where_recon", "translation_probe", "layer_views", "shift_image", "psnr",
    "class_probabilities", "classify", "mse",
]


@contextlib.contextmanager
def _evaluating(model: SWWAE) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _batch(images: torch.Tensor, model: SWWAE) -> torch.Tensor:
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
    with _evaluating(model):
        return class_probabilities(model.encode(_batch(images, model)).logits)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.mse_loss(a.float(), b.float()).item()


def mse(recon: torch.Tensor, image: torch.Tensor) -> float:
    """Mean squared error between two images or batches of the same number of pixels, on any devices."""
    return _mse(recon.detach().cpu().reshape(image.shape), image.detach().cpu())


@dataclass
class SwapResult:
    """Reconstructions of A and B and of their what-where crossings, each (C, H, W) in the model's range."""

    recon_a: torch.Tensor
    recon_b: torch.Tensor
    what_a_where_b: torch.Tensor
    what_b_where_a: torch.Tensor
    no_where_a: torch.Tensor
    no_where_b: torch.Tensor
    metrics: dict[str, dict[str, float]]  # image name -> {'mse_a', 'psnr_a', 'mse_b', 'psnr_b'}


def swap_where(model: SWWAE, a: torch.Tensor, b: torch.Tensor, stages: Sequence[int]) -> SwapResult:
    """Decode A's what with B's where at `stages` (and B's what with A's where); one encode, one decode."""
    if a.shape != b.shape:
        raise ValueError(f"A and B must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    with _evaluating(model):
        pair = torch.cat([_batch(a, model), _batch(b, model)])  # (2, C, H, W): A, B
        encoding = model.encode(pair)  # batch (A, B)
        crossed = encoding.with_wheres_from(encoding.select([1, 0]), stages)  # (what A + where B, what B + where A)
        both = _cat_encodings([encoding, crossed])  # (A, B, A|B, B|A)
        recons = model.decode(both).recon
        no_where = model.decode(encoding, pooling="none").recon
    images = {
        "recon_a": recons[0], "recon_b": recons[1], "what_a_where_b": recons[2], "what_b_where_a": recons[3],
        "no_where_a": no_where[0], "no_where_b": no_where[1],
    }
    metrics = {}
    for name, image in images.items():
        mse_a, mse_b = _mse(image, pair[0]), _mse(image, pair[1])
        metrics[name] = {"mse_a": mse_a, "psnr_a": psnr(mse_a), "mse_b": mse_b, "psnr_b": psnr(mse_b)}
    return SwapResult(**images, metrics=metrics)


def _cat_encodings(encodings: Sequence[Encoding]) -> Encoding:
    cat = lambda attr: [torch.cat(ts) for ts in zip(*(getattr(e, attr) for e in encodings))]  # noqa: E731
    return Encoding(cat("whats"), cat("wheres"), cat("pre_pool"), torch.cat([e.logits for e in encodings]))


def swap_matrix(model: SWWAE, images: torch.Tensor, stages: Sequence[int] | None = None
                ) -> tuple[torch.Tensor, np.ndarray]:
    """Cell (i, j) decodes the what of image i with the where of image j at `stages` (default: all).

    images: (K, C, H, W), K <= 8 -> (recons (K, K, C, H, W), mse (K, K) of each cell against image i).
    """
    k = images.shape[0]
    if not 1 <= k <= 8:
        raise ValueError(f"a swap matrix takes 1 to 8 images, got {k}")
    stages = range(len(model.config.channels)) if stages is None else stages
    with _evaluating(model):
        batch = _batch(images, model)
        encoding = model.encode(batch)
        rows = torch.arange(k).repeat_interleave(k)  # what of image i, K times each
        cols = torch.arange(k).repeat(k)  # where of image j
        grid = encoding.select(rows).with_wheres_from(encoding.select(cols), stages)
        recons = model.decode(grid).recon  # (K*K, C, H, W)
        mse = ((recons.float() - batch[rows].float()) ** 2).flatten(1).mean(1)  # (K*K,)
    return recons.view(k, k, *recons.shape[1:]), mse.view(k, k).cpu().numpy()


def no_where_recon(model: SWWAE, images: torch.Tensor) -> torch.Tensor:
    """Reconstruction with every where replaced by the 'none' rule (nearest upsampling): (N, C, H, W)."""
    with _evaluating(model):
        return model.decode(model.encode(_batch(images, model)), pooling="none").recon


def shift_image(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate by (dx, dy) pixels (right, down), filling the uncovered border with zeros. (..., H, W)."""
    h, w = images.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return torch.zeros_like(images)
    shifted = torch.roll(images, shifts=(dy, dx), dims=(-2, -1))
    if dy > 0:
        shifted[..., :dy, :] = 0
    elif dy < 0:
        shifted[..., dy:, :] = 0
    if dx > 0:
        shifted[..., :, :dx] = 0
    elif dx < 0:
        shifted[..., :, dx:] = 0
    return shifted


@dataclass
class ProbeStage:
    stage: int
    what_change: float  # ||what(shifted) - what(x)|| / ||what(x)||
    where_change: float  # fraction of switches whose in-window (row, col) moved by more than half a cell


def translation_probe(model: SWWAE, image: torch.Tensor, dx: int, dy: int) -> list[ProbeStage]:
    """Per stage, how much the whats and the wheres change when the image is shifted by (dx, dy)."""
    cfg = model.config
    with _evaluating(model):
        batch = _batch(image, model)
        both = model.encode(torch.cat([batch, shift_image(batch, dx, dy)]))
    result = []
    for stage, (what, where) in enumerate(zip(both.whats, both.wheres)):
        n = batch.shape[0]
        what_change = (what[n:] - what[:n]).norm() / what[:n].norm().clamp(min=1e-12)
        offsets = where_offsets(where, cfg.pool_sizes[stage], cfg.stage_sizes[stage])  # (2N, C, h, w, 2)
        moved = ((offsets[n:] - offsets[:n]).abs() > 0.5).any(-1).float().mean()
        result.append(ProbeStage(stage, what_change.item(), moved.item()))
    return result


@dataclass
class StageView:
    """One stage of one image, as numpy arrays ready to draw."""

    stage: int
    pool_size: int
    pre_pool: np.ndarray  # (C, H, W)
    what: np.ndarray  # (C, h, w)
    where_offset: np.ndarray  # (C, h, w, 2) (row, col) offset inside the window, float
    where_id: np.ndarray  # (C, h, w) int, row * pool_size + col of the (rounded) offset
    unpooled: np.ndarray  # (C, H, W) what placed back with where, as the decoder sees it
    hidden: np.ndarray | None  # (C, h, w) decoder's reconstruction of `what`; None for the top stage
    mid_mse: float | None  # the L2M term: mean squared error of hidden against what


def layer_views(model: SWWAE, image: torch.Tensor) -> tuple[list[StageView], Encoding, Decoding]:
    """Every stage's pre-pool, what, where, unpooled and hidden for one image (C, H, W) or (1, C, H, W)."""
    cfg = model.config
    with _evaluating(model):
        batch = _batch(image, model)
        if batch.shape[0] != 1:
            raise ValueError(f"layer_views takes one image, got a batch of {batch.shape[0]}")
        encoding = model.encode(batch)
        decoding = model.decode(encoding)
    views = []
    for stage, pool_size in enumerate(cfg.pool_sizes):
        offsets = where_offsets(encoding.wheres[stage], pool_size, cfg.stage_sizes[stage])[0]  # (C, h, w, 2)
        cells = offsets.round().clamp(0, pool_size - 1).long()
        hidden = decoding.hiddens[stage] if stage < len(decoding.hiddens) else None
        views.append(StageView(
            stage=stage,
            pool_size=pool_size,
            pre_pool=encoding.pre_pool[stage][0].float().cpu().numpy(),
            what=encoding.whats[stage][0].float().cpu().numpy(),
            where_offset=offsets.cpu().numpy(),
            where_id=(cells[..., 0] * pool_size + cells[..., 1]).cpu().numpy(),
            unpooled=decoding.unpooled[stage][0].float().cpu().numpy(),
            hidden=None if hidden is None else hidden[0].float().cpu().numpy(),
            mid_mse=None if hidden is None else _mse(hidden, encoding.whats[stage]),
        ))
    return views, encoding, decoding
