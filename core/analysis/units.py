"""Per-layer and per-unit views: every stage's pre-pool, what, where and decoder state for one image; one channel
decoded alone through the image's wheres; the images a channel responds to most.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from core.analysis.lens import window_ties
from core.analysis.networks import decoder_refusal, projects, window_refusal
from core.analysis.running import as_batch, batch_size_for, cat_encodings, evaluating, mse_of
from core.model import SWWAE, Decoding, Encoding, where_offsets
from core.model.deconvnet import PoolWindow, unpool

__all__ = ["StageView", "UnitView", "layer_views", "unit_view", "unit_decodings", "channel_peaks", "top_images"]


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
    tied: np.ndarray  # (C, h, w) bool: the window's maximum occurs more than once, so its switch is no choice
    hidden: np.ndarray | None  # (C, h, w) decoder's reconstruction of `what`; None for the top stage
    mid_mse: float | None  # the L2M term: mean squared error of hidden against what


def layer_views(model: SWWAE, image: torch.Tensor) -> tuple[list[StageView], Encoding, Decoding | None]:
    """Every stage's pre-pool, what, where, unpooled and hidden for one image (C, H, W) or (1, C, H, W). The decoding
    is None for a network without one (core.analysis.networks.decoder_refusal says why)."""
    cfg = model.config
    with evaluating(model):
        batch = as_batch(image, model)
        if batch.shape[0] != 1:
            raise ValueError(f"layer_views takes one image, got a batch of {batch.shape[0]}")
        encoding = model.encode(batch)
        decoding = None if decoder_refusal(cfg) else model.decode(encoding)
    views = []
    for stage, pool_size in enumerate(cfg.pool_sizes):
        offsets, where_id, tied = _switch_cells(encoding, cfg, stage)
        hidden = decoding.hiddens[stage] if decoding is not None and stage < len(decoding.hiddens) else None
        unpooled = decoding.unpooled[stage] if decoding is not None else _unpooled(encoding, cfg, stage)
        views.append(StageView(
            stage=stage,
            pool_size=pool_size,
            pre_pool=encoding.pre_pool[stage][0].float().cpu().numpy(),
            what=encoding.whats[stage][0].float().cpu().numpy(),
            where_offset=offsets, where_id=where_id,
            unpooled=unpooled[0].float().cpu().numpy(),
            tied=tied,
            hidden=None if hidden is None else hidden[0].float().cpu().numpy(),
            mid_mse=None if hidden is None else mse_of(hidden, encoding.whats[stage]),
        ))
    return views, encoding, decoding


def _switch_cells(encoding: Encoding, cfg, stage: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(where offsets (C, h, w, 2), cell ids (C, h, w), ties (C, h, w)) of batch item 0 at `stage`; for a pooling
    layer whose windows do not tile its map (core.analysis.networks.window_refusal) zeros and no ties: the pages
    refuse its where views."""
    pool_size, what = cfg.pool_sizes[stage], encoding.whats[stage][0]  # what: (C, h, w)
    if window_refusal(cfg, stage) is not None:
        return (np.zeros((*what.shape, 2), np.float32), np.zeros(tuple(what.shape), np.int64),
                np.zeros(tuple(what.shape), bool))
    offsets = where_offsets(encoding.wheres[stage], pool_size, cfg.stage_sizes[stage])[0]  # (C, h, w, 2)
    cells = offsets.round().clamp(0, pool_size - 1).long()
    return (offsets.cpu().numpy(), (cells[..., 0] * pool_size + cells[..., 1]).cpu().numpy(),
            window_ties(encoding.pre_pool[stage][0], pool_size))


def _unpooled(encoding: Encoding, cfg, stage: int) -> torch.Tensor:
    """The what of `stage` put back at its switches (F.max_unpool2d with the layer's window): (N, C, H, W)."""
    size = cfg.stage_sizes[stage]
    window = PoolWindow(cfg.pool_sizes[stage], cfg.pool_strides[stage], cfg.pool_paddings[stage], (size, size))
    return unpool(encoding.whats[stage], encoding.wheres[stage], window, "hard")  # (N, C, H, W)


