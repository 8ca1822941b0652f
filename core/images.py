"""Safe decoding of an uploaded picture into a model input.

`decode_image(data, channels=1, size=28)` turns the bytes of a PNG / JPEG / GIF / BMP / TIFF / WebP file into a
float tensor (channels, size, size) in [0, 1], or raises `ImageDecodeError` (a ValueError) whose message is one
line saying why: empty file, not an image, truncated or corrupt, over `MAX_PIXELS` (a decompression bomb is
refused from its header, before any pixel is decoded), or animated. Every pixel format is converted, not
rejected: palette (with or without transparency), grayscale + alpha, RGBA (composited on black, the
background of the digits datasets), 16- and 32-bit integer, float, CMYK, YCbCr.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["MAX_PIXELS", "ImageDecodeError", "decode_image", "to_model_input"]

MAX_PIXELS = 20_000_000  # 20 megapixels: plenty for a photo of a digit, far below what could exhaust memory


class ImageDecodeError(ValueError):
    """An upload that cannot be used as an image; the message is one line saying why."""


def decode_image(data: bytes, *, channels: int = 1, size: int = 28, invert: bool | None = None,
                 name: str = "uploaded file") -> torch.Tensor:
    """Bytes of an image file -> float tensor (channels, size, size) in [0, 1].

    The picture is letterboxed (padded to a square with the background, aspect kept) and resized with bilinear
    filtering. `invert`: True / False forces it; None inverts only a 1-channel result whose border is mostly
    light (a dark digit on paper), since the digit datasets are light strokes on black.
    """
    pixels = read_pixels(data, name=name)  # (H, W, 3) or (H, W, 1) float32 in [0, 1]
    return to_model_input(pixels, channels=channels, size=size, invert=invert)


def read_pixels(data: bytes, *, name: str = "uploaded file") -> np.ndarray:
    """Bytes of an image file -> (H, W, 1) grayscale or (H, W, 3) RGB float32 in [0, 1]. Validates everything."""
    if not data:
        raise ImageDecodeError(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # never decode a bomb half-way
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(f"{name}: the image is too large (over {MAX_PIXELS // 1_000_000} megapixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageDecodeError(f"{name}: not an image PIL can read (expected PNG, JPEG, GIF, BMP, TIFF or WebP)"
                               ) from None
    width, height = image.size
    if width * height > MAX_PIXELS:  # from the header alone, before any pixel is decoded
        raise ImageDecodeError(f"{name}: the image is too large ({width}x{height} = {width * height / 1e6:.1f} "
                               f"megapixels; at most {MAX_PIXELS // 1_000_000})")
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{name}: the image has no pixels ({width}x{height})")
    frames = getattr(image, "n_frames", 1)
    if getattr(image, "is_animated", False) or frames > 1:
        raise ImageDecodeError(f"{name}: animated images are not supported ({frames} frames); upload one frame "
                               "as PNG or JPEG")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)  # a phone photo's rotation flag
    except Exception as exc:  # noqa: BLE001 - every decoder failure means the same thing to the user
        raise ImageDecodeError(f"{name}: the image data is truncated or corrupt ({_first_line(exc)})") from None
    return _to_float(image)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _to_float(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 1) or (H, W, 3) float32 in [0, 1]; alpha is composited on black."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):  # 16/32-bit integer or float grayscale
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if mode == "I" and values.max(initial=0) > 65535:
            peak = float(values.max())
        if mode == "F":
            peak = max(1.0, float(np.nanmax(values, initial=0)))
        return np.clip(np.nan_to_num(values / peak), 0.0, 1.0).astype(np.float32)[..., None]  # (H, W, 1)
    if mode == "P":  # palette: its transparency, if any, becomes alpha
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode in ("1", "L"):
        image = image.convert("L")
    elif mode == "LA":
        pass
    elif mode not in ("RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV, RGBX, RGBa, La, ...
        image = image.convert("RGBA" if "A" in mode or "a" in mode else "RGB")
    values = np.asarray(image, dtype=np.float32) / 255.0  # (H, W) or (H, W, k)
    if values.ndim == 2:
        return values[..., None]  # (H, W, 1)
    if image.mode in ("LA", "RGBA"):
        values = values[..., :-1] * values[..., -1:]  # composite on black: (H, W, k-1)
    return values


def to_model_input(pixels: np.ndarray, *, channels: int, size: int, invert: bool | None = None) -> torch.Tensor:
    """(H, W, 1|3) float in [0, 1] -> (channels, size, size) tensor: channel conversion, letterbox, resize."""
    if pixels.shape[-1] == 3 and channels == 1:
        pixels = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None]  # ITU-R 601 luma: (H, W, 1)
    elif pixels.shape[-1] == 1 and channels == 3:
        pixels = np.repeat(pixels, 3, axis=-1)  # (H, W, 3)
    elif pixels.shape[-1] != channels:
        raise ImageDecodeError(f"cannot convert {pixels.shape[-1]} image channels to the model's {channels}")
    if invert is None:
        invert = channels == 1 and _border_mean(pixels) > 0.5
    if invert:
        pixels = 1.0 - pixels
    height, width = pixels.shape[:2]
    side = max(height, width)
    square = np.zeros((side, side, channels), dtype=np.float32)  # letterbox on the (dark) background
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = pixels
    planes = [Image.fromarray(np.ascontiguousarray(square[..., c])) for c in range(channels)]  # mode 'F' each
    resized = [np.asarray(plane.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0))
               for plane in planes]  # each (size, size)
    return torch.from_numpy(np.clip(np.stack(resized), 0.0, 1.0).astype(np.float32))  # (C, size, size)


def _border_mean(pixels: np.ndarray) -> float:
    border = np.concatenate([pixels[0].ravel(), pixels[-1].ravel(), pixels[:, 0].ravel(), pixels[:, -1].ravel()])
    return float(border.mean())
