"""Safe decoding of an uploaded picture into a model input.

`decode_image(data, channels=1, size=28)` turns the bytes of a PNG / JPEG / GIF / BMP / TIFF / WebP file into a
float tensor (channels, size, size) in [0, 1], or raises `ImageDecodeError` (a ValueError) whose message is one
line saying why: empty file, not an image, truncated or corrupt, over `MAX_PIXELS` (a decompression bomb is
refused from its header, before any pixel is decoded), or animated. Every pixel format is converted, not
rejected: palette (with or without transparency), grayscale + alpha, RGBA (transparent pixels take the background
that keeps the ink visible: black under light ink, as in the datasets, white under dark ink), 16- and 32-bit
integer, float, CMYK, YCbCr.

`prepare_digit(pixels, size=28)` prepares a picture of one digit the way the MNIST digits were made (LeCun et al.,
"Gradient-based learning applied to document recognition", 1998, and the MNIST page): the ink, light or dark,
is found against the background and cropped to its bounding box, scaled (aspect kept) to fit a 20x20 box, and
placed in the 28x28 frame so that its centre of mass sits at the centre. `decode_digit(data)` is
`read_pixels` + `prepare_digit` for the bytes of a file or of a drawing. `enlarge` makes a crisp preview.

`prepare_product(pixels, size=28)` prepares a picture of one clothing item the way Fashion-MNIST's images were made
(Xiao, Rasul & Vollgraf, 2017, section 2): the plain background around the product is trimmed, the longest side
resized to 28, the shorter side padded to 28 with the product centred, and the intensities negated when the
background is light (products light on black). `PREPARATIONS` names each dataset's recipe; `decode_prepared` reads
a file and applies one.
"""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["MAX_PIXELS", "MAX_ASPECT", "MNIST_FRAME", "ImageDecodeError", "NoInkError", "decode_image", "read_pixels", "to_model_input",
           "decode_digit", "prepare_digit", "prepare_product", "decode_prepared", "PREPARATIONS", "preparation_for", "enlarge"]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 RGB -> grayscale
UPLOAD_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "DIB", "TIFF", "WEBP")  # whose header tells the decoded size
MAX_PIXELS = 20_000_000  # 20 megapixels: plenty for a photo of a digit, far below what could exhaust memory
MAX_ASPECT = 50  # longest side / shortest side: a 2,000,000 x 10 strip is no picture of a digit
MNIST_FRAME, MNIST_BOX = 28, 20  # an MNIST digit fits a 20x20 box inside its 28x28 frame
MIN_CONTRAST = 0.08  # ink must differ from the background by at least this much (of the 0..1 range) ...
NOISE_CONTRAST = 6.0  # ... and by this many times the background's noise (robust standard deviation)
INK_FRACTION = 0.25  # ink fainter than this share of the strongest ink is background: blur halo, JPEG ringing
BORDER_FRACTION = 0.03  # the border ring that samples the background: 3% of the shorter side, at least 1 pixel
PRODUCT_FLOOR = 0.06  # product pixels departing from the background by less than this share of the strongest are
#                        background (shadows, paper grain, JPEG ringing); the rest keep their graded intensity
PREPARATIONS = {  # dataset -> how its images were made, and so how an upload or a drawing is prepared for its models
    "mnist5k": "digit", "mnist": "digit", "fashion-mnist": "product",
}
_REDUCIBLE = ("L", "LA", "I", "F", "RGB", "RGBA", "CMYK", "YCbCr")  # modes Image.reduce takes
WORKING_SIDE = 1024  # a larger photo is first shrunk (area average) to this longer side: a 12 MP photo takes ~0.5 s


class ImageDecodeError(ValueError):
    """An upload that cannot be used as an image; the message is one line saying why."""


