"""`python -m core.inspect SPEC [--weights FILE] [--images FILE ...] [--out report.json]`: the what-where numbers of
any max-pooling network, per pooling layer, as JSON, for scripts and notebooks.

SPEC names a model as the explorer does (core.model.specs): `torchvision:NAME`, `zoo:NAME`, a pooling-network or
SWWAE checkpoint file, a `.pt2` export, or (here only, as it runs your code) a factory `package.module:function`.
Per pooling layer: the shapes it reads and writes, its window, the share of windows that tie (no cell chosen), the
entropy of the cell the switches sit in, and the shift probe (what invariance, where equivariance; the Swap page's
"Shift probe" section) for shifts along x. Images: `--images` files (PNG, JPEG, ...), else the model's own
dataset's examples when it names one that is on this machine. Every failure is one line on stderr, exit code 2.

The entry point sits above every layer of core/ (like core/train.py) and nothing imports it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from core.analysis.probe import shift_probe
from core.analysis.running import evaluating
from core.analysis.switches import switch_entropy, window_cells, windows_tied
from core.data import DatasetUnavailable, load_examples
from core.data.images import decode_image
from core.model import CheckpointError, load_checkpoint
from core.model.checkpoint import atomic_write_bytes
from core.model.network import NetworkError
from core.model.specs import open_network

MAX_IMAGES = 256  # images inspected at once (batches of small images; the probe encodes three times this many)
DEFAULT_EXAMPLES = 64


class InspectError(Exception):
    """A one-line reason the inspection cannot run."""


def open_model(spec: str, weights: str | None, image_size: int | None):
    """(model, one-line label, dataset name or None) for SPEC: an SWWAE checkpoint, else core.model.specs."""
    path = Path(spec)
    if path.is_file() and weights is None:
        try:
            checkpoint = load_checkpoint(path)
            return checkpoint.model, f"{path.name} (SWWAE)", checkpoint.dataset
        except CheckpointError:
            pass  # not an SWWAE checkpoint: a pooling-network file or a .pt2
    try:
        loaded = open_network(spec, weights=weights, image_size=image_size, allow_code=True)
    except NetworkError as exc:
        raise InspectError(str(exc)) from None
    dataset = (loaded.data_config or {}).get("dataset")
    return loaded.network, loaded.label, dataset if isinstance(dataset, str) else None


def read_images(files: list[str], channels: int, size: int) -> tuple[torch.Tensor, list[str]]:
    """The files decoded as the explorer decodes an upload (letterboxed, resized, in the model's channels)."""
    images = []
    for name in files[:MAX_IMAGES]:
        try:
            images.append(decode_image(Path(name).read_bytes(), channels=channels, size=size, name=name))
        except (OSError, ValueError) as exc:
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InspectError(line if name in line else f"{name}: {line}") from None
    return torch.stack(images), [Path(name).name for name in files[:MAX_IMAGES]]


def example_images(dataset: str | None, channels: int, size: int, count: int) -> tuple[torch.Tensor, str]:
    """The first `count` of the explorer's examples of `dataset`, and a line saying which they are."""
    if dataset is None:
        raise InspectError("the model names no dataset: give images with --images FILE ...")
    try:
        examples = load_examples(dataset, channels=channels, image_size=size)
    except (DatasetUnavailable, OSError, ValueError) as exc:
        raise InspectError(f"{dataset} examples unavailable ({str(exc).splitlines()[0]}): give --images FILE ...") \
            from None
    count = min(count, len(examples.labels), MAX_IMAGES)
    return examples.images[:count], f"the first {count} {dataset} examples ({examples.description})"


def pool_geometry(config, layer: int) -> tuple[int, int, int]:
    """(kernel, stride, padding) of pooling layer `layer`; an SWWAE's windows are its pool size, no padding."""
    kernel = config.pool_sizes[layer]
    strides = getattr(config, "pool_strides", None)
    paddings = getattr(config, "pool_paddings", None)
    return kernel, strides[layer] if strides else kernel, paddings[layer] if paddings else 0


def probe_note(config) -> str | None:
    """Why the shift probe does not apply to this network (None when it does): it maps a switch to input pixels
    through the pools alone, so every pooling window must be its stride with no padding, and every stage's map
    the input's size divided by the pools before it (convolutions keep the size)."""
    size = config.image_size
    for layer, side in enumerate(config.stage_sizes):
        kernel, stride, padding = pool_geometry(config, layer)
        if kernel != stride or padding:
            return f"pooling layer {layer + 1} has {kernel}x{kernel} windows at stride {stride}, padding {padding}"
        if side != size:
            return f"pooling layer {layer + 1} reads a {side}x{side} map, not {size}x{size}: its convolutions resize"
        size //= stride
    return None


def _number(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 6)


def layer_reports(model, images: torch.Tensor, shifts: list[int]) -> list[dict]:
    """Per pooling layer: shapes, window, tie share, switch entropy and (where it applies) the shift probe."""
    config = model.config
    with evaluating(model), torch.no_grad():
        encoding = model.encode(images)
    note = probe_note(config)
    probes = {} if note else {shift: shift_probe(model, images, shift, 0) for shift in shifts}
    reports = []
    for layer, (pre_pool, what, where) in enumerate(zip(encoding.pre_pool, encoding.whats, encoding.wheres)):
        kernel, stride, padding = pool_geometry(config, layer)
        hard = not where.is_floating_point()
        tied = windows_tied(pre_pool.float(), kernel, stride, padding)
        entropy = switch_entropy(window_cells(where, kernel, stride, padding, pre_pool.shape[-1]), tied, kernel) \
            if hard else math.nan
        reports.append({
            "layer": layer + 1, "pre_pool_shape": list(pre_pool.shape[1:]), "what_shape": list(what.shape[1:]),
            "kernel": kernel, "stride": stride, "padding": padding,
            "tied_share": _number(tied.float().mean().item()),
            "switch_entropy_bits": _number(entropy), "switch_entropy_max_bits": _number(math.log2(kernel * kernel)),
            "shift_probe": None if note else [{
                "shift_x": row.shift_x, "shift_y": row.shift_y, "what_change": _number(row.what_change),
                "pre_pool_change": _number(row.pre_pool_change), "what_per_pre_pool": _number(row.what_per_pre_pool),
                "what_per_input": _number(row.what_per_input), "where_followed": _number(row.where_followed),
                "where_reference": _number(row.where_reference), "switches": row.switches,
            } for row in (probes[shift][layer] for shift in shifts)],
            "shift_probe_note": note,
        })
    return reports


def inspect(spec: str, *, weights: str | None = None, image_size: int | None = None, images: list[str] | None = None,
            examples: int = DEFAULT_EXAMPLES, shifts: tuple[int, ...] = (1, 2)) -> dict:
    """The report `python -m core.inspect` prints (a dict of plain values); InspectError (one line) on failure."""
    model, label, dataset = open_model(spec, weights, image_size)
    channels, size = model.config.in_channels, model.config.image_size
    batch, names = (read_images(images, channels, size) if images
                    else example_images(dataset, channels, size, examples))
    try:
        layers = layer_reports(model, batch, list(shifts))
    except (ValueError, RuntimeError) as exc:
        raise InspectError(f"{label}: {str(exc).splitlines()[0]}") from None
    return {"model": label, "input": {"channels": channels, "size": size}, "images": names, "layers": layers}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="torchvision:NAME, zoo:NAME, a checkpoint or .pt2 file, or package.module:function")
    parser.add_argument("--weights", help="a .pth state dict for torchvision:/zoo:/factory specs, or DEFAULT")
    parser.add_argument("--image-size", type=int, help="input side in pixels (torchvision default 224)")
    parser.add_argument("--images", nargs="+", metavar="FILE", help=f"image files (at most {MAX_IMAGES})")
    parser.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                        help="without --images: how many of the model's dataset examples")
    parser.add_argument("--shifts", type=int, nargs="+", default=[1, 2], help="shifts along x for the probe")
    parser.add_argument("--out", help="also write the report to this JSON file (atomically)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.examples < 1 or any(not 0 <= s <= 64 for s in args.shifts):
            raise InspectError("--examples must be at least 1 and --shifts between 0 and 64 pixels")
        report = inspect(args.spec, weights=args.weights, image_size=args.image_size, images=args.images,
                         examples=args.examples, shifts=tuple(args.shifts))
        text = json.dumps(report, indent=2, allow_nan=False)
        if args.out:
            atomic_write_bytes(args.out, (text + "\n").encode())
    except (InspectError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
