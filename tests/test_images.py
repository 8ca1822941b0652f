"""core.images: every bad upload is refused with a one-line ImageDecodeError; every pixel format converts."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from core.images import MAX_PIXELS, ImageDecodeError, decode_image

LUMA = np.array([0.299, 0.587, 0.114])


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise_png(size: int = 64, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    return encode(Image.fromarray(pixels))


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height, all black: a few KB on disk, width*height pixels decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    rows = zlib.compress((b"\x00" + b"\x00" * ((width + 7) // 8)) * height, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((16, 16), v, dtype=np.uint8)) for v in (0, 128, 255)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


BAD_UPLOADS = {
    "empty": (b"", "empty"),
    "not an image": (b"hello, I am a text file renamed to .png\n" * 10, "not an image"),
    "truncated png": (noise_png()[: len(noise_png()) // 2], "truncated or corrupt"),
    "over 20 megapixels": (huge_png(5000, 5000), "too large"),
    "animated gif": (animated_gif(), "animated"),
}


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_bad_uploads_raise_one_line_value_error(name):
    data, reason = BAD_UPLOADS[name]
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, name="x.png")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert reason in message and "\n" not in message and message.startswith("x.png: ")


def test_bomb_is_refused_before_decoding():
    assert 5000 * 5000 > MAX_PIXELS
    assert len(huge_png(5000, 5000)) < 100_000  # tiny file, huge image: refused from the header alone
    with pytest.raises(ImageDecodeError, match="25.0 megapixels"):
        decode_image(huge_png(5000, 5000))


def test_grayscale_png_is_exact():
    pixels = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    image = decode_image(encode(Image.fromarray(pixels)), invert=False)
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    np.testing.assert_allclose(image[0].numpy(), pixels / 255.0, atol=1e-6)


def test_16_bit_png_uses_the_full_range():
    pixels = np.random.default_rng(2).integers(0, 65536, (28, 28), dtype=np.uint16)
    data = encode(Image.fromarray(pixels))
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    np.testing.assert_allclose(decode_image(data, invert=False)[0].numpy(), pixels / 65535.0, atol=1e-6)


def test_rgba_is_composited_on_black():
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere, but only the square is opaque
    rgba[8:20, 10:18, 3] = 255
    rgba[0:4, 0:4, 3] = 128  # half transparent corner
    expected = np.zeros((28, 28))
    expected[8:20, 10:18] = 1.0
    expected[0:4, 0:4] = 128 / 255
    image = decode_image(encode(Image.fromarray(rgba, "RGBA")), invert=False)
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-6)


def test_palette_and_transparent_palette():
    rgb = np.random.default_rng(3).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(16)
    expected = np.asarray(palette.convert("RGB"), dtype=np.float64) / 255 @ LUMA
    np.testing.assert_allclose(decode_image(encode(palette), invert=False)[0].numpy(), expected, atol=1e-5)
    palette.info["transparency"] = 0  # palette entry 0 is transparent -> those pixels become black
    data = encode(palette, transparency=0)
    alpha = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))[..., 3] / 255
    np.testing.assert_allclose(decode_image(data, invert=False)[0].numpy(), expected * alpha, atol=1e-5)


def test_cmyk_is_converted_like_pil():
    cmyk = Image.fromarray(np.random.default_rng(4).integers(0, 256, (28, 28, 4), dtype=np.uint8), "CMYK")
    expected = np.asarray(cmyk.convert("RGB"), dtype=np.float64) / 255 @ LUMA
    np.testing.assert_allclose(decode_image(encode(cmyk, "TIFF"), invert=False)[0].numpy(), expected, atol=1e-5)


def test_rgb_model_keeps_colour_and_letterboxes():
    rgb = np.zeros((20, 40, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # a red 2:1 picture
    image = decode_image(encode(Image.fromarray(rgb)), channels=3, size=32, invert=False)
    assert image.shape == (3, 32, 32)
    assert image[0, 16].min() > 0.99 and image[1:].abs().max() < 1e-6  # red stays red, no green or blue
    assert image[:, 0].abs().max() < 1e-6 and image[:, -1].abs().max() < 1e-6  # padded top and bottom rows


def test_auto_invert_turns_a_dark_digit_on_paper_light_on_black():
    paper = np.full((56, 56), 255, dtype=np.uint8)
    paper[10:46, 24:32] = 0  # a dark stroke
    image = decode_image(encode(Image.fromarray(paper)))
    assert image[0, 0, 0] < 0.01 and image[0, 14, 14] > 0.9
    assert decode_image(encode(Image.fromarray(paper)), invert=False)[0, 0, 0] > 0.99


def test_single_frame_gif_is_accepted():
    frame = Image.fromarray(np.random.default_rng(5).integers(0, 256, (28, 28), dtype=np.uint8)).quantize(64)
    assert decode_image(encode(frame, "GIF"), invert=False).shape == (1, 28, 28)
