"""How a run's what and where form over training: for the model at one snapshot step, its reconstructions of a set
of sample images and one image's where map at one stage (the Runs page lays these out step by step), and which of
a folder's many snapshots to show (`spread_evenly`: a trainer keeps a few dozen; a folder can hold thousands)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np
import torch

from core.analysis.render import display_image, side_by_side, where_mosaic
from core.analysis.swaps import reconstruct
from core.analysis.lens import window_ties
from core.analysis.running import as_batch, evaluating
from core.analysis.units import layer_views
from core.model import SWWAE

__all__ = ["StepPictures", "step_pictures", "spread_evenly", "switches_settled"]

T = TypeVar("T")


@dataclass
class StepPictures:
    strip: np.ndarray  # (H, S * (W + 1) - 1[, 3]): the samples' reconstructions in a row, in [0, 1]
    where: np.ndarray  # (R, W', 3): image `index`'s where at `stage` (one channel, or all as a mosaic), coloured by
    # the switch's position in the pooling window
    recon_mse: float  # of the samples' reconstructions


def step_pictures(model: SWWAE, images: torch.Tensor, index: int, stage: int, channel: int | None = None
                  ) -> StepPictures:
    """The pictures of one snapshot: `images` (S, C, H, W) reconstructed, and image `index`'s where at `stage`, of
    one `channel` or (None) all of them (what faded where it is 0, as on the Layers page)."""
    if not 0 <= stage < len(model.config.channels):
        raise ValueError(f"stage {stage} does not exist; expected 0..{len(model.config.channels) - 1}")
    if channel is not None and not 0 <= channel < model.config.channels[stage]:
        raise ValueError(f"channel {channel} does not exist at stage {stage + 1}; expected 0.."
                         f"{model.config.channels[stage] - 1}")
    recons = reconstruct(model, images).float().cpu()  # (S, C, H, W)
    view = layer_views(model, images[index])[0][stage]
    keep = slice(None) if channel is None else slice(channel, channel + 1)
    colors, _ = where_mosaic(view.where_offset[keep], view.what[keep], view.pool_size, fade=True,
                             tied=view.tied[keep])
    strip = side_by_side([display_image(r.numpy()) for r in recons])
    error = float(((recons - images.float().cpu()) ** 2).mean())
    return StepPictures(np.nan_to_num(strip, nan=1.0), colors.image, error)


def spread_evenly(items: Sequence[T], limit: int) -> list[T]:
    """At most `limit` (>= 2) of `items`, evenly spaced along them, the first and the last always among them; all of
    them when they fit. Over a run's snapshots in step order this keeps the log spacing of the trainer's schedule
    and shows the whole run, however many files were copied in."""
    if limit < 2:
        raise ValueError(f"limit must be at least 2 (the first and the last), got {limit}")
    if len(items) <= limit:
        return list(items)
    # spacing (len - 1) / (limit - 1) >= 1, so the rounded positions are distinct
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)  # (limit,)
    return [items[i] for i in picks]


def switches_settled(model: SWWAE, final: SWWAE, images: torch.Tensor, tolerance: float = 0.1) -> list[float]:
    """Per stage, the share of `model`'s switches on `images` (N, C, H, W) that sit where `final`'s do (the same cell;
    soft: within `tolerance` of a pixel), over the windows that are a choice in both (ties in either are left out).
    NaN for a stage with no such window. Raises ValueError when the two models' wheres differ in shape."""
    with evaluating(model), evaluating(final):
        mine, theirs = model.encode(as_batch(images, model)), final.encode(as_batch(images, final))
    shares = []
    for stage, (a, b) in enumerate(zip(mine.wheres, theirs.wheres)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"stage {stage + 1}'s where has shape {tuple(a.shape)} here and {tuple(b.shape)} in the "
                             "final model")
        pool_size = model.config.pool_sizes[stage]
        chosen = ~(window_ties(mine.pre_pool[stage], pool_size) | window_ties(theirs.pre_pool[stage], pool_size))
        same = ((a - b).abs() <= tolerance).all(dim=-1) if a.is_floating_point() else a == b  # (N, C, h, w)
        same = same.cpu().numpy()
        shares.append(float(same[chosen].mean()) if chosen.any() else float("nan"))
    return shares
