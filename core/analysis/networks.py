"""Foreign pooling networks (core.model.PoolingNetwork) in the analyses: which of an SWWAE's views hold for them, and
how their decoding is drawn.

A PoolingNetwork has no trained decoder. Its `decode` is the deconvnet of Zeiler & Fergus ("Visualizing and
Understanding Convolutional Networks", ECCV 2014): the what unpooled at the switches, rectified and sent through the
network's own filters transposed, down to the pixels. That *projection* is signed and in the normalised input's
units, not an image in [0, 1]: it shows which pixel pattern the units respond to, so it is drawn on a signed scale and
never scored against the image (no reconstruction error, no PSNR). A network whose layers up to the last pool are no
chain the deconvnet can retrace (a residual add, global pooling before the last max pool) has no decoding at all.

The where maps, the pooling lens, the window ties and the shift probe read a switch as a cell of a window that tiles
the map (kernel = stride, no padding or dilation); a pooling layer with overlapping windows (AlexNet's 3x3 stride 2)
or padding has none of that geometry, so those views are refused for it in one line (`window_refusal`).
"""
from __future__ import annotations

import math

import numpy as np

from core.analysis.render import Tile, display_image
from core.model import NetworkConfig

__all__ = ["PROJECTION_NOTE", "NO_HIDDEN_NOTE", "is_network", "projects", "decoder_refusal", "window_refusal", "probe_refusal",
           "projection_tile", "picture_tile", "network_swap_tiles", "network_unit_tiles", "grey_centred"]

PROJECTION_NOTE = ("No trained decoder: the deconvnet projection (Zeiler & Fergus) of the top stage is shown; it is "
                   "not a reconstruction, so no reconstruction error.")
NO_HIDDEN_NOTE = ("This network has no decoder, so no stage has a decoder hidden state to set against its what (the "
                  "L2M term is an SWWAE's).")


def is_network(config) -> bool:
    """Whether a model's config is a foreign pooling network's (NetworkConfig), not an SWWAE's."""
    return isinstance(config, NetworkConfig)


def projects(config) -> bool:
    """Whether a model's decoding is a deconvnet projection, not a reconstruction of the image: a foreign network
    without a fitted what-where decoder (`python -m core.train --encoder ... --freeze-encoder` fits one; its decoding
    is then a true reconstruction, scored and drawn as an SWWAE's)."""
    return is_network(config) and config.decoder != "fitted"


def decoder_refusal(config) -> str | None:
    """Why the model cannot decode at all (one line), None when it can (every SWWAE; a network with a deconvnet)."""
    if is_network(config) and config.decoder == "none":
        return f"this network has no deconvnet decoding: {config.decoder_reason}"
    return None


def window_refusal(config, stage: int) -> str | None:
    """Why the where map, the lens and the ties of `stage` cannot be drawn (one line), None when its windows tile
    the map (kernel = stride, no padding, no dilation; every SWWAE stage)."""
    if not is_network(config):
        return None
    kernel, stride = config.pool_sizes[stage], config.pool_strides[stage]
    if kernel != stride:
        return (f"stage {stage + 1} pools {kernel}×{kernel} windows with stride {stride} (overlapping windows): its "
                "switches are shown only where windows tile the map, so its where map and lens are not drawn")
    if config.pool_paddings[stage] or config.pool_dilations[stage] != 1:
        return (f"stage {stage + 1} pools with padding or dilation: its switches are shown only where windows tile "
                "the map, so its where map and lens are not drawn")
    if config.pool_ceil_modes[stage] and config.stage_sizes[stage] % kernel:
        return (f"stage {stage + 1} pools in ceil mode, so its last windows are partial: its where map and lens are "
                "not drawn")
    return None


def probe_refusal(config) -> str | None:
    """Why the shift probe cannot measure this model (one line), None when it can: every stage's windows tile its
    map and every stage's map is the input's pixel grid pooled by the stages below (no strided convolution)."""
    if not is_network(config):
        return None
    for stage in range(len(config.pool_sizes)):
        if (refusal := window_refusal(config, stage)) is not None:
            return f"the shift probe follows switches on the input's pixel grid, and {refusal}"
        grid = math.prod(config.pool_sizes[:stage])
        if config.stage_sizes[stage] != config.image_size // grid:
            return (f"the shift probe follows switches on the input's pixel grid, and stage {stage + 1}'s map "
                    f"({config.stage_sizes[stage]}²) is not the input pooled by the stages below "
                    f"({config.image_size // grid}²): a strided or unpadded convolution changes the grid")
    return None


def projection_tile(title: str, projection: np.ndarray) -> Tile:
    """A deconvnet projection (C, H, W), signed: one channel on the diverging scale centred at 0 (with its colour
    bar), three channels as RGB with 0 at mid-grey; its largest |value| saturates and is quoted in the title."""
    values = projection.astype(np.float32)
    scale = max(float(np.abs(values).max(initial=0.0)), 1e-6)
    if values.shape[0] == 1:
        return Tile(f"{title} (±{scale:.2g})", values[0], signed=True, scale=scale)
    rgb = np.clip(0.5 + 0.5 * np.transpose(values, (1, 2, 0)) / scale, 0.0, 1.0)  # (H, W, 3), 0 at grey
    return Tile(f"{title} (±{scale:.2g}, grey 0)", rgb)


def picture_tile(config, title: str, decoded: np.ndarray) -> Tile:
    """A model's decoding (C, H, W) as a tile: an SWWAE's reconstruction is an image, a network's a projection."""
    return projection_tile(title, decoded) if projects(config) else Tile(title, display_image(decoded))


def network_swap_tiles(a: np.ndarray, b: np.ndarray, result) -> list[Tile]:
    """The Swap page's panel for a network: A, B and the deconvnet projections of each image, of each crossing and
    with the switches ignored (nearest-neighbour unpooling), each on its own signed scale."""
    arrays = {name: getattr(result, name).detach().float().cpu().numpy()
              for name in ("recon_a", "recon_b", "what_a_where_b", "what_b_where_a", "no_where_a", "no_where_b")}
    return [
        Tile("A", display_image(a)), projection_tile("A projected", arrays["recon_a"]),
        projection_tile("A's what, B's switches", arrays["what_a_where_b"]),
        projection_tile("A, switches ignored", arrays["no_where_a"]),
        Tile("B", display_image(b)), projection_tile("B projected", arrays["recon_b"]),
        projection_tile("B's what, A's switches", arrays["what_b_where_a"]),
        projection_tile("B, switches ignored", arrays["no_where_b"]),
    ]


def network_unit_tiles(view) -> list[Tile]:
    """The unit view's pictures for a network (a core.analysis.UnitView): the unit's deconvnet decoding through the
    image's switches and the whole top stage's, each on its own signed scale."""
    return [projection_tile("deconvnet decoding of this unit", view.decoding),
            projection_tile("top stage projected", view.recon)]


def grey_centred(projections: np.ndarray) -> np.ndarray:
    """Projections (..., C, H, W) on one shared signed scale mapped to [0, 1], 0 at mid-grey (their largest |value|
    at 0 or 1), for pictures that expect images (a swap matrix)."""
    scale = max(float(np.abs(projections).max(initial=0.0)), 1e-6)
    return np.clip(0.5 + 0.5 * projections.astype(np.float32) / scale, 0.0, 1.0)
