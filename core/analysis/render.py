"""Numpy helpers that turn model tensors into pictures: mosaics, where colours, arrows, PNG panels.

Pure functions of numpy arrays (no Streamlit, no plotting library), so the dashboard only arranges their output
and the benchmark and tests can call them directly.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.analysis.lens import window_ties

__all__ = [
    "Mosaic", "mosaic", "mosaic_columns", "where_colors", "where_mosaic", "where_legend",
    "display_image", "diverging_rgb", "Tile", "difference_tile", "stage_difference", "recon_tiles", "swap_tiles",
    "panel_png", "print_png", "swap_grid", "sequential_rgb", "tile_rgb", "crisp_pixels", "side_by_side", "unit_tiles",
    "tile_targets", "padded_tiles", "TIE_RGB", "HIGHLIGHT_RGB",
]

# Colours of the four corners of a pooling window (row, col): (0, 0), (0, 1), (1, 0), (1, 1) as fractions.
# A where at (row, col) gets the bilinear blend of the corners, so hard switches get distinct colours and soft
# (continuous) offsets get the colour in between.
_CORNERS = np.array([
    [[0.16, 0.44, 0.96], [0.98, 0.70, 0.08]],  # top-left blue, top-right amber
    [[0.90, 0.16, 0.40], [0.16, 0.74, 0.38]],  # bottom-left crimson, bottom-right green
], dtype=np.float32)
_DIM = np.array([0.12, 0.12, 0.14], dtype=np.float32)  # colour of a switch whose what is zero
# A tie (the window's maximum occurs more than once) chose no cell: light grey, unlike any corner and unlike the dark
# of a faded switch, so it never reads as "top left" (the cell max pooling's scan order returns there).
TIE_RGB = np.array([0.80, 0.80, 0.80], dtype=np.float32)
HIGHLIGHT_RGB = np.array([0.0, 0.84, 1.0], dtype=np.float32)  # the chosen tile's outline in a mosaic
_GAP = np.array([1.0, 1.0, 1.0], dtype=np.float32)  # padding between mosaic tiles (white, like the page)


@dataclass
class Mosaic:
    """C maps tiled into one picture, row-major, with `pad` pixels between tiles.

    image: (R, W) float with NaN in the gaps, or (R, W, 3) float RGB with white gaps.
    channel: (R, W) int, the channel each pixel shows (-1 in the gaps), for hover text.
    """

    image: np.ndarray
    channel: np.ndarray
    columns: int
    rows: int
    tile: tuple[int, int]  # (h, w) of one map
    pad: int

    def origin(self, channel: int) -> tuple[int, int]:
        """(top, left) pixel of `channel`'s tile."""
        row, col = divmod(channel, self.columns)
        return row * (self.tile[0] + self.pad), col * (self.tile[1] + self.pad)


def mosaic_columns(count: int) -> int:
    """A power of two near sqrt(count): 32 -> 8 (4 rows), 64 -> 8, 128 -> 16 (8 rows); wider than tall."""
    if count <= 1:
        return 1
    return min(count, 2 ** math.ceil(math.log2(math.sqrt(count))))


def mosaic(maps: np.ndarray, columns: int | None = None, pad: int = 1) -> Mosaic:
    """(C, h, w) or (C, h, w, 3) -> Mosaic with `columns` tiles per row (default `mosaic_columns(C)`)."""
    if maps.ndim not in (3, 4):
        raise ValueError(f"expected maps (C, h, w) or (C, h, w, 3), got shape {maps.shape}")
    count, h, w = maps.shape[:3]
    columns = columns or mosaic_columns(count)
    rows = math.ceil(count / columns)
    height, width = rows * (h + pad) - pad, columns * (w + pad) - pad
    rgb = maps.ndim == 4
    image = np.empty((height, width, 3) if rgb else (height, width), dtype=np.float32)
    image[...] = _GAP if rgb else np.nan
    channel = np.full((height, width), -1, dtype=np.int32)
    layout = Mosaic(image, channel, columns, rows, (h, w), pad)
    for index in range(count):
        top, left = layout.origin(index)
        image[top:top + h, left:left + w] = maps[index]
        channel[top:top + h, left:left + w] = index
    return layout