class NoInkError(ImageDecodeError):
    """A readable image in which no digit stands out from the background (blank, uniform or pure noise)."""


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
    if image.format not in UPLOAD_FORMATS:  # e.g. an .ico renamed .png: its header's size is not what it decodes to
        raise ImageDecodeError(f"{name}: the file holds {image.format or 'unknown'} data, not PNG, JPEG, GIF, BMP, "
                               "TIFF or WebP")
    width, height = image.size
    if width * height > MAX_PIXELS:  # from the header alone, before any pixel is decoded
        raise ImageDecodeError(f"{name}: the image is too large ({width}x{height} = {width * height / 1e6:.1f} "
                               f"megapixels; at most {MAX_PIXELS // 1_000_000})")
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{name}: the image has no pixels ({width}x{height})")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageDecodeError(f"{name}: the image is {width}x{height}, longer than {MAX_ASPECT} times its width; "
                               "crop it around the digit")
    if getattr(image, "is_animated", False):  # from the header and the next frame's: never count them all
        raise ImageDecodeError(f"{name}: animated or multi-page images are not supported; upload one frame as PNG "
                               "or JPEG")
    sixteen_bit = image.mode.startswith("I;16")
    try:
        image = _decode_small(image)
        image = ImageOps.exif_transpose(image)  # a phone photo's rotation flag
    except Exception as exc:  # noqa: BLE001 - every decoder failure means the same thing to the user
        raise ImageDecodeError(f"{name}: the image data is truncated or corrupt ({_first_line(exc)})") from None
    return _to_float(image, sixteen_bit=sixteen_bit)


def _decode_small(image: Image.Image) -> Image.Image:
    """Decode at most WORKING_SIDE on the longer side, the most any preparation uses: a JPEG is decoded at a
    reduced scale (`draft`), anything else is reduced right after decoding, in its own 8-bit mode, before any
    float copy (a 20-megapixel RGBA PNG then costs its 80 MB of pixels, not gigabytes of floats)."""
    width, height = image.size
    factor = math.ceil(max(width, height) / WORKING_SIDE)
    if factor > 1 and image.format == "JPEG":
        image.draft(image.mode, (math.ceil(width / factor), math.ceil(height / factor)))
    image.load()
    factor = math.ceil(max(image.size) / WORKING_SIDE)
    if factor > 1:
        if image.mode.startswith("I;16") or image.mode == "1":
            image = image.convert("I" if image.mode != "1" else "L")
        elif image.mode not in _REDUCIBLE:  # palette
            image = image.convert("RGBA" if "transparency" in image.info or "A" in image.mode else "RGB")
        image = image.reduce(factor)  # box filter: each output pixel the mean of factor x factor
    return image


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _to_float(image: Image.Image, *, sixteen_bit: bool = False) -> np.ndarray:
    """Any PIL mode -> (H, W, 1) or (H, W, 3) float32 in [0, 1]; alpha is composited on `_visible_background`."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):  # 16/32-bit integer or float grayscale
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if sixteen_bit or mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
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
        color, alpha = values[..., :-1], values[..., -1:]  # (H, W, k-1), (H, W, 1)
        values = color * alpha + _visible_background(color, alpha) * (1.0 - alpha)  # (H, W, k-1)
    return values


def _visible_background(color: np.ndarray, alpha: np.ndarray) -> float:
    """The background transparent pixels take: black under light ink (the datasets' own look), white under dark
    ink (black ink on a transparent PNG), judged by the opaque pixels' mean luma; black when nothing is opaque."""
    luma = color @ np.array(LUMA_WEIGHTS, dtype=np.float32) if color.shape[-1] == 3 else color[..., 0]  # (H, W)
    weight = float(alpha.sum())
    return 1.0 if weight > 0 and float((luma * alpha[..., 0]).sum()) / weight < 0.5 else 0.0


def to_model_input(pixels: np.ndarray, *, channels: int, size: int, invert: bool | None = None) -> torch.Tensor:
    """(H, W, 1|3) float in [0, 1] -> (channels, size, size) tensor: channel conversion, letterbox, resize."""
    if pixels.shape[-1] == 3 and channels == 1:
        pixels = pixels @ np.array(LUMA_WEIGHTS, dtype=np.float32)[:, None]  # ITU-R 601 luma: (H, W, 1)
    elif pixels.shape[-1] == 1 and channels == 3:
        pixels = np.repeat(pixels, 3, axis=-1)  # (H, W, 3)
    elif pixels.shape[-1] != channels:
        raise ImageDecodeError(f"cannot convert {pixels.shape[-1]} image channels to the model's {channels}")
    if invert is None:
        invert = channels == 1 and _border_mean(pixels) > 0.5
    if invert:
        pixels = 1.0 - pixels
    height, width = pixels.shape[:2]
    scale = size / max(height, width)  # resize first, then letterbox: no buffer larger than the picture itself
    target = (max(1, round(width * scale)), max(1, round(height * scale)))  # PIL's (width, height)
    planes = [Image.fromarray(np.ascontiguousarray(pixels[..., c], dtype=np.float32)) for c in range(channels)]
    resized = np.stack([np.asarray(plane.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0))
                        for plane in planes])  # (C, h, w), max(h, w) == size
    square = np.zeros((channels, size, size), dtype=np.float32)  # letterbox on the (dark) background
    top, left = (size - target[1]) // 2, (size - target[0]) // 2
    square[:, top:top + target[1], left:left + target[0]] = resized
    return torch.from_numpy(np.clip(square, 0.0, 1.0))  # (C, size, size)


