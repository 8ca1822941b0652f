"""Training throughput: the engine (core.training.train) vs a plain hand-written loop, same model and batch size.

    python -m bench.train [--batch-size 64] [--repeats 2] [--device auto] [--no-channels-last]
    python -m bench.train --dataset fashion-mnist --repeats 1   # 55,000 training images, 5,000 validation

Both train SWWAE(digits_config()) for one epoch of mnist5k (4,500 digits; or --dataset's training split, e.g.
Fashion-MNIST's 55,000 images; supervised, Adam), data on the device,
in the same process, interleaved; the best of the repeats is reported. The plain loop keeps the NCHW layout; the
engine uses its default, channels_last on CPU and CUDA (--no-channels-last: NCHW too, like for like). The
engine's time is its training loop as it reports it in metrics.jsonl (the sum of its logging windows: everything
from the first batch to the last step of the epoch, including its metrics/status writes, excluding the
end-of-epoch evaluation and checkpoint), and its whole train() call is shown too: with --dataset fashion-mnist that
is an epoch with its validation (target: <= 60 s on the 2-core CPU). Target: ratio (engine / plain) >= 0.95.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from bench.common import print_figures
from core.data import DataConfig, load_split
from core.model import swwae_loss
from core.model import SWWAE, digits_config
from core.training import TrainConfig, resolve_device, train


def plain_epoch(*, batch_size: int, lr: float, device: torch.device, seed: int,
                dataset: str = "mnist5k") -> dict[str, float]:
    """The loop a person would write by hand: tensors on the device, a shuffled index, no bookkeeping."""
    images, labels = load_split(DataConfig(dataset=dataset, download=False), "train")
    images, labels = images.to(device), labels.to(device)  # (N, 1, 28, 28), (N,)
    torch.manual_seed(seed)
    model = SWWAE(digits_config()).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.randperm(len(labels), device=device)
    steps = len(labels) // batch_size
    _sync(device)
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * batch_size:(step + 1) * batch_size]
        x, y = images[index], labels[index]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            encoding = model.encode(x, check_finite=False)
            decoding = model.decode(encoding)
        loss = swwae_loss(x, y, encoding, decoding)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    seconds = time.perf_counter() - start
    return {"images": steps * batch_size, "seconds": seconds, "images_per_s": steps * batch_size / seconds}


def engine_epoch(*, batch_size: int, lr: float, device: torch.device, seed: int, dataset: str = "mnist5k",
                 channels_last: bool = True) -> dict[str, float]:
    records: list[dict] = []
    config = TrainConfig(mode="supervised", epochs=1, batch_size=batch_size, lr=lr, schedule="none", seed=seed,
                         device=str(device), channels_last=channels_last)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as run:
        start = time.perf_counter()
        train(digits_config(), config, DataConfig(dataset=dataset, download=False), run_dir=run,
              on_record=records.append)
        call_seconds = time.perf_counter() - start
    steps = [r for r in records if r["kind"] == "step"]
    images, seconds, previous_step = 0, 0.0, 0
    for record in steps:  # each record covers the steps since the previous one
        window_images = (record["step"] - previous_step) * batch_size
        images += window_images
        seconds += window_images / record["images_per_s"]
        previous_step = record["step"]
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds, "train_call_s": call_seconds}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist5k", help="whose training split: mnist5k, or fashion-mnist / "
                        "mnist where installed")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="the engine's layout (default: channels_last, the trainer's default)")
    parser.add_argument("--out", help="also write the figures to this JSON file (bench.report reads it)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    common = dict(batch_size=args.batch_size, lr=args.lr, device=device, seed=args.seed, dataset=args.dataset)
    plain, engine = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        plain.append(plain_epoch(**common))
        engine.append(engine_epoch(**common, channels_last=args.channels_last))
    best_plain = max(plain, key=lambda r: r["images_per_s"])
    best_engine = max(engine, key=lambda r: r["images_per_s"])
    figures = {
        "dataset": args.dataset, "device": str(device), "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "engine_channels_last": args.channels_last, "plain": best_plain, "engine": best_engine,
        "all_plain_images_per_s": [round(r["images_per_s"], 1) for r in plain],
        "all_engine_images_per_s": [round(r["images_per_s"], 1) for r in engine],
        "ratio": best_engine["images_per_s"] / best_plain["images_per_s"],
    }
    print_figures(figures, args.out)


if __name__ == "__main__":
    main()
