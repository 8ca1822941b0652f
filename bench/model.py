"""Forward+backward throughput of the SWWAE library vs a plain hand-written loop on the same architecture.

    python -m bench.model [--batch-size 64] [--steps 20] [--repeats 5]

The plain loop is nn.Conv2d + BatchNorm + ReLU + F.max_pool2d / F.max_unpool2d with the same layers, head and
loss terms, written without the library's abstractions. Both are timed in the same process, interleaved, and
the median of the repeats is reported. Target: ratio (library / plain) >= 0.95.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.common import print_figures
from core.model import swwae_loss
from core.model import SWWAE, ModelConfig, digits_config


class PlainSWWAE(nn.Module):
    """The same network as SWWAE(config) for hard pooling and one conv per stage, written out flat."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        ins = (cfg.in_channels, *cfg.channels[:-1])
        self.enc = nn.ModuleList(nn.Conv2d(i, o, k, padding=k // 2, bias=False) for i, o, k in zip(ins, cfg.channels, cfg.kernel_sizes))
        self.enc_bn = nn.ModuleList(nn.BatchNorm2d(o) for o in cfg.channels)
        self.dec = nn.ModuleList(nn.Conv2d(o, i, k, padding=k // 2, bias=(s == 0))
                                 for s, (i, o, k) in enumerate(zip(ins, cfg.channels, cfg.kernel_sizes)))
        self.dec_bn = nn.ModuleList(nn.BatchNorm2d(i) for i in ins[1:])
        top = cfg.channels[-1] * cfg.top_size**2
        self.fc1, self.fc2 = nn.Linear(top, cfg.head_width), nn.Linear(cfg.head_width, cfg.num_classes)
        self.register_buffer("mean", torch.tensor(cfg.input_mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.input_std).view(1, -1, 1, 1))

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h, whats, wheres, sizes = (x - self.mean) / self.std, [], [], []
        for conv, bn in zip(self.enc, self.enc_bn):
            h = F.relu(bn(conv(h)))
            sizes.append(h.shape[-2:])
            h, where = F.max_pool2d(h, 2, 2, return_indices=True)
            whats.append(h)
            wheres.append(where)
        logits = self.fc2(F.relu(self.fc1(h.flatten(1))))
        mids = []
        for s in reversed(range(len(self.enc))):
            h = F.max_unpool2d(h, wheres[s], 2, 2, output_size=sizes[s])
            h = self.dec[s](h)
            if s > 0:
                h = F.relu(self.dec_bn[s - 1](h))
                mids.append(F.mse_loss(h, whats[s - 1]))
        recon = torch.sigmoid(h)
        return F.cross_entropy(logits, labels) + F.mse_loss(recon, x) + 0.2 * sum(mids)


def library_step(model: SWWAE, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    encoding = model.encode(x, check_finite=False)
    return swwae_loss(x, labels, encoding, model.decode(encoding), lambda_rec=1.0, lambda_mid=0.2)["total"]


def images_per_s(step, params, x, labels, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(x, labels)
        grads = torch.autograd.grad(loss, params)
        del grads
    return steps * x.shape[0] / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="forward+backward steps per timing")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timings of each; the median is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the figures to this JSON file (bench.report reads it)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    config = digits_config()
    library, plain = SWWAE(config).train(), PlainSWWAE(config).train()
    x = torch.rand(args.batch_size, *library.input_shape)
    labels = torch.randint(0, config.num_classes, (args.batch_size,))
    runs = {"library": (lambda a, b: library_step(library, a, b), list(library.parameters())),
            "plain": (plain.loss, list(plain.parameters()))}
    for step, params in runs.values():  # warm-up
        images_per_s(step, params, x, labels, 3)
    rates = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (step, params) in runs.items():
            rates[name].append(images_per_s(step, params, x, labels, args.steps))
    result = {
        "device": "cpu", "threads": torch.get_num_threads(), "batch_size": args.batch_size, "config": "digits_config()",
        "library_images_per_s": round(statistics.median(rates["library"]), 1),
        "plain_images_per_s": round(statistics.median(rates["plain"]), 1),
    }
    result["ratio"] = round(result["library_images_per_s"] / result["plain_images_per_s"], 3)
    print_figures(result, args.out)
    return result


if __name__ == "__main__":
    main()