def where_colors(offsets: np.ndarray, pool_size: int, strength: np.ndarray | None = None,
                 tied: np.ndarray | None = None) -> np.ndarray:
    """Where offsets (..., 2) as (row, col) inside a pool_size window -> RGB (..., 3) float in [0, 1].

    `strength` (...,) in [0, 1] fades each switch towards dark grey, so weak switches do not draw the eye. `tied`
    (...,) bool paints ties light grey (`TIE_RGB`): their window chose no cell, so they carry no position.
    """
    span = max(pool_size - 1, 1)
    frac = np.clip(offsets.astype(np.float32) / span, 0.0, 1.0)  # (..., 2) in [0, 1]
    r, c = frac[..., 0:1], frac[..., 1:2]  # (..., 1) each
    colors = ((1 - r) * (1 - c) * _CORNERS[0, 0] + (1 - r) * c * _CORNERS[0, 1]
              + r * (1 - c) * _CORNERS[1, 0] + r * c * _CORNERS[1, 1])  # (..., 3)
    if strength is not None:
        s = np.clip(strength, 0.0, 1.0)[..., None].astype(np.float32)
        colors = s * colors + (1 - s) * _DIM
    if tied is not None:
        colors = np.where(np.asarray(tied, dtype=bool)[..., None], TIE_RGB, colors).astype(np.float32)
    return colors


def where_mosaic(offsets: np.ndarray, what: np.ndarray, pool_size: int, *, fade: bool = True,
                 columns: int | None = None, tied: np.ndarray | None = None) -> tuple[Mosaic, np.ndarray]:
    """A stage's where maps as one RGB mosaic, plus per-pixel hover data.

    offsets: (C, h, w, 2) (row, col) in the window; what: (C, h, w); tied (C, h, w) bool: windows whose maximum
    repeats, painted `TIE_RGB` (no position). With `fade`, a switch fades to dark grey as its what goes to 0 (full
    colour from half the stage's largest what up).
    -> (Mosaic of (C, h, w, 3) colours, custom (R, W, 6) float: channel, cell row, cell col, switch row,
    switch col, what; NaN in the gaps).
    """
    strength = None
    if fade:
        peak = float(what.max(initial=0.0))
        strength = np.clip(what / (0.5 * peak), 0.0, 1.0) if peak > 0 else np.zeros_like(what)
    layout = mosaic(where_colors(offsets, pool_size, strength, tied), columns)
    count, h, w = what.shape
    rows, cols = np.indices((h, w))  # (h, w) each
    custom = np.full(layout.channel.shape + (6,), np.nan, dtype=np.float32)
    for index in range(count):
        top, left = layout.origin(index)
        cell = np.stack([np.full((h, w), index), rows, cols, offsets[index, ..., 0], offsets[index, ..., 1],
                         what[index]], axis=-1)  # (h, w, 6)
        custom[top:top + h, left:left + w] = cell
    return layout, custom


def where_legend(pool_size: int, continuous: bool = False, cell: int = 24) -> np.ndarray:
    """The key of `where_colors`: one pooling window, (pool_size*cell, pool_size*cell, 3) float RGB.

    Hard: pool_size x pool_size flat cells. Continuous (soft where): a smooth ramp over the window.
    """
    side = pool_size * cell
    if continuous:
        grid = (np.arange(side, dtype=np.float32) + 0.5) / side * pool_size - 0.5  # pixel -> offset
    else:
        grid = np.repeat(np.arange(pool_size, dtype=np.float32), cell)  # (side,)
    offsets = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1)  # (side, side, 2) as (row, col)
    return where_colors(offsets, pool_size)


def display_image(image: np.ndarray) -> np.ndarray:
    """(C, H, W) model image -> (H, W) grayscale or (H, W, 3) RGB float in [0, 1], ready to draw."""
    if image.ndim == 2:
        return np.clip(image, 0.0, 1.0)
    if image.shape[0] == 1:
        return np.clip(image[0], 0.0, 1.0)
    if image.shape[0] == 3:
        return np.clip(np.transpose(image, (1, 2, 0)), 0.0, 1.0)
    raise ValueError(f"expected an image (1|3, H, W), got shape {image.shape}")


def diverging_rgb(values: np.ndarray, scale: float) -> np.ndarray:
    """Signed (H, W) -> RGB (H, W, 3): blue for negative, white at 0, red for positive; |v| = scale saturates."""
    t = np.clip(values / (scale if scale > 0 else 1.0), -1.0, 1.0)[..., None].astype(np.float32)
    red, blue, white = np.array([0.80, 0.10, 0.15]), np.array([0.10, 0.30, 0.80]), np.ones(3)
    return np.where(t >= 0, white + t * (red - white), white - t * (blue - white)).astype(np.float32)


