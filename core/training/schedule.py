"""The learning-rate schedule: linear warm-up, then cosine decay (or constant)."""
from __future__ import annotations

import math

from core.training.config import TrainConfig

__all__ = ["learning_rate"]


def learning_rate(step: int, *, config: TrainConfig, total_steps: int) -> float:
    """nanoGPT-style: linear warm-up, then cosine decay from lr to min_lr over the remaining steps (or constant)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "none":
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * progress))
