"""Schedules over a run's steps: the learning rate's (linear warm-up, then cosine decay or constant) and the
snapshots' (log-spaced steps at which the trainer keeps the model)."""
from __future__ import annotations

import math

from core.training.config import TrainConfig

__all__ = ["learning_rate", "snapshot_steps", "MAX_SNAPSHOTS"]

MAX_SNAPSHOTS = 30  # files a run's snapshots/ holds at most
SNAPSHOT_MANTISSAS = (1, 2, 5)  # per power of ten: 1, 2, 5, 10, 20, 50, ...


def learning_rate(step: int, *, config: TrainConfig, total_steps: int) -> float:
    """nanoGPT-style: linear warm-up, then cosine decay from lr to min_lr over the remaining steps (or constant)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "none":
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * progress))


def snapshot_steps(total_steps: int, limit: int = MAX_SNAPSHOTS) -> list[int]:
    """The steps a run of `total_steps` keeps snapshots at: 1, 2, 5, 10, 20, 50, ... up to it, and the last step
    itself; at most `limit` (the last step kept, the largest of the others dropped first). A 100-step run:
    [1, 2, 5, 10, 20, 50, 100]; 17,180 steps: [1, 2, 5, ..., 5000, 10000, 17180]."""
    if total_steps < 1 or limit < 1:
        return []
    steps, scale = [], 1
    while scale <= total_steps:
        steps += [m * scale for m in SNAPSHOT_MANTISSAS if m * scale < total_steps]
        scale *= 10
    return steps[:limit - 1] + [total_steps]
