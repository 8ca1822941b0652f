"""The training engine: TrainConfig, devices, DDP, the optimizer and the learning-rate schedule, one optimisation step,
evaluation, the run-directory format it writes (`rundir`) and the loop (`train`). Imports core.model and core.data,
never core.runs, core.analysis or the app.
"""
from __future__ import annotations

from core.training.config import (
    TrainConfig, TrainResult, MODES, OPTIMIZERS, SCHEDULES, SEED_STRIDE, EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT,
    default_model_config, check_configs, check_labels,
)
from core.training.devices import DeviceInfo, describe, list_devices, run_device, resolve_device
from core.training.distributed import DistContext, init_distributed, all_reduce_sum, broadcast_buffers
from core.training.schedule import learning_rate, snapshot_steps, MAX_SNAPSHOTS
from core.training.optim import build_optimizer, restore_optimizer
from core.training.step import (
    loss_term_names, autocast, memory_format, training_net, train_step, warn_no_compile, StepWindow,
)
from core.training.evaluate import evaluate, is_better
from core.training.loop import train
from core.training import rundir

__all__ = [
    "TrainConfig", "TrainResult", "MODES", "OPTIMIZERS", "SCHEDULES", "SEED_STRIDE", "EXIT_OK", "EXIT_FAILED",
    "EXIT_BAD_INPUT", "default_model_config", "check_configs", "check_labels", "DeviceInfo", "describe",
    "list_devices", "run_device", "resolve_device", "DistContext", "init_distributed", "all_reduce_sum",
    "broadcast_buffers", "learning_rate", "snapshot_steps", "MAX_SNAPSHOTS", "build_optimizer", "restore_optimizer",
    "loss_term_names", "autocast", "memory_format", "training_net", "train_step", "warn_no_compile", "StepWindow",
    "evaluate", "is_better", "train", "rundir",
]
