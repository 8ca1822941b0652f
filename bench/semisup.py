"""Semi-supervised learning (MNIST, or Fashion-MNIST with --pool): SWWAE (NLL + L2rec + L2M) vs the same network
trained on the labeled samples alone.

    python -m bench.semisup --test-data ../shared/data/mnist [--labels 100 600 1000 3000] [--seeds 0 1 2]
                            [--steps 1000] [--jobs 2] [--pool mnist5k]
    python -m bench.semisup --pool fashion-mnist --labels 100 1000 4000 --steps 3000   # 55,000 training images

For every labels count N and seed: N labels are kept from the training pool (balanced over classes, seeded by
the seed), the rest of the pool is unlabeled. Both arms use the project's trainer (core.training.train) with the
same architecture, augmentation (random shifts), optimiser, schedule and number of steps, and the same 32
labeled samples in every step; only the loss differs:
  - swwae: batches of 32 labeled + 96 unlabeled samples, loss NLL + lambda_rec * L2rec + lambda_mid * sum L2M;
  - supervised: batches of the 32 labeled samples alone, loss NLL (lambda_rec = lambda_mid = 0).
The model after the last step (no selection on validation labels) is scored on the official MNIST test set.
Each finished run is appended to docs/results/semisup.jsonl (runs already there with the same settings are
skipped, so an interrupted table continues); a summary is printed as JSON and plotted by bench.report.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context

import torch

from bench.common import DEFAULT_TEST_DATA, RESULTS_DIR, append_jsonl, load_test, read_jsonl, test_metrics
from core.data import DataConfig
from core.model import digits_config
from core.model import POOLING_MODES
from core.training import TrainConfig, train

RESULTS = RESULTS_DIR / "semisup.jsonl"
ARMS = ("swwae", "supervised")
LABELED_PER_BATCH = 32
LATER_SETTINGS = {"noise": 0.0, "batch_norm": True, "pooling": "hard"}


def configs(arm: str, labels: int, seed: int, args: argparse.Namespace):
    model = digits_config(channels=tuple(args.channels), dropout=args.dropout, head_width=args.head_width,
                          noise_std=args.noise, batch_norm=args.batch_norm, pooling=args.pooling)
    swwae = arm == "swwae"
    train_config = TrainConfig(
        mode="semi-supervised", lambda_rec=args.lambda_rec if swwae else 0.0,
        lambda_mid=args.lambda_mid if swwae else 0.0, optimizer="adam", lr=args.lr, warmup_steps=args.steps // 10,
        schedule="cosine", epochs=10**6, max_steps=args.steps, seed=seed, device="cpu",
        batch_size=LABELED_PER_BATCH + (args.unlabeled_per_batch if swwae else 0), log_every=args.steps,
        eval_batch_size=500,
    )
    data = DataConfig(dataset=args.pool, data_dir=args.data_dir, download=False, labels=labels, label_seed=seed,
                      labeled_per_batch=LABELED_PER_BATCH, shift=args.shift)
    return model, train_config, data


def settings_key(args: argparse.Namespace) -> str:
    keys = ("pool", "steps", "channels", "dropout", "head_width", "lambda_rec", "lambda_mid", "lr", "shift",
            "unlabeled_per_batch")
    settings = {k: getattr(args, k) for k in keys}
    # settings added later enter the key only when not at their default, so earlier results keep their key
    settings.update({k: getattr(args, k) for k, default in LATER_SETTINGS.items() if getattr(args, k) != default})
    return hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:10]


def run_one(arm: str, labels: int, seed: int, args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model_config, train_config, data_config = configs(arm, labels, seed, args)
    started = time.time()
    result = train(model_config, train_config, data_config)
    if result.state != "finished":
        raise RuntimeError(f"{arm} N={labels} seed={seed} ended {result.state}: {result.message}")
    test = test_metrics(result.model.cpu(), *load_test(args.pool, args.test_data))
    return {"pool": args.pool, "labels": labels, "arm": arm, "seed": seed, "steps": result.step,
            "settings": settings_key(args), **test, "val_accuracy": result.last_eval.get("accuracy"),
            "seconds": round(time.time() - started, 1),
            "configs": {"model": asdict(model_config), "train": asdict(train_config), "data": asdict(data_config)}}


def summarize(records: list[dict]) -> dict:
    table: dict = {}
    for r in records:
        table.setdefault(r["pool"], {}).setdefault(str(r["labels"]), {}).setdefault(r["arm"], []).append(r["test_error"])
    summary = {}
    for pool, rows in table.items():
        for n, arms in sorted(rows.items(), key=lambda kv: int(kv[0])):
            row = {arm: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "runs": len(v)}
                   for arm, v in arms.items()}
            if "swwae" in row and "supervised" in row:
                row["relative_reduction"] = 1 - row["swwae"]["mean"] / row["supervised"]["mean"]
            summary.setdefault(pool, {})[n] = row
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-data", default=str(DEFAULT_TEST_DATA), help="folder of the MNIST t10k IDX files")
    parser.add_argument("--pool", default="mnist5k", help="training pool: mnist5k, or mnist / fashion-mnist (their 55,000 "
                        "training images) when their files are present; the test set is the pool's official one")
    parser.add_argument("--data-dir", default="data", help="where torchvision datasets live (for --pool mnist)")
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--head-width", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--noise", type=float, default=LATER_SETTINGS["noise"],
                        help="training-time Gaussian noise on every encoder layer (both arms)")
    parser.add_argument("--pooling", default=LATER_SETTINGS["pooling"], choices=POOLING_MODES,
                        help="what-where pooling of both arms")
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=LATER_SETTINGS["batch_norm"])
    parser.add_argument("--lambda-rec", type=float, default=1.0)
    parser.add_argument("--lambda-mid", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--shift", type=int, default=2, help="random translation augmentation, pixels")
    parser.add_argument("--unlabeled-per-batch", type=int, default=96)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one process each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", default=str(RESULTS))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = type(RESULTS)(args.out)
    load_test(args.pool, args.test_data)  # fail early, with the one-line message, if the test set is missing
    key = settings_key(args)
    done = {(r["pool"], r["labels"], r["arm"], r["seed"]) for r in read_jsonl(out) if r["settings"] == key}
    todo = [(arm, n, seed) for n in args.labels for seed in args.seeds for arm in args.arms
            if (args.pool, n, arm, seed) not in done]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_one, arm, n, seed, args): (arm, n, seed) for arm, n, seed in todo}
        for future in as_completed(futures):
            record = future.result()
            append_jsonl(out, record)
            print(json.dumps({k: record[k] for k in ("arm", "labels", "seed", "test_error", "seconds")}), flush=True)
    summary = summarize([r for r in read_jsonl(out) if r["settings"] == key])
    print(json.dumps({"settings": key, "summary": summary}, indent=2))
    return summary


if __name__ == "__main__":
    main()