def swap_grid(images: np.ndarray, recons: np.ndarray, pad: int = 1) -> np.ndarray:
    """A swap matrix as one picture: row 0 holds the where sources, column 0 the what sources.

    images: (K, C, H, W); recons: (K, K, C, H, W), cell (i, j) = what of i with where of j.
    -> ((K+1)(H+pad), (K+1)(W+pad)) or (..., 3) float, NaN / white in the gaps and the empty corner.
    """
    k = images.shape[0]
    tiles = [display_image(np.full_like(images[0], np.nan))]  # empty corner
    tiles += [display_image(image) for image in images]  # where sources along the top
    for i in range(k):
        tiles += [display_image(images[i])] + [display_image(recons[i, j]) for j in range(k)]
    return mosaic(np.stack(tiles), columns=k + 1, pad=pad).image


def _dejavu() -> str | None:
    """DejaVu Sans as matplotlib (a requirement) ships it, found without importing matplotlib: it has the glyphs
    titles need (×, −, ÷), which Pillow's built-in font lacks."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(path) if path.is_file() else None


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    path = _dejavu()
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


@dataclass
class Tile:
    """One titled picture of a panel: an image in [0, 1], or a signed map drawn on a diverging scale."""

    title: str
    image: np.ndarray  # (H, W) or (H, W, 3)
    signed: bool = False
    scale: float = 1.0  # |value| that saturates a signed map


def difference_tile(title: str, image: np.ndarray, reference: np.ndarray) -> Tile:
    """image - reference for two model images (C, H, W) (averaged over channels), as a signed tile."""
    diff = (image.astype(np.float32) - reference.astype(np.float32)).mean(0)  # (H, W)
    return Tile(title, diff, signed=True, scale=max(float(np.abs(diff).max(initial=0.0)), 1e-6))


def stage_difference(hidden: np.ndarray, what: np.ndarray) -> np.ndarray:
    """hidden - what for one stage's maps (C, h, w): what the L2M term penalises, per position."""
    return hidden.astype(np.float32) - what.astype(np.float32)


def recon_tiles(image: np.ndarray, recon: np.ndarray) -> list[Tile]:
    """Input, reconstruction and their difference, from (C, H, W) arrays."""
    return [Tile("input", display_image(image)), Tile("reconstruction", display_image(recon)),
            difference_tile("recon − input", recon, image)]


def swap_tiles(a: np.ndarray, b: np.ndarray, result) -> list[Tile]:
    """The Swap page's panel from A, B (C, H, W) and a core.analysis.SwapResult (tensors on any device)."""
    arrays = {name: getattr(result, name).detach().float().cpu().numpy()
              for name in ("recon_a", "recon_b", "what_a_where_b", "what_b_where_a", "no_where_a", "no_where_b")}
    return [
        Tile("A", display_image(a)), Tile("A reconstructed", display_image(arrays["recon_a"])),
        Tile("A's content, B's switches", display_image(arrays["what_a_where_b"])),
        Tile("A, switches ignored", display_image(arrays["no_where_a"])),
        difference_tile("swapped − A reconstructed", arrays["what_a_where_b"], arrays["recon_a"]),
        Tile("B", display_image(b)), Tile("B reconstructed", display_image(arrays["recon_b"])),
        Tile("B's content, A's switches", display_image(arrays["what_b_where_a"])),
        Tile("B, switches ignored", display_image(arrays["no_where_b"])),
        difference_tile("swapped − B reconstructed", arrays["what_b_where_a"], arrays["recon_b"]),
    ]


def print_png(tiles: list[Tile], columns: int, *, width_in: float = 3.5, dpi: int = 300) -> bytes:
    """`panel_png` at print resolution: model pixels scaled so the panel is at least `width_in` inches wide at `dpi`
    (a journal column: 3.5 in at 300 dpi, 1,050 px), with the resolution written in the PNG."""
    h, w = tiles[0].image.shape[:2]
    scale = max(1, math.ceil(width_in * dpi / (columns * (w + 2))))  # the panel's margins are small against w
    return panel_png(tiles, columns, scale=scale, dpi=dpi)


