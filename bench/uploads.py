"""How well does a shipped model read a photographed digit or clothing item? Plain conversion vs its dataset's
preparation.

    python -m bench.uploads [--checkpoint checkpoints/default.pt] [--seed 0] [--max-fonts 0] [--dry-run]
    python -m bench.uploads --dataset fashion-mnist [--checkpoint checkpoints/fashion.pt] [--max-items 0]

Fashion-MNIST (`--dataset fashion-mnist`): each of the 1,000 shipped test images (core.data.load_examples) becomes a
photo the same way as a digit below (the product's intensity as its ink: a dark item on light grey paper,
off-centre, tilted, blurred, noisy, JPEG); it is classified as the test image itself, after the plain conversion
and after core.data.prepare_product (Fashion-MNIST's recipe: trim, longest side 28, centre, negate).

Digits (the default):
For every TrueType / OpenType font on this machine (`fc-list`, else /usr/share/fonts) and every digit 0-9, two
pictures are made in a temporary folder (deleted at the end):
- photo: dark ink on light grey paper, the digit off-centre on a 400x300 canvas at a random height (25-55% of
  the canvas), tilted up to 4 degrees, slightly blurred, with Gaussian noise, saved as a JPEG (quality 60-85);
- centred: the same glyph white on black, its box centred in a square with a 4/28 margin, saved as a PNG.
Each is classified by the model (core.analysis.classify) after the old plain conversion
(core.data.decode_image: letterbox, resize, auto-invert) and after core.data.decode_digit (find the ink,
crop, fit 20x20, centre by centre of mass). Prints JSON: accuracies, counts and the settings; seeded.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from core.model import load_checkpoint
from core.analysis import classify
from core.data import decode_digit, decode_image, decode_prepared, load_examples

CANVAS = (400, 300)  # photo width, height
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")


def find_fonts() -> list[Path]:
    """Every .ttf / .otf font file fontconfig knows (or under FONT_DIRS), sorted, one per path."""
    try:
        listed = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, check=True,
                                timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = [str(p) for d in FONT_DIRS for p in Path(d).rglob("*") if p.is_file()]
    return sorted({Path(p) for p in listed if p.lower().endswith((".ttf", ".otf"))})


def glyph(font_path: Path, digit: int, height: int) -> np.ndarray:
    """The digit's ink, tightly cropped: (h, w) float in [0, 1], about `height` pixels tall."""
    font = ImageFont.truetype(str(font_path), size=height)
    left, top, right, bottom = font.getbbox(str(digit))
    scale = height / max(1, bottom - top)  # font size -> ink height
    font = ImageFont.truetype(str(font_path), size=max(8, round(height * scale)))
    left, top, right, bottom = font.getbbox(str(digit))
    image = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(image).text((2 - left, 2 - top), str(digit), fill=255, font=font)
    ink = np.asarray(image, dtype=np.float32) / 255.0
    rows, cols = np.nonzero(ink.max(axis=1) > 0)[0], np.nonzero(ink.max(axis=0) > 0)[0]
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # (h, w)