@dataclass
class UnitView:
    """One channel (unit) of one stage for one image, and the pixels it accounts for."""

    stage: int
    channel: int
    pre_pool: np.ndarray  # (H_l, W_l) the channel's map before pooling
    what: np.ndarray  # (h_l, w_l)
    where_offset: np.ndarray  # (h_l, w_l, 2) (row, col) inside the window
    decoding: np.ndarray  # (C, H, W) decoded from this stage with only this channel's what, the image's wheres
    contribution: np.ndarray  # (C, H, W) decoding minus the decoding with every channel of the stage at 0
    recon: np.ndarray  # (C, H, W) the whole image's reconstruction
    recon_mse: float  # MSE of the whole reconstruction against the image


def _unit_batch(model: SWWAE, encoding: Encoding, stage: int, channel: int) -> torch.Tensor:
    """Decodings from `stage` of: only `channel` kept, and no channel kept. -> (2N, C, H, W)."""
    only = encoding.keeping_channels(stage, [channel])
    none = encoding.keeping_channels(stage, [])
    return model.decode(cat_encodings([only, none]), from_stage=stage).recon


def unit_decodings(model: SWWAE, images: torch.Tensor, stage: int, channel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode each image from `stage` with only `channel`'s what kept (other channels 0) and its own wheres.

    -> (decodings (N, C, H, W), contributions (N, C, H, W): decodings minus the all-zero stage's decoding).
    """
    with evaluating(model):
        encoding = model.encode(as_batch(images, model))
        both = _unit_batch(model, encoding, stage, channel)
    n = encoding.logits.shape[0]
    return both[:n], both[:n] - both[n:]


def unit_view(model: SWWAE, image: torch.Tensor, stage: int, channel: int) -> UnitView:
    """A unit's maps for one image (C, H, W), its decoding and the whole image's reconstruction error (NaN for a
    network: its decoding is a deconvnet projection, no reconstruction). ValueError for a network without a
    decoding."""
    if (refusal := decoder_refusal(model.config)) is not None:
        raise ValueError(refusal)
    with evaluating(model):
        batch = as_batch(image, model)
        encoding = model.encode(batch)
        recon = model.decode(encoding).recon  # (1, C, H, W)
        both = _unit_batch(model, encoding, stage, channel)  # (2, C, H, W)
    cfg = model.config
    offsets, _, _ = _switch_cells(encoding, cfg, stage)  # (C_l, h, w, 2) of the one image
    numpy = lambda t: t.float().cpu().numpy()  # noqa: E731
    return UnitView(
        stage=stage, channel=channel,
        pre_pool=numpy(encoding.pre_pool[stage][0, channel]), what=numpy(encoding.whats[stage][0, channel]),
        where_offset=offsets[channel], decoding=numpy(both[0]), contribution=numpy(both[0] - both[1]),
        recon=numpy(recon[0]), recon_mse=math.nan if projects(cfg) else mse_of(recon, batch),
    )


def channel_peaks(model: SWWAE, images: torch.Tensor, batch_size: int | None = None) -> list[np.ndarray]:
    """Each image's largest what of every channel, per stage: [(N, C_l) float32 for each stage]. Batches hold what
    the activation budget allows (`batch_size_for`), whatever the model's input size."""
    batch_size = batch_size or batch_size_for(model.config)
    peaks: list[list[np.ndarray]] = [[] for _ in model.config.channels]
    with evaluating(model):
        for start in range(0, images.shape[0], batch_size):
            encoding = model.encode(as_batch(images[start:start + batch_size], model))
            for stage, what in enumerate(encoding.whats):
                peaks[stage].append(what.float().amax(dim=(2, 3)).cpu().numpy())  # (B, C_l)
    return [np.concatenate(stage_peaks) for stage_peaks in peaks]


def top_images(peaks: np.ndarray, channel: int, count: int = 9) -> np.ndarray:
    """Indices of the `count` images whose `channel` peaks highest, best first. peaks: (N, C) of one stage."""
    return np.argsort(-peaks[:, channel], kind="stable")[:count]
