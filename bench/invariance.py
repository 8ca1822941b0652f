"""Invariance in what, equivariance in where: the shift probe of the shipped models over MNIST test digits.

    python -m bench.invariance --test-data ../shared/data/mnist [--images 300] [--shifts 0 1 2 3 4 8]
    python -m bench.invariance --pool fashion-mnist    # the Fashion-MNIST models over its test images

For each model (the shipped supervised model and the where ablation's hard, soft and none models) and each shift
along x and along y, `core.analysis.shift_probe` measures per stage: the relative change of the input, of the
stage's pre-pool map and of its what (their ratios: how much each pooling absorbs, and how invariance builds up
with depth), and the share of active switches that moved by exactly the shift, next to the same share against a
different digit's switches (chance). The digits are spread evenly over the test set. Writes
docs/results/invariance.json and docs/results/invariance.png (invariance_fashion-mnist.* for --pool fashion-mnist:
checkpoints/fashion.pt and fashion_ablation_*.pt over Fashion-MNIST's test images); bench.report turns them into
docs/RESULTS.md.
Without --test-data files, the mnist5k validation digits are used (and the JSON says so).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bench.common import DEFAULT_TEST_DATA, RESULTS_DIR, load_mnist_test, load_test
from core.model import load_checkpoint
from core.data import DataConfig, load_split
from core.analysis import ShiftStage, along_axis, shift_curves

MODELS = {"shipped (hard, supervised)": "checkpoints/default.pt", "hard (unsupervised)": "checkpoints/ablation_hard.pt",
          "soft (unsupervised)": "checkpoints/ablation_soft.pt", "none (unsupervised)": "checkpoints/ablation_none.pt"}
FASHION_MODELS = {"shipped (hard, supervised)": "checkpoints/fashion.pt",
                  **{f"{mode} (unsupervised)": f"checkpoints/fashion_ablation_{mode}.pt" for mode in ("hard", "soft", "none")}}


def probe_images(test_data: str, count: int, pool: str = "mnist5k") -> tuple[torch.Tensor, str]:
    """`count` images spread evenly over the pool's test set (for MNIST, the mnist5k validation split without it)."""
    if pool == "fashion-mnist":
        images, _ = load_test(pool, test_data)
        name = "Fashion-MNIST test"
    else:
        try:
            images, _ = load_mnist_test(test_data)
            name = "MNIST test"
        except SystemExit:
            images, _ = load_split(DataConfig(dataset="mnist5k"), "val", channels=1, image_size=28)
            name = "mnist5k validation"
    picked = np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)
    return images[picked], name


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, source = probe_images(args.test_data, args.images, args.pool)
    results = {"images": len(images), "image_source": source, "shifts": args.shifts, "models": {}}
    for name, path in (FASHION_MODELS if args.pool == "fashion-mnist" else MODELS).items():
        started = time.time()
        model = load_checkpoint(path).model
        rows = shift_curves(model, images, args.shifts)
        results["models"][name] = {"checkpoint": path, "pooling": model.config.pooling,
                                   "seconds": round(time.time() - started, 1), "rows": [asdict(r) for r in rows]}
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    fig, axes = plt.subplots(2, len(models), figsize=(3.3 * len(models), 6.0), sharex=True)
    for col, (name, model) in enumerate(models.items()):
        rows = along_axis([ShiftStage(**r) for r in model["rows"]], "x")
        for stage in sorted({r.stage for r in rows}):
            mine = [r for r in rows if r.stage == stage]
            x, color = [r.shift for r in mine], f"C{stage}"
            axes[0, col].plot(x, [r.what_per_input for r in mine], "-o", color=color, ms=3,
                              label=f"stage {stage + 1} ÷ input")
            axes[0, col].plot(x, [r.what_per_pre_pool for r in mine], ":s", color=color, ms=3,
                              label=f"stage {stage + 1} ÷ pre-pool")
            axes[1, col].plot(x, [r.where_followed for r in mine], "-o", color=color, ms=4, lw=0.6, alpha=0.9,
                              label=f"stage {stage + 1} (stride {mine[0].stride})")
            axes[1, col].plot(x, [r.where_reference for r in mine], ":x", color=color, ms=4, lw=0.6)
        axes[0, col].set_title(name, fontsize=9)
        axes[0, col].set_ylim(0, 1.1)
        axes[1, col].set_ylim(0, 1.02)
        axes[1, col].set_xlabel("shift right (pixels)")
    axes[0, 0].set_ylabel("what's relative change\n÷ input's (solid), ÷ pre-pool's (dotted)", fontsize=8)
    axes[1, 0].set_ylabel("active switches moved by exactly\nthe shift (dotted: another digit's)", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    axes[1, 0].legend(fontsize=6)
    fig.suptitle(f"Shift probe over {results['images']} {results['image_source']} images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="mnist5k", choices=("mnist5k", "fashion-mnist"),
                        help="which shipped models and test set")
    parser.add_argument("--test-data", default=str(DEFAULT_TEST_DATA), help="folder of the MNIST t10k IDX files")
    parser.add_argument("--images", type=int, default=300, help="digits, spread evenly over the test set")
    parser.add_argument("--shifts", type=int, nargs="+", default=[0, 1, 2, 3, 4, 8],
                        help="shift sizes in pixels, each along x and along y")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = run(args)
    stem = "invariance" if args.pool == "mnist5k" else f"invariance_{args.pool}"
    (out_dir / f"{stem}.json").write_text(json.dumps(results))
    plot(results, out_dir / f"{stem}.png")
    summary = {name: {"seconds": m["seconds"], "rows": len(m["rows"])} for name, m in results["models"].items()}
    print(json.dumps({"images": results["images"], "image_source": results["image_source"],
                      "shifts": results["shifts"], "models": summary}, indent=2))
    return results


if __name__ == "__main__":
    main()