def _border_mean(pixels: np.ndarray) -> float:
    border = np.concatenate([pixels[0].ravel(), pixels[-1].ravel(), pixels[:, 0].ravel(), pixels[:, -1].ravel()])
    return float(border.mean())


def decode_digit(data: bytes, *, size: int = MNIST_FRAME, invert: bool | None = None,
                 name: str = "uploaded file") -> torch.Tensor:
    """Bytes of an image file showing one digit -> (1, size, size) prepared like MNIST (see `prepare_digit`)."""
    return prepare_digit(read_pixels(data, name=name), size=size, invert=invert, name=name)


def prepare_digit(pixels: np.ndarray, *, size: int = MNIST_FRAME, invert: bool | None = None,
                  name: str = "image") -> torch.Tensor:
    """(H, W) or (H, W, 1|3) float in [0, 1] -> (1, size, size) float tensor, light ink on black, like MNIST.

    The ink is cropped to its bounding box, scaled (aspect kept) to fit a box of round(size * 20 / 28) pixels and
    placed in the size x size frame with its centre of mass at the centre (shifted by whole pixels, as MNIST's
    mean centre of mass is (14.0, 14.0) in pixel indices), moved only as far as keeps the box inside the frame.
    `invert`: True says the ink is dark on a light background, False light on dark; None finds out.
    Raises NoInkError (an ImageDecodeError) when no ink stands out from the background (a blank or uniform image).
    """
    gray = _shrink(_gray(pixels), WORKING_SIDE)  # (H, W), longer side at most WORKING_SIDE
    ink = ink_map(gray, invert=invert, name=name)  # (H, W) in [0, 1], background exactly 0
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    cropped = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # (h, w): the ink's bounding box
    digit = fit_in_box(cropped, box=max(1, round(size * MNIST_BOX / MNIST_FRAME)))  # (h', w'), max(h', w') == box
    return torch.from_numpy(place_by_centre_of_mass(digit, size=size))[None]  # (1, size, size)


def preparation_for(dataset: str | None, channels: int, size: int) -> str | None:
    """'digit', 'product' or None (plain letterbox) for a model of `dataset` with input channels x size x size."""
    style = PREPARATIONS.get(dataset or "")
    return style if style is not None and (channels, size) == (1, MNIST_FRAME) else None


