"""core.data.images: every bad upload is refused with a one-line ImageDecodeError; every pixel format converts."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from core.data import (MAX_PIXELS, ImageDecodeError, NoInkError, decode_digit, decode_image, enlarge,
                         prepare_digit)

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
    rgb = np.random.default_rng(3).integers(128, 256, (28, 28, 3), dtype=np.uint8)  # light: composited on black
    palette = Image.fromarray(rgb).quantize(16)
    expected = np.asarray(palette.convert("RGB"), dtype=np.float64) / 255 @ LUMA
    np.testing.assert_allclose(decode_image(encode(palette), invert=False)[0].numpy(), expected, atol=1e-5)
    palette.info["transparency"] = 0  # palette entry 0 is transparent -> those pixels become black
    data = encode(palette, transparency=0)
    alpha = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))[..., 3] / 255
    np.testing.assert_allclose(decode_image(data, invert=False)[0].numpy(), expected * alpha, atol=1e-5)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_dark_ink_on_a_transparent_background_is_composited_on_white_and_found(mode):
    """Issue 18 item 14: black ink on a transparent PNG used to land on black: "no digit found"."""
    ink = np.zeros((56, 56), dtype=bool)
    ink[10:46, 24:32] = True  # a "1"
    if mode == "P":
        image = Image.new("P", (56, 56), 0)
        image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # entry 0 (white, transparent), entry 1 black
        image.putdata(ink.flatten().astype(np.uint8).tolist())
        data = encode(image, transparency=0)
    else:
        channels = 4 if mode == "RGBA" else 2
        pixels = np.zeros((56, 56, channels), dtype=np.uint8)  # black everywhere, opaque only on the ink
        pixels[..., -1] = ink * 255
        data = encode(Image.fromarray(pixels, mode))
    plain = decode_image(data, invert=None)[0].numpy()  # auto-invert: the white background turns black
    assert plain.max() > 0.9 and plain[0, 0] < 0.1
    digit = decode_digit(data)[0].numpy()
    assert digit.max() > 0.9 and digit[:, :4].max() == 0


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA"])
def test_other_formats_renamed_png_are_refused_from_the_header(fmt):
    """Issue 18 item 5: an .ico renamed .png was decoded at 81 MP before the 20 MP limit refused it (an ICO's header
    size is not what its embedded PNG decodes to)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format=fmt)
    with pytest.raises(ImageDecodeError, match=f"holds {fmt} data"):
        decode_image(buffer.getvalue(), name="icon.png")


def test_a_fully_transparent_image_has_no_ink():
    with pytest.raises(NoInkError):
        decode_digit(encode(Image.fromarray(np.zeros((28, 28, 4), dtype=np.uint8), "RGBA")))


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


# --- prepare_digit: MNIST's recipe (find the ink, crop, fit 20x20, centre of mass at (14, 14)) ------------------

def shift_within_a_pixel(actual: np.ndarray, expected: np.ndarray, atol: float = 1e-5) -> tuple[int, int] | None:
    """The (rows, cols) shift, each in -1..1, that makes `expected` equal `actual`; None if there is none."""
    for dy in (0, -1, 1):
        for dx in (0, -1, 1):
            if np.abs(np.roll(expected, (dy, dx), axis=(0, 1)) - actual).max() < atol:
                return dy, dx
    return None


def test_prepared_vertical_bar_one_matches_hand_computed_mnist_image():
    canvas = np.zeros((280, 280), dtype=np.float32)  # a drawn "1": white on black, like the app's canvas
    canvas[40:240, 125:155] = 1.0  # 200 rows x 30 columns
    # By hand: the bounding box is the bar, 200 x 30; 20 / 200 = 0.1 scales it to 20 x 3, still all ones. Its
    # centre of mass is (9.5, 1.0), so it goes at top = 14 - 9.5 = 4.5 (rounded up to 5), left = 14 - 1 = 13.
    expected = np.zeros((28, 28), dtype=np.float32)
    expected[5:25, 13:16] = 1.0
    prepared = prepare_digit(canvas)
    assert prepared.shape == (1, 28, 28) and prepared.dtype == torch.float32
    assert shift_within_a_pixel(prepared[0].numpy(), expected) is not None


def test_prepared_l_shape_is_placed_by_centre_of_mass_not_by_its_box():
    canvas = np.zeros((280, 280), dtype=np.float32)
    canvas[40:240, 60:100] = 1.0  # the stem: 200 x 40
    canvas[200:240, 60:220] = 1.0  # the foot: 40 x 160; the bounding box is 200 x 160
    # By hand: x0.1 -> a 20 x 16 box: stem rows 0-19, cols 0-3 (mass 80, centre (9.5, 1.5)); the rest of the foot
    # rows 16-19, cols 4-15 (mass 48, centre (17.5, 9.5)). Centre of mass: (12.5, 4.5) -> top = 14 - 12.5 = 1.5
    # (rounded up to 2), left = 14 - 4.5 = 9.5 (rounded up to 10). The box's own centre would give top 4, left 6.
    expected = np.zeros((28, 28), dtype=np.float32)
    expected[2:22, 10:14] = 1.0
    expected[18:22, 10:26] = 1.0
    prepared = prepare_digit(canvas)[0].numpy()
    assert shift_within_a_pixel(prepared, expected) is not None
    rows, cols = np.indices(prepared.shape)
    centre = ((prepared * rows).sum() / prepared.sum(), (prepared * cols).sum() / prepared.sum())
    np.testing.assert_allclose(centre, (14.0, 14.0), atol=0.5)


