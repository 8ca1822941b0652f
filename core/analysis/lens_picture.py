"""The pooling lens as pictures: each panel one RGB raster, the marks drawn into it.

A browser draws one picture far faster than hundreds of vector marks (a Plotly square per switch, a rectangle per
window), so the lens's panels are rasters at `pixel` screen pixels per model pixel, in the lens's one coordinate
system (pre-pool pixels): window (r, c) is the same square in every panel.

Marks, as `app.lens`'s key says them: window borders (light lines), the switch (a red square around the cell a
window passed up; for soft pooling a red ring at the soft-argmax position), a tie (a grey veil over the window: no
cell was chosen), and on Swap the windows whose switch moved between two images (an orange outline).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.analysis.lens import PoolingLens
from core.analysis.render import sequential_rgb

__all__ = ["LensPictures", "lens_pictures", "picture_png", "GRID_RGBA", "SWITCH_RGB", "TIE_RGBA", "MOVED_RGB",
           "LARGE_PIXEL", "SMALL_PIXEL"]

GRID_RGBA = (1.0, 1.0, 1.0, 0.45)  # window borders: white, half see-through
SWITCH_RGB = (1.0, 0.165, 0.165)  # the switch: red, visible on Viridis' purple and yellow
TIE_RGBA = (0.82, 0.82, 0.82, 0.6)  # the veil over a tie: grey, as ties are in the where mosaics
MOVED_RGB = (1.0, 0.55, 0.0)  # Swap: a window whose switch differs between A and B
LARGE_PIXEL = 16  # raster pixels per model pixel of the large panel (drawn about 410 px wide for a 28 x 28 map)
SMALL_PIXEL = 8  # ... of the small panels
MAX_RASTER_SIDE = 1024  # raster pixels a side at most: a 224 x 224 map (ImageNet nets) gets 4 per model pixel


@dataclass
class LensPictures:
    """Each panel as RGB uint8 (H * pixel, W * pixel, 3); (H, W) is the pre-pool map's size."""

    pre_pool: np.ndarray  # the map the pool read, with windows, switches and ties
    what: np.ndarray  # each pooled value over the window it came from, with windows
    unpooled: np.ndarray  # the what put back by the model's unpooling, with windows
    pixel: int  # raster pixels per model pixel of `pre_pool`
    small_pixel: int  # ... of `what` and `unpooled`


def _raster(values: np.ndarray, low: float, high: float, pixel: int) -> np.ndarray:
    """(H, W) values -> float RGB (H * pixel, W * pixel, 3) on Viridis; NaN white."""
    rgb = np.nan_to_num(sequential_rgb(values, low, high), nan=1.0)  # (H, W, 3)
    return rgb.repeat(pixel, axis=0).repeat(pixel, axis=1)  # (H*p, W*p, 3)


def _blend(canvas: np.ndarray, mask: np.ndarray, rgb, alpha: float = 1.0) -> None:
    canvas[mask] = (1 - alpha) * canvas[mask] + alpha * np.asarray(rgb, dtype=canvas.dtype)


def _box_mask(mask: np.ndarray, top: int, left: int, size: int, width: int) -> None:
    """Mark the outline of one square on `mask` (many boxes, one blend: a full-canvas blend per box costs minutes
    on a 224 x 224 map's 12,544 windows)."""
    bottom, right = min(top + size, mask.shape[0]), min(left + size, mask.shape[1])
    inner = mask[top + width:bottom - width, left + width:right - width].copy()
    mask[top:bottom, left:right] = True
    mask[top + width:bottom - width, left + width:right - width] = inner


def _grid(canvas: np.ndarray, lens: PoolingLens, pixel: int) -> None:
    """Window borders: a 1-pixel line on each side of every window boundary (2 px where windows meet)."""
    span = lens.pool_size * pixel
    h, w = lens.windows
    mask = np.zeros(canvas.shape[:2], dtype=bool)
    for row in range(h + 1):
        mask[max(row * span - 1, 0):row * span + 1, : w * span] = True
    for col in range(w + 1):
        mask[: h * span, max(col * span - 1, 0):col * span + 1] = True
    _blend(canvas, mask, GRID_RGBA[:3], GRID_RGBA[3])


