"""Does "where" carry what the decoder needs? The where ablation.

    python -m bench.where_ablation --test-data ../shared/data/mnist [--steps 3000] [--seeds 0 1] [--jobs 2]
    python -m bench.where_ablation --pool fashion-mnist      # Fashion-MNIST's 55,000 training images, its test set

1. Where ablation: the same architecture trained unsupervised (L2rec + L2M, no labels) on mnist5k (or --pool) with the
   project's trainer in each pooling mode: 'hard' (max-pool switches), 'soft' (soft what-where) and 'none'
   (the decoder ignores where and upsamples), once per seed. Reconstruction MSE on the official MNIST test set
   (Fashion-MNIST's for --pool fashion-mnist; mean over seeds, and each seed's ratio to 'none'), and a figure of
   the same test images reconstructed by the first seed's models (docs/results/where_ablation.png). The first
   seed's models are saved as checkpoints/ablation_<mode>.pt (fashion_ablation_<mode>.pt for Fashion-MNIST).
(Invariance in what and equivariance in where, measured on these models, is bench.invariance.)
Figures JSON goes to docs/results/where_ablation.json (where_ablation_fashion-mnist.json); bench.report turns it
into docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from bench.common import DEFAULT_TEST_DATA, RESULTS_DIR, load_test, test_metrics
from core.model import save_checkpoint
from core.data import DataConfig
from core.model import digits_config
from core.training import TrainConfig, train

MODES = ("hard", "soft", "none")
SHOWN_DIGITS = 8


def train_mode(mode: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one pooling mode with one seed; the first seed's model is saved and its reconstructions shown."""
    torch.set_num_threads(args.threads)
    model_config = digits_config(channels=tuple(args.channels), pooling=mode)
    train_config = TrainConfig(mode="unsupervised", lambda_rec=1.0, lambda_mid=args.lambda_mid, lr=args.lr,
                               warmup_steps=args.steps // 10, epochs=10**6, max_steps=args.steps, batch_size=64,
                               seed=seed, device="cpu", log_every=args.steps, eval_batch_size=500)
    started = time.time()
    data_config = DataConfig(dataset=args.pool, download=False)
    result = train(model_config, train_config, data_config)
    if result.state != "finished":
        raise RuntimeError(f"{mode} seed {seed}: {result.message}")
    model = result.model.cpu().eval()
    test_images, test_labels = load_test(args.pool, args.test_data)
    record = {"mode": mode, "seed": seed, **test_metrics(model, test_images, test_labels),
              "seconds": round(time.time() - started, 1), "steps": result.step}
    if seed == args.seeds[0]:
        save_checkpoint(Path(args.checkpoint_dir) / f"{prefix(args.pool)}ablation_{mode}.pt", model,
                        train_config=asdict(train_config), data_config=asdict(data_config), step=result.step)
        with torch.no_grad():
            record["shown"] = model.decode(model.encode(test_images[:SHOWN_DIGITS])).recon.numpy().tolist()
    return record


def prefix(pool: str) -> str:
    """File-name prefix of a pool's results and models: none for mnist5k (the first), 'fashion_' for fashion-mnist."""
    return "" if pool == "mnist5k" else f"{pool.split('-')[0]}_"


def results_stem(pool: str) -> str:
    return "where_ablation" if pool == "mnist5k" else f"where_ablation_{pool}"


def by_mode(runs: list[dict]) -> list[dict]:
    """Per pooling mode: mean and spread of the test MSE over seeds, the first seed's reconstructions."""
    rows = []
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        mses = [r["test_mse"] for r in mine]
        rows.append({"mode": mode, "test_mse": statistics.mean(mses),
                     "test_mse_std": statistics.stdev(mses) if len(mses) > 1 else 0.0,
                     "seeds": [r["seed"] for r in mine], "test_mse_per_seed": mses,
                     "seconds": statistics.mean(r["seconds"] for r in mine), "steps": mine[0]["steps"],
                     "shown": next(r["shown"] for r in mine if "shown" in r)})
    return rows


def plot(results: dict, test_images: torch.Tensor, out_dir: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("input", test_images[:SHOWN_DIGITS].numpy())] + [
        (f"{r['mode']} (MSE {r['test_mse']:.4f})", np.array(r["shown"])) for r in results["ablation"]]
    fig, axes = plt.subplots(len(rows), SHOWN_DIGITS, figsize=(SHOWN_DIGITS * 0.9, len(rows) * 1.0))
    for row, (title, images) in enumerate(rows):
        for col in range(SHOWN_DIGITS):
            ax = axes[row, col]
            ax.imshow(images[col, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[row, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Test images reconstructed by the same SWWAE trained with hard, soft and no where", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / f"{results_stem(results['settings']['pool'])}.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="mnist5k", choices=("mnist5k", "fashion-mnist"),
                        help="training images (unlabeled); the test set is the matching official one")
    parser.add_argument("--test-data", default=str(DEFAULT_TEST_DATA), help="folder of the MNIST t10k IDX files")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--lambda-mid", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one model per mode and seed; the "
                        "first seed's models are saved and shown")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="where the three trained models are saved "
                        "(the dashboard lists them, so the soft and none models can be explored too)")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test_images, _ = load_test(args.pool, args.test_data)

    jobs = [(mode, seed) for seed in args.seeds for mode in MODES]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        runs = list(pool.map(train_mode, *zip(*jobs), [args] * len(jobs)))
    ablation = by_mode(runs)
    mse = {r["mode"]: r["test_mse"] for r in ablation}
    results = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out_dir", "checkpoint_dir")},
        "ablation": ablation,
        "mse_ratio_hard_to_none": mse["hard"] / mse["none"],
        "mse_ratio_soft_to_none": mse["soft"] / mse["none"],
    }
    plot(results, test_images, out_dir)
    (out_dir / f"{results_stem(args.pool)}.json").write_text(json.dumps(results))
    printed = {k: v for k, v in results.items() if k != "ablation"}
    printed["ablation"] = [{k: v for k, v in r.items() if k != "shown"} for r in ablation]
    print(json.dumps(printed, indent=2))
    return results


if __name__ == "__main__":
    main()
