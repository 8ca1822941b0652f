"""How close the trainer's own step comes to the machine's limit: FLOPs per training image times images/s, as a
share of a large matrix multiply measured in the same run.

    python -m bench.limit [--batch-sizes 64 256] [--busy] [--compile] [--device auto] [--out FILE]

- FLOPs per training image: one training step of SWWAE(digits_config()) (forward, loss, backward) counted by
  torch.utils.flop_counter.FlopCounterMode (convolutions and matmuls; pooling and elementwise work count 0).
- images/s: core.training.train_step, the function the trainer calls each step, on a batch held on the device (Adam,
  supervised, no logging), best of --repeats timings of at least --seconds each, the paths interleaved.
- peak: float32 sgemm (torch.mm, 2048^2) on the CPU, a bf16 matmul (8192^2) on CUDA, best of a few.
- paths: eager_nchw (the trainer before issue 12: NCHW weights and images, a for-loop Adam), channels_last (the
  layout alone), trainer (the trainer's default now: channels_last and a fused Adam), and with --compile also
  torch.compile of the trainer's step (its compile time is left out of the rate).
- --busy: the same figures again while another process spins a float32 matmul on one core (a dashboard or a
  second run beside the trainer); its share is of the idle peak.

Targets on a 2-core CPU: the trainer >= 50% of sgemm at batch 256, and >= 1.1x the eager NCHW path at batch 64.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import print_figures
from core.model import SWWAE, digits_config
from core.training import TrainConfig, build_optimizer, memory_format, resolve_device, train_step, training_net

PATHS = {  # name: (TrainConfig fields, fused optimizer)
    "eager_nchw": ({"channels_last": False}, False),  # the trainer before issue 12: NCHW, a for-loop Adam
    "channels_last": ({"channels_last": True}, False),  # the layout alone
    "trainer": ({"channels_last": True}, True),  # the trainer's default now: channels_last and a fused Adam
    "compile": ({"channels_last": True, "compile": True}, True),  # --compile
}
BUSY_CODE = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\n"
             "while True:\n    a @ a\n")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device: torch.device, repeats: int = 3) -> float:
    """FLOP/s of a large matmul: float32 sgemm on the CPU, bf16 on CUDA (best of `repeats`)."""
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        count = 20 if device.type == "cuda" else 4
        _sync(device)
        start = time.perf_counter()
        for _ in range(count):
            torch.mm(a, b)
        _sync(device)
        best = max(best, 2 * size**3 * count / (time.perf_counter() - start))
    return best


class Step:
    """The trainer's step on one path: a model, its optimizer and net, and a fixed batch on the device."""

    def __init__(self, path: str, batch_size: int, device: torch.device):
        fields, fused = PATHS[path]
        self.config = TrainConfig(mode="supervised", device=str(device), **fields)
        self.device = device
        torch.manual_seed(0)
        model = SWWAE(digits_config()).to(device, memory_format=memory_format(self.config, device)).train()
        self.optimizer = build_optimizer(model, self.config, fused=fused and device.type in ("cpu", "cuda"))
        self.net = training_net(model, self.config)
        self.images = torch.rand(batch_size, *model.input_shape, device=device)  # (B, 1, 28, 28)
        self.labels = torch.randint(0, model.config.num_classes, (batch_size,), device=device)  # (B,)

    def __call__(self) -> None:
        train_step(self.net, self.optimizer, self.images, self.labels, config=self.config, device=self.device)

    def images_per_s(self, seconds: float) -> float:
        self()
        _sync(self.device)
        steps, start = 0, time.perf_counter()
        while steps < 3 or time.perf_counter() - start < seconds:
            self()
            steps += 1
        _sync(self.device)
        return steps * len(self.labels) / (time.perf_counter() - start)


def flops_per_image(batch_size: int, device: torch.device) -> float:
    step = Step("eager_nchw", batch_size, device)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / batch_size


def measure(batch_sizes: list[int], paths: list[str], device: torch.device, *, repeats: int,
            seconds: float) -> dict[str, dict[str, dict[str, float]]]:
    """{batch size: {path: {images_per_s, ...}}}, the paths interleaved within each repeat, best repeat kept."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for batch_size in batch_sizes:
        steps = {}
        for path in paths:
            try:
                steps[path] = Step(path, batch_size, device)
                steps[path]()  # a compiled path compiles here, outside the timing
            except Exception as exc:  # compile unavailable: say so instead of a figure
                out.setdefault(str(batch_size), {})[path] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
        best = {path: 0.0 for path in steps}
        for _ in range(repeats):
            for path, step in steps.items():
                best[path] = max(best[path], step.images_per_s(seconds))
        for path, rate in best.items():
            out.setdefault(str(batch_size), {})[path] = {"images_per_s": round(rate, 1)}
        eager = best.get("eager_nchw")
        for path in best:
            if eager and path != "eager_nchw":
                out[str(batch_size)][path]["vs_eager_nchw"] = round(best[path] / eager, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="at least this long per timing")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile path")
    parser.add_argument("--busy", action="store_true", help="also measure beside a process spinning a matmul")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    paths = ["eager_nchw", "channels_last", "trainer"] + (["compile"] if args.compile else [])
    flops = flops_per_image(args.batch_sizes[0], device)  # every counted op is linear in the batch size
    peak = peak_flops(device)
    figures = {"device": str(device), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "gflop_per_image": round(flops / 1e9, 4), "peak": "bf16 matmul" if device.type == "cuda" else
               "float32 sgemm", "idle": measure(args.batch_sizes, paths, device, repeats=args.repeats,
                                                  seconds=args.seconds)}
    peak = max(peak, peak_flops(device))  # measured before and after the idle figures: the better one
    figures["peak_gflops"] = round(peak / 1e9, 1)
    if args.busy:
        spinner = subprocess.Popen([sys.executable, "-c", BUSY_CODE])
        try:
            time.sleep(1.0)
            figures["busy_peak_gflops"] = round(peak_flops(device) / 1e9, 1)
            figures["busy"] = measure(args.batch_sizes, paths, device, repeats=args.repeats, seconds=args.seconds)
        finally:
            spinner.kill()
            spinner.wait()
    for scenario in ("idle", "busy"):  # every share is of the idle peak
        for entry in (e for paths_ in figures.get(scenario, {}).values() for e in paths_.values()):
            if "images_per_s" in entry:
                entry["share_of_peak"] = round(entry["images_per_s"] * flops / peak, 3)
    print_figures(figures, args.out)


if __name__ == "__main__":
    main()
