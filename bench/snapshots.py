"""What a run's snapshots cost: `python -m bench.snapshots [--steps 500] [--dataset fashion-mnist]`.

Trains the shipped Fashion-MNIST model's command (README: 2 convolutions per stage, 32/64/128, AdamW, shifts and
flips) for `--steps` steps twice in this process, with snapshots on and off, and prints JSON: the seconds spent
writing snapshots (measured by the trainer around each write), each run's wall time, the snapshot files' bytes against
the rest of the run directory, and the same shares projected onto the full 20-epoch command (17,180 steps: 14
snapshots), from the measured seconds per step and per snapshot and the measured file sizes.
Target (issue 17): snapshots <= 5% of a run's time and of its disk.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from core.data import DataConfig
from core.training import TrainConfig, default_model_config, rundir, snapshot_steps, train

FULL_STEPS, FULL_EPOCHS = 17_180, 20  # the shipped model's command: 20 epochs of 859 steps
TARGET_SHARE = 0.05


def shipped_command(dataset: str, steps: int, snapshots: bool):
    """The configs of the README's Fashion-MNIST command, stopped after `steps` steps."""
    model = default_model_config(dataset, convs_per_stage=2, dropout=0.3)
    training = TrainConfig(mode="supervised", epochs=FULL_EPOCHS, batch_size=64, lr=2e-3, optimizer="adamw",
                           weight_decay=5e-4, warmup_steps=500, max_steps=steps, snapshots=snapshots)
    return model, training, DataConfig(dataset=dataset, download=False, shift=2, flip=True)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed_run(dataset: str, steps: int, snapshots: bool, run_dir: Path) -> dict:
    started = time.perf_counter()
    result = train(*shipped_command(dataset, steps, snapshots), run_dir=run_dir)
    seconds = time.perf_counter() - started
    snapshot_bytes = folder_bytes(run_dir / rundir.SNAPSHOTS_DIR) if (run_dir / rundir.SNAPSHOTS_DIR).exists() else 0
    samples = rundir.list_samples(run_dir)
    return {"state": result.state, "steps": result.step, "wall_s": round(seconds, 2),
            "snapshot_write_s": round(result.snapshot_seconds, 3), "snapshots": len(rundir.list_snapshots(run_dir)),
            "snapshot_bytes": snapshot_bytes, "other_bytes": folder_bytes(run_dir) - snapshot_bytes,
            "metrics_bytes": (run_dir / rundir.METRICS_FILE).stat().st_size, "sample_pngs": len(samples),
            "sample_bytes": sum(p.stat().st_size for p in samples)}


def projected(on: dict, off: dict) -> dict:
    """Shares on the full command, from this run's measured per-step and per-snapshot costs and file sizes."""
    files = len(snapshot_steps(FULL_STEPS))
    per_snapshot_s = on["snapshot_write_s"] / max(on["snapshots"], 1)
    per_snapshot_bytes = on["snapshot_bytes"] / max(on["snapshots"], 1)
    full_s = off["wall_s"] / off["steps"] * FULL_STEPS
    time_share = files * per_snapshot_s / (full_s + files * per_snapshot_s)
    snapshot_bytes = files * per_snapshot_bytes
    # last.pt, best.pt and config/status keep their size; the metrics file grows with the steps; a PNG per epoch
    fixed = off["other_bytes"] - off["metrics_bytes"] - off["sample_bytes"]
    other = (fixed + off["metrics_bytes"] * FULL_STEPS / off["steps"]
             + off["sample_bytes"] / max(off["sample_pngs"], 1) * FULL_EPOCHS)
    return {"snapshots": files, "per_snapshot_s": round(per_snapshot_s, 4), "full_run_s": round(full_s),
            "time_share": round(time_share, 5), "snapshot_mb": round(snapshot_bytes / 2**20, 1),
            "other_mb": round(other / 2**20, 1), "disk_share": round(snapshot_bytes / (snapshot_bytes + other), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--dataset", default="fashion-mnist")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swwae-bench-snapshots-") as folder:
        try:
            off = timed_run(args.dataset, args.steps, False, Path(folder) / "off")
            on = timed_run(args.dataset, args.steps, True, Path(folder) / "on")
        except ValueError as exc:  # DatasetUnavailable: say how to get it
            raise SystemExit(f"error: {str(exc).splitlines()[0]}") from None
    measured_share = on["snapshot_write_s"] / on["wall_s"]
    report = {
        "command": "README's Fashion-MNIST command, --max-steps " + str(args.steps),
        "with_snapshots": on, "without_snapshots": off,
        "measured": {"time_share": round(measured_share, 5),
                     "wall_difference_s": round(on["wall_s"] - off["wall_s"], 2),
                     "disk_share": round(on["snapshot_bytes"] / (on["snapshot_bytes"] + on["other_bytes"]), 3)},
        "projected_full_command": projected(on, off),
        "target_share": TARGET_SHARE,
    }
    report["meets_target"] = {"time": report["projected_full_command"]["time_share"] <= TARGET_SHARE,
                              "disk": report["projected_full_command"]["disk_share"] <= TARGET_SHARE}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
