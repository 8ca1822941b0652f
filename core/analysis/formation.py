"""How a run's what and where form over training: for the model at one snapshot step, its reconstructions of a set
of sample images and one image's where map at one stage (the Runs page lays these out step by step)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.analysis.render import display_image, side_by_side, where_mosaic
from core.analysis.swaps import reconstruct
from core.analysis.units import layer_views
from core.model import SWWAE

__all__ = ["StepPictures", "step_pictures"]


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
    colors, _ = where_mosaic(view.where_offset[keep], view.what[keep], view.pool_size, fade=True)
    strip = side_by_side([display_image(r.numpy()) for r in recons])
    error = float(((recons - images.float().cpu()) ** 2).mean())
    return StepPictures(np.nan_to_num(strip, nan=1.0), colors.image, error)