def panel_png(tiles: list[Tile], columns: int, scale: int = 6, dpi: int | None = None) -> bytes:
    """Titled tiles -> PNG bytes. Pixels are upscaled by `scale` without smoothing (crisp model pixels); `dpi`
    written in the file when given."""
    font = _font(13)
    title_height, margin = 22, 10
    h, w = tiles[0].image.shape[:2]
    cell_w = max(w * scale, int(draw_width(font, max((t.title for t in tiles), key=len))) + 4)
    bar_space = 28 if any(t.signed for t in tiles) else 0  # a signed tile gets its colour scale under it
    cell_h = h * scale + title_height + bar_space
    rows = math.ceil(len(tiles) / columns)
    canvas = Image.new("RGB", (columns * (cell_w + margin) + margin, rows * (cell_h + margin) + margin), "white")
    draw = ImageDraw.Draw(canvas)
    for index, tile in enumerate(tiles):
        if tile.signed:
            rgb = diverging_rgb(tile.image if tile.image.ndim == 2 else tile.image.mean(-1), tile.scale)
        else:
            rgb = np.repeat(tile.image[..., None], 3, axis=-1) if tile.image.ndim == 2 else tile.image
        pixels = (np.clip(np.nan_to_num(rgb, nan=1.0), 0, 1) * 255).round().astype(np.uint8)  # (H, W, 3)
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)  # (H*s, W*s, 3)
        row, col = divmod(index, columns)
        left, top = margin + col * (cell_w + margin), margin + row * (cell_h + margin)
        draw.text((left + cell_w // 2, top + title_height // 2), tile.title, fill="black", font=font, anchor="mm")
        canvas.paste(Image.fromarray(pixels), (left + (cell_w - w * scale) // 2, top + title_height))
        if tile.signed:
            _signed_bar(canvas, draw, (left + (cell_w - w * scale) // 2, top + title_height + h * scale + 4),
                        w * scale, tile.scale)
    buffer = io.BytesIO()
    options = {"dpi": (dpi, dpi)} if dpi else {}
    canvas.save(buffer, format="PNG", compress_level=1, **options)  # level 1: a few times faster than 6
    return buffer.getvalue()


def _signed_bar(canvas: Image.Image, draw: ImageDraw.ImageDraw, origin: tuple[int, int], width: int,
                scale: float) -> None:
    """The diverging scale of a signed tile: a bar from -scale (blue) through 0 (white) to +scale (red), labelled."""
    ramp = np.linspace(-scale, scale, max(width, 2), dtype=np.float32)[None, :].repeat(7, axis=0)  # (7, width)
    pixels = (diverging_rgb(ramp, scale) * 255).round().astype(np.uint8)
    left, top = origin
    canvas.paste(Image.fromarray(pixels), (left, top))
    draw.rectangle((left, top, left + width - 1, top + 6), outline=(170, 170, 170))
    font = _font(11)
    short = f"{scale:.2g}" if scale < 100 else f"{scale:.0f}"  # 170, not 1.7e+02: three labels share a tile's width
    for text, x, anchor in ((f"−{short}", left, "lt"), ("0", left + width // 2, "mt"),
                            (f"+{short}", left + width, "rt")):
        draw.text((x, top + 9), text, fill=(60, 60, 60), font=font, anchor=anchor)


def padded_tiles(tiles: list[Tile]) -> list[Tile]:
    """Tiles of different sizes made one size (the largest height and width) for one panel_png, each picture in the
    top left of its cell and the rest white (NaN); signed tiles are turned into their RGB first."""
    pictures = [tile_rgb(t) for t in tiles]  # (H_i, W_i, 3)
    height, width = max(p.shape[0] for p in pictures), max(p.shape[1] for p in pictures)
    out = []
    for tile, picture in zip(tiles, pictures):
        cell = np.full((height, width, 3), np.nan, dtype=np.float32)
        cell[:picture.shape[0], :picture.shape[1]] = picture
        out.append(Tile(tile.title, cell))
    return out


def draw_width(font: ImageFont.ImageFont, text: str) -> float:
    left, _, right, _ = font.getbbox(text)
    return right - left


# ---- single units (the Layers page's unit view) -------------------------------------------------------------------

# Viridis, the colour scale of the mosaics (matplotlib's, as Plotly ships it), so a unit's PNG pictures read the same.
_VIRIDIS = np.array([[0x44, 0x01, 0x54], [0x48, 0x28, 0x78], [0x3e, 0x49, 0x89], [0x31, 0x68, 0x8e],
                     [0x26, 0x82, 0x8e], [0x1f, 0x9e, 0x89], [0x35, 0xb7, 0x79], [0x6e, 0xce, 0x58],
                     [0xb5, 0xde, 0x2b], [0xfd, 0xe7, 0x25]], dtype=np.float32) / 255


def sequential_rgb(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """(H, W) -> RGB (H, W, 3) on Viridis from `low` (dark purple) to `high` (yellow); NaN stays NaN."""
    t = np.clip((values.astype(np.float32) - low) / (high - low if high > low else 1.0), 0.0, 1.0)  # (H, W)
    position = np.nan_to_num(t) * (len(_VIRIDIS) - 1)
    below = np.minimum(position.astype(int), len(_VIRIDIS) - 2)  # (H, W) index of the anchor below
    frac = (position - below)[..., None]  # (H, W, 1)
    rgb = (1 - frac) * _VIRIDIS[below] + frac * _VIRIDIS[below + 1]  # (H, W, 3)
    rgb[np.isnan(values)] = np.nan
    return rgb


def tile_rgb(tile: Tile) -> np.ndarray:
    """A Tile as RGB (H, W, 3) float: signed maps on the diverging scale, grayscale repeated; NaN kept."""
    if tile.signed:
        return diverging_rgb(tile.image if tile.image.ndim == 2 else tile.image.mean(-1), tile.scale)
    return np.repeat(tile.image[..., None], 3, axis=-1) if tile.image.ndim == 2 else tile.image


def crisp_pixels(picture: np.ndarray, side: int) -> np.ndarray:
    """(H, W) or (H, W, 3) float in [0, 1] -> uint8 with each pixel a k x k block, k = round(side / H) (at least 1),
    so a browser shows model pixels as sharp squares at about `side` pixels high. NaN becomes white."""
    scale = max(1, round(side / picture.shape[0]))
    pixels = (np.clip(np.nan_to_num(picture, nan=1.0), 0, 1) * 255).round().astype(np.uint8)
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1)  # (H*k, W*k[, 3])


def side_by_side(pictures: list[np.ndarray], pad: int = 1, vertical: bool = False) -> np.ndarray:
    """Pictures of one shape, (H, W) or (H, W, 3), in a row (or a column) with `pad` white (NaN) pixels between."""
    return mosaic(np.stack(pictures), columns=1 if vertical else len(pictures), pad=pad).image


def unit_tiles(view, pool_size: int) -> list[Tile]:
    """The Layers page's unit view from a core.analysis.UnitView: the channel's pre-pool, what (one Viridis
    scale from 0 or the map's minimum to its maximum), where (coloured like `where_colors`, faded where the what is
    small), its decoding, its contribution (signed) and the whole image's reconstruction."""
    low = min(float(np.nanmin(view.pre_pool)), 0.0)
    high = max(float(np.nanmax(view.pre_pool)), float(np.nanmax(view.what)), low + 1e-6)
    peak = float(view.what.max(initial=0.0))
    strength = np.clip(view.what / (0.5 * peak), 0.0, 1.0) if peak > 0 else np.zeros_like(view.what)
    contribution = difference_tile("", view.contribution, np.zeros_like(view.contribution))
    return [
        Tile(f"pre-pool, max {high:.2g}", sequential_rgb(view.pre_pool, low, high)),
        Tile(f"what, max {peak:.2g}", sequential_rgb(view.what, low, high)),
        Tile(f"where, {pool_size}×{pool_size} windows (grey: tie)",
             where_colors(view.where_offset, pool_size, strength, window_ties(view.pre_pool, pool_size))),
        Tile("decoding of this unit", display_image(view.decoding)),
        Tile(f"contribution ±{contribution.scale:.2g}", contribution.image, signed=True,
             scale=contribution.scale),
        Tile("full reconstruction", display_image(view.recon)),
    ]


def tile_targets(layout: Mosaic, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Click targets of a mosaic of `maps` (C, h, w): the (x, y) centre of each channel's tile in mosaic pixels and
    the channel's largest value, each (C,), in channel order."""
    count = maps.shape[0]
    tops, lefts = np.array([layout.origin(channel) for channel in range(count)], dtype=np.float32).T  # (C,) each
    x = lefts + (layout.tile[1] - 1) / 2
    y = tops + (layout.tile[0] - 1) / 2
    return x, y, maps.reshape(count, -1).max(axis=1)
