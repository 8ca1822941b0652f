"""How a model is trained: TrainConfig (saved in checkpoints and config.json), the modes, the result of a run,
the default architecture per dataset and the checks that span the model, training and data configs."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from core.data import NATIVE_SHAPES, DataConfig
from core.model import SWWAE, UNLABELED, ModelConfig, check_field_types, digits_config, rgb32_config
from core.training.devices import resolve_device

__all__ = ["TrainConfig", "TrainResult", "MODES", "OPTIMIZERS", "SCHEDULES", "SEED_STRIDE", "EXIT_OK", "EXIT_FAILED",
           "EXIT_BAD_INPUT", "default_model_config", "check_configs", "check_labels"]

MODES = ("supervised", "semi-supervised", "unsupervised")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "none")
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
SEED_STRIDE = 1_000  # per-rank seeds: seed * SEED_STRIDE + rank


@dataclass
class TrainConfig:
    """How a model is trained. Plain-type fields, so it goes into checkpoints and config.json as is."""

    mode: str = "semi-supervised"  # supervised | semi-supervised | unsupervised (see the module docstring)
    lambda_nll: float = 1.0  # weight of the classification loss (forced to 0 when unsupervised)
    lambda_rec: float = 1.0  # weight of the image reconstruction loss
    lambda_mid: float = 0.2  # weight of the intermediate (what) reconstruction losses
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 0.0  # learning rate at the end of the cosine schedule
    warmup_steps: int = 0  # linear warm-up from 0 over this many steps
    schedule: str = "cosine"  # cosine | none
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # clip the gradient norm to this value (0 = off)
    epochs: int = 10
    batch_size: int = 64  # per process
    max_steps: int = 0  # stop (finished) after this many steps in all (0 = no limit)
    seed: int = 0
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:1 | mps
    bf16: bool = True  # bfloat16 autocast on CUDA (ignored elsewhere)
    channels_last: bool = True  # channels_last layout for the weights and images on CPU and CUDA (faster convolutions)
    compile: bool = False  # torch.compile the training step (falls back to eager, with a warning, where it cannot)
    log_every: int = 20  # steps between metrics records
    checkpoint_every: int = 0  # steps between last.pt writes besides every epoch end (0 = epochs only)
    eval_batch_size: int = 256
    samples: int = 8  # validation images in each reconstruction PNG
    snapshots: bool = True  # keep the weights at steps 1, 2, 5, 10, 20, 50, ... and the last in snapshots/ (rank 0)

    def __post_init__(self) -> None:
        check_field_types(self)
        for name, allowed in (("mode", MODES), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "log_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "momentum", "warmup_steps", "max_steps",
                     "checkpoint_every", "samples", "lambda_nll", "lambda_rec", "lambda_mid"):
            if not 0 <= getattr(self, name) < math.inf:  # also refuses NaN
                raise ValueError(f"{name} must be >= 0 and finite, got {getattr(self, name)}")

    @property
    def lambdas(self) -> dict[str, float]:
        return {"lambda_nll": 0.0 if self.mode == "unsupervised" else self.lambda_nll,
                "lambda_rec": self.lambda_rec, "lambda_mid": self.lambda_mid}


@dataclass
class TrainResult:
    state: str  # finished | stopped | failed
    step: int
    epoch: int
    message: str
    model: SWWAE  # the trained model (unwrapped), on the training device
    last_eval: dict[str, Any] = field(default_factory=dict)
    best_eval: dict[str, Any] = field(default_factory=dict)
    test_eval: dict[str, Any] = field(default_factory=dict)  # the test split's evaluation of best.pt (--test)
    snapshot_seconds: float = 0.0  # time this process spent writing snapshots


def default_model_config(dataset: str, **overrides) -> ModelConfig:
    """The default architecture for a dataset: digits (1x28) for MNIST-likes, RGB (3x32 / 3x96) otherwise."""
    channels, size = NATIVE_SHAPES.get(dataset, (3, 32))
    base = digits_config() if channels == 1 else rgb32_config(image_size=size)
    return replace(base, **overrides)


def check_configs(model_config: ModelConfig, train_config: TrainConfig, data_config: DataConfig) -> None:
    """What no single config can check alone; ValueError with a one-line reason. (Labels are checked against
    num_classes when the data is opened.)"""
    if not all(0 < std < math.inf for std in model_config.input_std):
        raise ValueError(f"input_std must be finite and > 0 for every channel, got {model_config.input_std}")
    if not all(math.isfinite(mean) for mean in model_config.input_mean):
        raise ValueError(f"input_mean must be finite, got {model_config.input_mean}")
    if 2 * data_config.shift >= model_config.image_size:
        raise ValueError(f"shift {data_config.shift} must be less than half the image size "
                         f"({model_config.image_size})")
    resolve_device(train_config.device)


def check_labels(labels: torch.Tensor, num_classes: int, split: str) -> None:
    """Every kept label must name one of the model's classes (cross-entropy would fail mid-run otherwise)."""
    kept = labels[labels != UNLABELED]
    if len(kept) and (int(kept.max()) >= num_classes or int(kept.min()) < 0):
        raise ValueError(f"the {split} split has labels {int(kept.min())}..{int(kept.max())}, but the model has "
                         f"num_classes {num_classes}; set --num-classes {int(kept.max()) + 1}")