def decode_prepared(data: bytes, style: str, *, size: int = MNIST_FRAME, invert: bool | None = None,
                    name: str = "uploaded file") -> torch.Tensor:
    """Bytes of an image file -> (1, size, size) prepared by `style` ('digit' or 'product')."""
    prepare = {"digit": prepare_digit, "product": prepare_product}[style]
    return prepare(read_pixels(data, name=name), size=size, invert=invert, name=name)


def prepare_product(pixels: np.ndarray, *, size: int = MNIST_FRAME, invert: bool | None = None,
                    name: str = "image") -> torch.Tensor:
    """(H, W) or (H, W, 1|3) float in [0, 1] -> (1, size, size) float tensor, the product light on black, like
    Fashion-MNIST: cropped to the product's bounding box, longest side resized to `size`, centred.

    The background is the border ring's median, as for digits; the product is whatever departs from it (light or
    dark; `invert` as in `prepare_digit`). Unlike a digit's strokes, a product keeps its graded intensities (its
    folds and prints): the departure is scaled so the strongest is 1, only the faintest (PRODUCT_FLOOR) is cut.
    Raises NoInkError when nothing stands out from the background.
    """
    gray = _shrink(_gray(pixels), WORKING_SIDE)  # (H, W)
    product, strongest = _departure(gray, invert=invert, name=name, subject="item")  # (H, W), > 0 on the product
    mask = _solid_ink(product, strongest, name=name, subject="item") > 0  # (H, W): its solid part, no specks
    contrast = float(np.quantile(product[mask], 0.99))
    product = np.clip((product / max(contrast, 1e-6) - PRODUCT_FLOOR) / (1 - PRODUCT_FLOOR), 0.0, 1.0)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    cropped = product[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # (h, w): the product's bounding box
    item = fit_in_box(cropped, box=size)  # (h', w'), max(h', w') == size
    frame = np.zeros((size, size), dtype=np.float32)
    top, left = (size - item.shape[0]) // 2, (size - item.shape[1]) // 2
    frame[top:top + item.shape[0], left:left + item.shape[1]] = item
    return torch.from_numpy(frame)[None]  # (1, size, size)


def _gray(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1|3) -> (H, W) float64 luma."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        return pixels @ np.array(LUMA_WEIGHTS)  # ITU-R 601 luma: (H, W)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        return pixels[..., 0]  # (H, W)
    if pixels.ndim != 2:
        raise ImageDecodeError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {pixels.shape}")
    return pixels


def _shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """(H, W) -> (H', W') with max(H', W') <= side, aspect kept, by area averaging; unchanged if already small."""
    height, width = gray.shape
    if max(height, width) <= side:
        return gray
    scale = side / max(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))  # PIL's (width, height)
    shrunk = Image.fromarray(gray.astype(np.float32)).resize(target, Image.Resampling.BOX)  # mode 'F'
    return np.asarray(shrunk, dtype=np.float64)


def ink_map(gray: np.ndarray, *, invert: bool | None = None, name: str = "image", subject: str = "digit") -> np.ndarray:
    """(H, W) grayscale in [0, 1] -> (H, W) ink in [0, 1]: 0 on the background, 1 on solid strokes.

    The background level and its noise come from the border ring (median and median absolute deviation), so
    grey paper, a dark canvas, blur and JPEG noise all read the same. The ink's polarity is the side on which it
    departs further from the background. Ink fainter than INK_FRACTION of the strongest is zeroed and the rest
    stretched to 0..1; isolated specks (fewer than 3 inked pixels in their 3x3 neighbourhood) are dropped, so
    noise does not enlarge the bounding box.
    """
    return _solid_ink(*_departure(gray, invert=invert, name=name, subject=subject), name=name, subject=subject)