def _ties(canvas: np.ndarray, lens: PoolingLens, pixel: int) -> None:
    """A grey veil over each tied window, inset so the window's border still shows."""
    span, inset = lens.pool_size * pixel, max(2, pixel // 4)
    mask = np.zeros(canvas.shape[:2], dtype=bool)
    for row, col in np.argwhere(lens.tied):
        mask[row * span + inset:(row + 1) * span - inset, col * span + inset:(col + 1) * span - inset] = True
    _blend(canvas, mask, TIE_RGBA[:3], TIE_RGBA[3])


def _switches(canvas: np.ndarray, lens: PoolingLens, pixel: int) -> None:
    """A red square around each chosen cell (hard), or a red ring at the soft-argmax position (soft)."""
    width = max(2, pixel // 6)
    chosen = np.argwhere(~lens.tied)
    if lens.pooling != "soft":
        boxes = np.zeros(canvas.shape[:2], dtype=bool)
        for row, col in chosen:
            cell_row, cell_col = (int(v) for v in lens.switch[row, col])
            _box_mask(boxes, cell_row * pixel, cell_col * pixel, pixel, width)
        _blend(canvas, boxes, SWITCH_RGB)
        return
    ring = np.zeros(canvas.shape[:2], dtype=bool)
    radius = 0.42 * pixel
    reach = int(np.ceil(radius + width))
    for row, col in chosen:
        centre_row, centre_col = (lens.switch[row, col] + 0.5) * pixel  # model (row, col) -> raster centre
        top, left = max(int(centre_row) - reach, 0), max(int(centre_col) - reach, 0)
        bottom, right = min(int(centre_row) + reach + 1, ring.shape[0]), min(int(centre_col) + reach + 1, ring.shape[1])
        rows, cols = np.mgrid[top:bottom, left:right] + 0.5  # raster pixel centres near the ring
        ring[top:bottom, left:right] |= np.abs(np.hypot(rows - centre_row, cols - centre_col) - radius) <= width / 2
    _blend(canvas, ring, SWITCH_RGB)


def _what_over_windows(lens: PoolingLens) -> np.ndarray:
    """The what map in pre-pool pixels: value (r, c) over window (r, c); pixels no window covers are NaN."""
    s = lens.pool_size
    h, w = lens.windows
    spread = np.full(lens.pre_pool.shape, np.nan, dtype=np.float32)  # (H, W)
    spread[: h * s, : w * s] = np.kron(lens.what, np.ones((s, s), dtype=np.float32))
    return spread


def lens_pictures(lens: PoolingLens, low: float, high: float, *, moved: np.ndarray | None = None,
                  pixel: int = LARGE_PIXEL, small_pixel: int = SMALL_PIXEL) -> LensPictures:
    """The lens's three panels on one Viridis scale from `low` to `high`; `moved` (h, w) bool outlines windows in
    orange on the pre-pool panel (Swap: the switch differs from the other image's). A large map gets fewer raster
    pixels per model pixel (at most MAX_RASTER_SIDE a side); the pictures say how many (`pixel`, `small_pixel`)."""
    side = max(lens.pre_pool.shape)
    pixel = max(1, min(pixel, MAX_RASTER_SIDE // side))
    small_pixel = max(1, min(small_pixel, MAX_RASTER_SIDE // (2 * side)))
    pre = _raster(lens.pre_pool, low, high, pixel)
    _grid(pre, lens, pixel)
    _ties(pre, lens, pixel)
    _switches(pre, lens, pixel)
    if moved is not None:
        span = lens.pool_size * pixel
        outlines = np.zeros(pre.shape[:2], dtype=bool)
        for row, col in np.argwhere(moved):
            _box_mask(outlines, row * span, col * span, span, max(2, pixel // 5))
        _blend(pre, outlines, MOVED_RGB)
    what = _raster(_what_over_windows(lens), low, high, small_pixel)
    _grid(what, lens, small_pixel)
    unpooled = _raster(lens.unpooled, low, high, small_pixel)
    _grid(unpooled, lens, small_pixel)
    as_bytes = lambda rgb: (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)  # noqa: E731
    return LensPictures(as_bytes(pre), as_bytes(what), as_bytes(unpooled), pixel, small_pixel)


def picture_png(rgb: np.ndarray) -> bytes:
    """RGB uint8 (H, W, 3) -> PNG bytes, compressed lightly (fast to make; flat colours compress well anyway)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
