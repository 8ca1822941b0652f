"""Keys and marks for the where pictures: the where key as a PNG (each cell of a pooling window in its colour, and
the swatches of a tie and a faded switch) and the outline that marks the chosen map of a mosaic."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from core.analysis.render import _DIM, HIGHLIGHT_RGB, TIE_RGB, Mosaic, _font, where_legend

__all__ = ["where_key_png", "outline_tile"]


def where_key_png(pool_size: int, continuous: bool = False, fade: bool = True) -> bytes:
    """The where key as a PNG: one pooling window with each cell's colour and (row, col), and swatches for a tie
    and (with `fade`) a switch whose what is near 0. Soft wheres show the smooth ramp between the corners."""
    font, small = _font(12), _font(11)
    cell = 34 if pool_size <= 3 else 24
    side = pool_size * cell
    swatches = [("tie: no cell chosen", TIE_RGB)] + ([("what near 0 (faded)", _DIM)] if fade else [])
    width, height = max(side + 16 + 150, 250), max(side, 22 * len(swatches)) + 30
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((0, 0), "where: the switch's cell in its window", fill="black", font=font)
    pixels = (where_legend(pool_size, continuous, cell) * 255).round().astype(np.uint8)
    canvas.paste(Image.fromarray(pixels), (0, 20))
    if not continuous:
        for row in range(pool_size):
            for col in range(pool_size):
                draw.text((col * cell + cell // 2, 20 + row * cell + cell // 2), f"{row},{col}", fill="white",
                          font=small, anchor="mm")
    for index, (label, rgb) in enumerate(swatches):
        top = 22 + index * 24
        color = tuple(int(round(v * 255)) for v in rgb)
        draw.rectangle((side + 12, top, side + 30, top + 18), fill=color, outline=(150, 150, 150))
        draw.text((side + 36, top + 9), label, fill="black", font=small, anchor="lm")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def outline_tile(layout: Mosaic, picture: np.ndarray, channel: int, color: np.ndarray = HIGHLIGHT_RGB) -> np.ndarray:
    """A copy of a mosaic picture (R, W, 3) with the gap pixels around `channel`'s tile painted `color`, so the
    chosen map is marked without covering any of it."""
    out = np.array(picture, dtype=np.float32, copy=True)
    top, left = layout.origin(channel)
    h, w = layout.tile
    r0, r1 = max(top - 1, 0), min(top + h, out.shape[0] - 1)
    c0, c1 = max(left - 1, 0), min(left + w, out.shape[1] - 1)
    for r in (r0, r1):
        if r in (top - 1, top + h):
            out[r, c0:c1 + 1] = color
    for c in (c0, c1):
        if c in (left - 1, left + w):
            out[r0:r1 + 1, c] = color
    return out