def _departure(gray: np.ndarray, *, invert: bool | None, name: str, subject: str) -> tuple[np.ndarray, float]:
    """(how far each pixel departs from the background towards the ink's side (H, W), the strongest departure);
    NoInkError when that does not stand out from the background's noise."""
    border = _border(gray)
    background = float(np.median(border))
    noise = 1.4826 * float(np.median(np.abs(border - background)))  # robust standard deviation
    departure = _box_blur(gray - background)  # (H, W); a 3x3 mean, so a single noisy pixel is not the peak
    light, dark = float(departure.max()), float(-departure.min())
    if invert is None:
        invert = dark > light
    ink = background - gray if invert else gray - background  # (H, W), > 0 on the ink
    contrast = dark if invert else light
    if contrast < max(MIN_CONTRAST, NOISE_CONTRAST * noise):
        raise NoInkError(f"{name}: no {subject} found: the image is blank or too faint (ink contrast "
                         f"{contrast:.2f} against background noise {noise:.2f})")
    return ink, contrast


def _solid_ink(ink: np.ndarray, contrast: float, *, name: str, subject: str) -> np.ndarray:
    """The departure's solid part stretched to 0..1: below INK_FRACTION of `contrast` is background, specks go."""
    floor = INK_FRACTION * contrast
    ink = np.clip((ink - floor) / (contrast - floor), 0.0, 1.0)  # (H, W)
    inked = ink > 0
    ink = np.where(inked & (_box_blur(inked.astype(np.float64)) * 9 >= 3), ink, 0.0)  # (H, W), no specks
    if not ink.any():
        raise NoInkError(f"{name}: no {subject} found: only isolated specks stand out from the background")
    return ink


def _border(gray: np.ndarray) -> np.ndarray:
    """The pixels of the border ring, BORDER_FRACTION of the shorter side wide (at least 1): (K,)."""
    ring = max(1, round(BORDER_FRACTION * min(gray.shape)))
    inside = np.zeros(gray.shape, dtype=bool)
    inside[ring:-ring, ring:-ring] = True
    return gray[~inside]


def _box_blur(values: np.ndarray) -> np.ndarray:
    """3x3 mean with edge replication: (H, W) -> (H, W)."""
    padded = np.pad(values, 1, mode="edge")  # (H + 2, W + 2)
    height, width = values.shape
    return sum(padded[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)) / 9.0


def fit_in_box(ink: np.ndarray, *, box: int) -> np.ndarray:
    """(h, w) -> (h', w') with max(h', w') == box and the aspect kept. Shrinking averages the area each output
    pixel covers (a box filter: a 300-pixel stroke averages down instead of aliasing); growing is bilinear."""
    height, width = ink.shape
    scale = box / max(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))  # PIL's (width, height)
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    resized = Image.fromarray(ink.astype(np.float32)).resize(target, resample)  # mode 'F'
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)  # (h', w')


def place_by_centre_of_mass(digit: np.ndarray, *, size: int) -> np.ndarray:
    """(h, w) -> (size, size) with the digit's centre of mass at pixel index (size/2, size/2), by whole pixels,
    moved only as far as keeps the whole digit inside the frame."""
    height, width = digit.shape
    mass = float(digit.sum())
    centre_row = float((digit.sum(axis=1) * np.arange(height)).sum() / mass) if mass else (height - 1) / 2
    centre_col = float((digit.sum(axis=0) * np.arange(width)).sum() / mass) if mass else (width - 1) / 2
    top = min(max(math.floor(size / 2 - centre_row + 0.5), 0), size - height)  # halves round up, not to even
    left = min(max(math.floor(size / 2 - centre_col + 0.5), 0), size - width)
    frame = np.zeros((size, size), dtype=np.float32)
    frame[top:top + height, left:left + width] = digit
    return frame  # (size, size)


def enlarge(image: torch.Tensor, *, scale: int = 4) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H * scale, W * scale[, C]) uint8 with each pixel a crisp scale x scale block, so a
    28x28 model input can be looked at without the browser blurring it."""
    pixels = (image.detach().float().cpu().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)  # (C, H, W)
    blocks = pixels.repeat(scale, axis=1).repeat(scale, axis=2)  # (C, H * scale, W * scale)
    return blocks[0] if blocks.shape[0] == 1 else blocks.transpose(1, 2, 0)