def test_other_sizes_scale_the_box_proportionally():
    canvas = np.zeros((100, 100), dtype=np.float32)
    canvas[10:90, 40:60] = 1.0  # 80 x 20
    prepared = prepare_digit(canvas, size=56)[0].numpy()  # box = round(56 * 20 / 28) = 40 -> 40 x 10
    rows, cols = np.nonzero(prepared > 0.5)
    assert prepared.shape == (56, 56)
    assert rows.max() - rows.min() + 1 == 40 and cols.max() - cols.min() + 1 == 10


def draw_digit(width: int, height: int, centre: tuple[float, float], scale: float, ink: int, paper: int) -> Image.Image:
    """A "7" and a "4"-like cross drawn with PIL lines: the stroke width scales with the digit."""
    image = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(image)
    x, y = centre

    def point(px: float, py: float) -> tuple[float, float]:
        return x + px * scale, y + py * scale

    draw.line([point(-50, -90), point(50, -90), point(-10, 90)], fill=ink, width=round(22 * scale), joint="curve")
    draw.line([point(-35, 5), point(35, 5)], fill=ink, width=round(18 * scale))  # the crossbar of a European 7
    return image


def box_of(image: np.ndarray, level: float = 0.3) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(image > level)
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_photo_like_dark_digit_off_centre_prepares_like_the_centred_drawing():
    centred = np.asarray(draw_digit(280, 280, (140, 140), 1.0, ink=255, paper=0), dtype=np.float32) / 255
    reference = prepare_digit(centred)[0].numpy()  # white on black, centred: what the canvas sends

    paper = draw_digit(400, 300, (285, 100), 0.45, ink=40, paper=205)  # dark on grey, small, up and to the right
    blurred = np.asarray(paper.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    noisy = blurred + np.random.default_rng(0).normal(0, 8, blurred.shape)  # sensor noise, ~3% of the range
    photo = encode(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), "JPEG", quality=70)
    prepared = decode_digit(photo, name="photo.jpg")[0].numpy()

    assert box_of(prepared) == pytest.approx(box_of(reference), abs=1)  # the same box, within a pixel
    # the same picture, up to where the strokes fall on the 28x28 grid and the blur (measured: 0.041 and 0.868)
    assert np.abs(prepared - reference).mean() < 0.06
    assert np.corrcoef(prepared.ravel(), reference.ravel())[0, 1] > 0.8
    old = decode_image(photo)[0].numpy()  # the plain conversion: a small, off-centre, grey-backgrounded digit
    assert np.corrcoef(old.ravel(), reference.ravel())[0, 1] < 0.5


@pytest.mark.parametrize("case", ["black", "white", "grey paper", "grey paper with noise", "speck"])
def test_blank_image_raises_one_line_error(case):
    rng = np.random.default_rng(0)
    pixels = {"black": np.zeros((280, 280)), "white": np.ones((120, 90)), "grey paper": np.full((300, 400), 0.8),
              "grey paper with noise": np.clip(0.8 + rng.normal(0, 0.03, (300, 400)), 0, 1),
              "speck": np.pad(np.ones((1, 1)), 50)}[case]
    with pytest.raises(ImageDecodeError) as info:
        prepare_digit(pixels, name="drawing")
    assert isinstance(info.value, NoInkError)
    assert str(info.value).startswith("drawing: no digit found") and "\n" not in str(info.value)


def test_prepare_digit_accepts_rgb_and_forced_polarity():
    gray = np.zeros((60, 60), dtype=np.float32)
    gray[10:50, 25:35] = 1.0
    light_on_dark = prepare_digit(gray)
    np.testing.assert_allclose(prepare_digit(np.repeat(gray[..., None], 3, axis=-1)), light_on_dark, atol=1e-6)
    np.testing.assert_allclose(prepare_digit(1 - gray), light_on_dark, atol=1e-6)  # dark on paper: found
    np.testing.assert_allclose(prepare_digit(1 - gray, invert=True), light_on_dark, atol=1e-6)


def test_enlarge_repeats_each_pixel_as_a_block():
    image = torch.tensor([[[0.0, 1.0], [0.5, 0.25]]])  # (1, 2, 2)
    big = enlarge(image, scale=3)
    assert big.shape == (6, 6) and big.dtype == np.uint8
    np.testing.assert_array_equal(big[:3, 3:], 255)
    np.testing.assert_array_equal(big[3:, :3], 128)