def photo(ink: np.ndarray, rng: np.random.Generator, *, by_longest_side: bool = False) -> Image.Image:
    """Dark ink on light grey paper, off-centre on a CANVAS, tilted, blurred and noisy (grayscale, uint8). Its
    height is 25-55% of the canvas height (`by_longest_side`: its longer side, for wide clothing items)."""
    width, height = CANVAS
    tilted = np.asarray(Image.fromarray(ink).rotate(float(rng.uniform(-4, 4)), resample=Image.Resampling.BILINEAR,
                                                    expand=True), dtype=np.float32)  # (h', w')
    scale = rng.uniform(0.25, 0.55) * height / (max(tilted.shape) if by_longest_side else tilted.shape[0])
    size = (max(1, round(tilted.shape[1] * scale)), max(1, round(tilted.shape[0] * scale)))
    glyph_ink = np.asarray(Image.fromarray(tilted).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    coverage = np.zeros((height, width), dtype=np.float32)
    top = int(rng.integers(0, height - glyph_ink.shape[0] + 1))
    left = int(rng.integers(0, width - glyph_ink.shape[1] + 1))
    coverage[top:top + glyph_ink.shape[0], left:left + glyph_ink.shape[1]] = np.clip(glyph_ink, 0, 1)
    paper, ink_level = rng.uniform(0.70, 0.90), rng.uniform(0.05, 0.25)
    gray = paper + (ink_level - paper) * coverage  # (H, W)
    blurred = Image.fromarray(np.round(gray * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.5))))
    noisy = np.asarray(blurred, dtype=np.float32) + rng.normal(0, rng.uniform(4, 10), (height, width))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def centred(ink: np.ndarray) -> Image.Image:
    """White on black, the glyph's box centred in a square whose side is 28/20 of its longer side."""
    side = round(max(ink.shape) * 28 / 20)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    square[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    return Image.fromarray((square * 255).astype(np.uint8))


def save(image: Image.Image, path: Path, **options) -> bytes:
    image.save(path, **options)
    return path.read_bytes()


def product_ink(item: np.ndarray, scale: int = 8) -> np.ndarray:
    """A Fashion-MNIST image (28, 28), light on black, as the ink of a photo: cropped to the product and enlarged
    `scale` times (bilinear), (h, w) float in [0, 1]."""
    rows, cols = np.nonzero(item.max(axis=1) > 0)[0], np.nonzero(item.max(axis=0) > 0)[0]
    cropped = Image.fromarray(np.ascontiguousarray(item[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], dtype=np.float32))
    return np.asarray(cropped.resize((scale * cropped.width, scale * cropped.height), Image.Resampling.BILINEAR))


def product_photos(args: argparse.Namespace, rng: np.random.Generator) -> dict:
    """Classify the shipped Fashion-MNIST test images as they are and as photos, plain and prepared."""
    started = time.time()
    model = load_checkpoint(args.checkpoint, map_location="cpu").model.eval()
    examples = load_examples("fashion-mnist", channels=1, image_size=28)
    count = 20 if args.dry_run else (args.max_items or len(examples.labels))
    inputs: dict[str, list[torch.Tensor]] = {"test_image": [], "photo_old": [], "photo_prepared": []}
    with tempfile.TemporaryDirectory(prefix="swwae-uploads-") as folder:
        for index in range(count):
            ink = product_ink(examples.images[index, 0].numpy())
            data = save(photo(ink, rng, by_longest_side=True), Path(folder) / f"{index:04d}.jpg", quality=int(rng.integers(60, 86)))
            inputs["test_image"].append(examples.images[index])
            inputs["photo_old"].append(decode_image(data, channels=1, size=28))
            inputs["photo_prepared"].append(decode_prepared(data, "product", size=28))
    labels = examples.labels[:count].numpy()
    accuracy = {kind: round(float((classify(model, torch.stack(images)).argmax(axis=1) == labels).mean()), 4)
                for kind, images in inputs.items()}
    return {"accuracy": accuracy, "items": count, "dataset": "fashion-mnist", "checkpoint": args.checkpoint,
            "seed": args.seed, "canvas": list(CANVAS), "seconds": round(time.time() - started, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist",
                        help="digits drawn from fonts (mnist) or the shipped Fashion-MNIST test images")
    parser.add_argument("--checkpoint", default=None, help="default: checkpoints/default.pt, or fashion.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-fonts", type=int, default=0, help="use at most this many fonts (0 = all)")
    parser.add_argument("--max-items", type=int, default=0, help="fashion: use at most this many images (0 = all)")
    parser.add_argument("--dry-run", action="store_true", help="two fonts (20 items), to check the script runs")
    args = parser.parse_args(argv)
    args.checkpoint = args.checkpoint or ("checkpoints/fashion.pt" if args.dataset == "fashion-mnist"
                                          else "checkpoints/default.pt")
    if args.dataset == "fashion-mnist":
        result = product_photos(args, np.random.default_rng(args.seed))
        print(json.dumps(result, indent=2))
        return result
    started = time.time()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    fonts = find_fonts()
    if not fonts:
        raise SystemExit("no .ttf/.otf fonts found (apt-get install fonts-dejavu fonts-liberation)")
    limit = 2 if args.dry_run else args.max_fonts
    fonts = fonts[:limit] if limit else fonts
    model = load_checkpoint(args.checkpoint, map_location="cpu").model.eval()
    channels, _, size = model.input_shape
    inputs: dict[str, list[torch.Tensor]] = {"photo_old": [], "photo_prepared": [], "centred_old": [],
                                             "centred_prepared": []}
    labels = []
    with tempfile.TemporaryDirectory(prefix="swwae-uploads-") as folder:
        for font_index, font_path in enumerate(fonts):
            for digit in range(10):
                ink = glyph(font_path, digit, height=200)
                stem = Path(folder) / f"{font_index:03d}_{digit}"
                photo_bytes = save(photo(ink, rng), stem.with_suffix(".jpg"), quality=int(rng.integers(60, 86)))
                centred_bytes = save(centred(ink), stem.with_suffix(".png"))
                for name, data in (("photo", photo_bytes), ("centred", centred_bytes)):
                    inputs[f"{name}_old"].append(decode_image(data, channels=channels, size=size))
                    inputs[f"{name}_prepared"].append(decode_digit(data, size=size))
                labels.append(digit)
    labels_array = np.array(labels)
    accuracy = {kind: round(float((classify(model, torch.stack(images)).argmax(axis=1) == labels_array).mean()), 4)
                for kind, images in inputs.items()}
    result = {"accuracy": accuracy, "digits": len(labels), "fonts": len(fonts),
              "checkpoint": args.checkpoint, "seed": args.seed, "canvas": list(CANVAS),
              "seconds": round(time.time() - started, 1)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
