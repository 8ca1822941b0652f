"""Train an SWWAE: one engine for the dashboard, the terminal and a multi-GPU server.

    python -m core.train --dataset mnist5k --labels 100 --epochs 10 --run runs/demo
    torchrun --nproc_per_node 4 -m core.train --dataset cifar10 --run-dir runs/cifar   # DDP, rank 0 writes

`train()` reports through the run directory (core.rundir) and an optional callback; it knows nothing of any UI.
Modes: 'supervised' trains on the labeled samples only; 'semi-supervised' on all, the ones without a kept label
(DataConfig.labels) carrying -1; 'unsupervised' on all with no labels and lambda_nll off.

The run, top to bottom in `_run`: `_set_up` (device, model, batches, optimizer; `_resume_from` last.pt), then per
epoch `_train_epoch` (each step `train_step`, logged by `_log_and_check`) and `_evaluate_and_checkpoint`. Weights
and images are channels_last on CPU and CUDA (`channels_last`); `compile` wraps the step in torch.compile.
The command line (core.cli) sits above this module: core.train never imports it; only running this file does.
"""
from __future__ import annotations

import functools
import math
import os
import signal
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from core import rundir
from core.batches import DeviceBatches, StreamBatches, random_shift
from core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from core.devices import describe
from core.distributed import DistContext, all_reduce_sum, broadcast_buffers, init_distributed
from core.data import NATIVE_SHAPES, DataConfig, fits_in_memory, materialize, one_per_class, open_split
from core.losses import UNLABELED, swwae_loss
from core.model import SWWAE, ModelConfig, digits_config, rgb32_config

__all__ = ["TrainConfig", "TrainResult", "MODES", "train", "evaluate", "learning_rate", "resolve_device", "check_configs",
           "default_model_config", "build_optimizer", "loss_term_names", "memory_format", "training_net", "train_step"]

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

    def __post_init__(self) -> None:
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


def default_model_config(dataset: str, **overrides) -> ModelConfig:
    """The default architecture for a dataset: digits (1x28) for MNIST-likes, RGB (3x32 / 3x96) otherwise."""
    channels, size = NATIVE_SHAPES.get(dataset, (3, 32))
    base = digits_config() if channels == 1 else rgb32_config(image_size=size)
    return replace(base, **overrides)


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r}: training runs on cpu, cuda or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


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


def _check_labels(labels: torch.Tensor, num_classes: int, split: str) -> None:
    """Every kept label must name one of the model's classes (cross-entropy would fail mid-run otherwise)."""
    kept = labels[labels != UNLABELED]
    if len(kept) and (int(kept.max()) >= num_classes or int(kept.min()) < 0):
        raise ValueError(f"the {split} split has labels {int(kept.min())}..{int(kept.max())}, but the model has "
                         f"num_classes {num_classes}; set --num-classes {int(kept.max()) + 1}")


def learning_rate(step: int, *, config: TrainConfig, total_steps: int) -> float:
    """nanoGPT-style: linear warm-up, then cosine decay from lr to min_lr over the remaining steps (or constant)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "none":
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, config: TrainConfig, *, fused: bool | None = None) -> torch.optim.Optimizer:
    """The optimizer of `config`; fused (one kernel over all parameters) where the weights are on the CPU or CUDA:
    10-15% more images/s for the digits model on a 2-core CPU (bench.limit), equal within float tolerance."""
    if fused is None:
        fused = next(model.parameters()).device.type in ("cpu", "cuda")
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, fused=fused)
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def loss_term_names(model_config: ModelConfig) -> list[str]:
    return ["total", "nll", "rec", "mid"] + [f"mid_{i}" for i in range(len(model_config.channels) - 1)]


class _Objective(nn.Module):
    """encode (trusted data: no finiteness host sync) + decode in one forward, so DDP sees a single call."""

    def __init__(self, model: SWWAE):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        encoding = self.model.encode(images, check_finite=False)
        return encoding, self.model.decode(encoding)


def _autocast(device: torch.device, config: TrainConfig):
    if device.type == "cuda" and config.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(model: SWWAE, batches, *, config: TrainConfig, device: torch.device,
             distributed: bool = False) -> dict[str, float]:
    """Mean loss terms, reconstruction MSE ('rec') and accuracy over `batches` (an iterable of (x, y))."""
    was_training = model.training
    model.eval()
    names = loss_term_names(model.config)
    is_nll = torch.tensor([n == "nll" for n in names], device=device)  # (T,): nll is a mean over labeled samples
    sums = torch.zeros(len(names) + 3, device=device)  # each term * its sample count, correct, labeled, count
    try:
        for images, labels in batches:
            with _autocast(device, config):
                encoding = model.encode(images, check_finite=False)
                decoding = model.decode(encoding)
            terms = swwae_loss(images, labels, encoding, decoding, **config.lambdas)
            labeled = (labels != UNLABELED).sum().float()
            count = torch.full_like(labeled, len(labels))
            correct = ((encoding.logits.argmax(dim=1) == labels) & (labels != UNLABELED)).sum().float()
            weights = torch.where(is_nll, labeled, count)  # (T,)
            sums += torch.cat([torch.stack([terms[n].float() for n in names]) * weights,
                               torch.stack([correct, labeled, count])])
    finally:
        model.train(was_training)
    sums = all_reduce_sum(sums, distributed).tolist()
    correct, labeled, count = sums[-3:]
    metrics = {name: value / max(labeled if name == "nll" else count, 1) for name, value in zip(names, sums)}
    metrics["accuracy"] = correct / labeled if labeled else None
    return metrics


# ---- the run -------------------------------------------------------------------------------------------------

def _make_batches(data: DataConfig, model_config: ModelConfig, train: TrainConfig, split: str, *,
                  ddp: DistContext, device: torch.device):
    """DeviceBatches when the split fits `max_memory_mb`, else StreamBatches; applies the mode to the labels."""
    shape = {"channels": model_config.in_channels, "image_size": model_config.image_size}
    subset = open_split(data, split, **shape)
    labels = subset.labels
    _check_labels(labels, model_config.num_classes, split)
    if split == "train" and train.mode == "supervised":
        subset = subset.take(torch.nonzero(labels != UNLABELED).flatten())
    elif split == "train" and train.mode == "unsupervised":
        subset = subset.take(torch.arange(len(labels)), torch.full_like(labels, UNLABELED))
    batch_size = train.batch_size if split == "train" else train.eval_batch_size
    if split == "train" and len(subset) // ddp.world_size < batch_size:
        raise ValueError(f"only {len(subset)} training samples for {ddp.world_size} process(es), fewer than "
                         f"batch_size {batch_size} each; lower --batch-size or keep more --labels")
    common = dict(batch_size=batch_size, seed=train.seed, rank=ddp.rank, world_size=ddp.world_size, device=device)
    mixed = split == "train" and train.mode == "semi-supervised" and data.labeled_per_batch > 0
    if fits_in_memory(subset, max_memory_mb=data.max_memory_mb):
        return DeviceBatches(materialize(subset), subset.labels, labeled_per_batch=data.labeled_per_batch if mixed else 0,
                             **common)
    if mixed:
        raise ValueError("labeled_per_batch needs the training set held in memory; raise --max-memory-mb")
    return StreamBatches(subset, workers=data.workers, **common)


def _restore_optimizer(optimizer: torch.optim.Optimizer, checkpoint: Checkpoint, config: TrainConfig) -> None:
    """Load the saved optimizer state when the optimizer kind is unchanged (else start it afresh); the
    hyperparameters of `config` win over the saved ones, so a resume may change them."""
    saved_kind = (checkpoint.train_config or {}).get("optimizer")
    if checkpoint.optimizer_state is None or saved_kind != config.optimizer:
        return
    optimizer.load_state_dict(checkpoint.optimizer_state)
    for group in optimizer.param_groups:
        group["weight_decay"] = config.weight_decay
        if "momentum" in group:
            group["momentum"] = config.momentum


def _rng_state(augment: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "augment": augment.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor], augment: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    augment.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class _StopSignal:
    """SIGINT/SIGTERM set a flag (the loop finishes its step); a second SIGINT interrupts at once."""

    def __init__(self):
        self.event = threading.Event()
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignal":
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _check_resumable(run_dir: Path, *, resume: bool) -> None:
    if not resume and (run_dir / rundir.LAST_CHECKPOINT).exists():
        raise rundir.RunDirError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run")
    if resume and not (run_dir / rundir.LAST_CHECKPOINT).exists():
        raise rundir.RunDirError(f"nothing to resume: {run_dir / rundir.LAST_CHECKPOINT} does not exist")


def _claim_run_dir(run_dir: Path, *, resume: bool) -> rundir.Claim:
    """Hold the run directory for this run (refused while another trainer holds it). Nothing in it changes until
    every input has been checked: a refused resume leaves a finished run as it was."""
    claim = rundir.claim(run_dir)
    try:
        _check_resumable(run_dir, resume=resume)
    except BaseException:
        claim.release()
        raise
    rundir.clear_stop(run_dir)  # a STOP left from before is no request to this run; one made from now on is
    return claim


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    data_config: DataConfig,
    *,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
    export_path: str | os.PathLike | None = None,
) -> TrainResult:
    """Train from scratch (or from run_dir/last.pt when `resume`) and return how it ended.

    Rank 0 writes the run directory (if given) and calls `on_record` with each metrics record. The run stops
    ('stopped') on SIGINT/SIGTERM, a STOP file in run_dir or `should_stop()`, after finishing its step;
    it fails ('failed', result returned, not raised) on a non-finite loss, keeping the last good checkpoint.
    `export_path`: at the end, also write the best weights (no optimizer state) there, e.g. a shipped model.
    Raises ValueError / CheckpointError / RunDirError / DatasetUnavailable for bad input.
    """
    check_configs(model_config, train_config, data_config)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ddp = init_distributed(use_cuda=resolve_device(train_config.device, local_rank=local_rank).type == "cuda")
    run_dir = Path(run_dir) if run_dir is not None else None
    claim: rundir.Claim | None = None
    try:
        with _StopSignal() as stop_signal:
            if run_dir is not None and ddp.is_main:  # rank 0 alone writes the run directory
                claim = _claim_run_dir(run_dir, resume=resume)
            return _run(model_config, train_config, data_config, ddp=ddp, stop_signal=stop_signal, run_dir=run_dir,
                        resume=resume, on_record=on_record, should_stop=should_stop, progress=progress,
                        export_path=export_path)
    except BaseException as exc:  # leave no "running" status behind a dead run
        if claim is not None:
            _mark_failed(run_dir, exc)
        raise
    finally:
        if claim is not None:
            claim.release()
        ddp.close()


def _mark_failed(run_dir: Path, exc: BaseException) -> None:
    """Turn this process' "running" status into "failed: <reason>"; best effort (the disk may be full)."""
    status = rundir.read_status(run_dir)
    if not status or status.get("state") != "running" or status.get("pid") != os.getpid():
        return  # not started yet: the status (if any) is a previous run's, and stays as it was
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        rundir.write_status(run_dir, "failed", step=status["step"], epoch=status["epoch"],
                            message=f"{type(exc).__name__}: {reason}")
    except OSError:
        pass  # the original error says more than this one


# ---- one optimisation step -----------------------------------------------------------------------------------

def memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    """The layout of the weights and images while training: channels_last where the convolutions run faster in it
    (CPU and CUDA; bench.limit measures both), the plain layout elsewhere (MPS) or when switched off."""
    if config.channels_last and device.type in ("cpu", "cuda"):
        return torch.channels_last
    return torch.contiguous_format


def training_net(model: SWWAE, config: TrainConfig, ddp: DistContext | None = None) -> nn.Module:
    """What each step calls: encode + decode as one forward, wrapped for DDP, compiled when `config.compile`."""
    net: nn.Module = _Objective(model)
    if ddp is not None and ddp.enabled:
        device = next(model.parameters()).device
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.lambdas["lambda_nll"] == 0)  # the classifier head gets no gradient then
    if config.compile:
        try:
            net = torch.compile(net)  # compiles lazily, at the first step (see _first_compiled_step)
        except Exception as exc:  # e.g. a Python version torch.compile does not support
            _warn_no_compile(exc)
    return net


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor, *,
               config: TrainConfig, device: torch.device, shift: int = 0,
               augment: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One optimisation step as the trainer runs it (bench.limit times this same function): shift the images
    (augmentation), forward (bf16 autocast on CUDA), the SWWAE loss, backward, clip, update.

    images: (B, C, H, W) in [0, 1]; labels: (B,), -1 where unlabeled. Returns the loss terms and the logits (B, K),
    detached and left on the device (no host sync).
    """
    images = random_shift(images, shift, augment) if shift else images  # (B, C, H, W)
    images = images.contiguous(memory_format=memory_format(config, device))  # (B, C, H, W), laid out as the weights
    with _autocast(device, config):
        encoding, decoding = net(images)
    terms = swwae_loss(images, labels, encoding, decoding, **config.lambdas)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    if config.grad_clip:
        nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
    optimizer.step()
    return {name: term.detach() for name, term in terms.items()}, encoding.logits.detach()


def _warn_no_compile(exc: BaseException) -> None:
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    warnings.warn(f"torch.compile cannot compile the training step here ({type(exc).__name__}: {reason}); "
                  "training without it", RuntimeWarning, stacklevel=3)


class _Window:
    """What the steps since the last "step" record add up to, kept on the device: the host reads it only when it
    logs, so a step costs no device sync. It also remembers the first step whose loss was not finite."""

    def __init__(self, names: list[str], device: torch.device):
        self.names = names
        self.sums = torch.zeros(len(names) + 2, device=device)  # (T + 2,): summed terms, correct, labeled
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_terms = torch.zeros(len(names), dtype=torch.bool, device=device)  # (T,)
        self.restart()

    def restart(self) -> None:
        self.sums.zero_()
        self.steps, self.images, self.start = 0, 0, time.time()

    def add(self, step: int, terms: dict[str, torch.Tensor], logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count in step `step` (0-based): its loss terms, logits (B, K) and labels (B,)."""
        stacked = torch.stack([terms[n].float() for n in self.names])  # (T,)
        finite = torch.isfinite(stacked)
        newly_bad = (self.first_bad_step < 0) & ~finite.all()
        self.bad_terms = torch.where(newly_bad, ~finite, self.bad_terms)
        self.first_bad_step = torch.where(newly_bad, step + 1, self.first_bad_step)  # numbered like the records
        labeled = labels != UNLABELED
        correct = ((logits.argmax(dim=1) == labels) & labeled).sum()
        self.sums += torch.cat([stacked, torch.stack([correct, labeled.sum()]).float()])
        self.steps += 1
        self.images += len(labels)

    def failure(self, any_bad: bool) -> str | None:
        """Why the run fails when some rank saw a non-finite loss (`any_bad`), else None."""
        if not any_bad:
            return None
        if int(self.first_bad_step) < 0:
            return "non-finite loss on another rank"
        bad = [n for n, is_bad in zip(self.names, self.bad_terms.tolist()) if is_bad]
        culprits = [n for n in bad if n != "total"] or bad  # name the term(s) that made the total non-finite
        return f"non-finite loss at step {int(self.first_bad_step)} (term {', '.join(culprits)})"


# ---- the run: set-up, epochs of steps, evaluation and checkpoints ---------------------------------------------

@dataclass(eq=False)
class _Run:
    """One training run: what set-up built, where the loop stands, and where it reports (rank 0 alone writes).
    The steps of `_run` below read it and move it on."""

    config: TrainConfig
    configs: dict[str, dict]  # {"model", "train", "data"} as plain dicts: config.json, and inside every checkpoint
    ddp: DistContext
    device: torch.device
    writer: Path | None  # the run directory on rank 0, None on the other ranks (or without one)
    model: SWWAE  # unwrapped, in memory_format(config, device) while training
    optimizer: torch.optim.Optimizer
    augment: torch.Generator  # random_shift's stream; its state goes into checkpoints
    train_batches: Any  # DeviceBatches | StreamBatches
    val_batches: Any
    shift: int  # DataConfig.shift
    window: _Window
    stop_signal: _StopSignal
    should_stop: Callable[[], bool] | None
    on_record: Callable[[dict[str, Any]], None] | None
    export_path: str | os.PathLike | None
    net: nn.Module | None = None  # what the step calls (training_net)
    compile_pending: bool = False  # the net is compiled and its first step (which compiles it) has not run
    step: int = 0
    epoch: int = 0
    resumed: bool = False
    wall_before: float = 0.0  # training seconds before this process (a resumed run)
    started: float = 0.0
    last_eval: dict[str, Any] = field(default_factory=dict)
    best_eval: dict[str, Any] = field(default_factory=dict)
    sample_images: torch.Tensor | None = None  # (S, C, H, W): one validation image per class, rank 0 only
    progress_bar: Any = None

    @property
    def steps_per_epoch(self) -> int:
        return self.train_batches.steps_per_epoch

    @property
    def total_steps(self) -> int:
        every_epoch = self.config.epochs * self.steps_per_epoch
        return min(self.config.max_steps, every_epoch) if self.config.max_steps else every_epoch

    def optimisation_step(self, images: torch.Tensor, labels: torch.Tensor):
        if self.compile_pending:
            return _first_compiled_step(self, images, labels)
        return train_step(self.net, self.optimizer, images, labels, config=self.config, device=self.device,
                          shift=self.shift, augment=self.augment)

    def stop_requested(self) -> bool:
        """SIGINT/SIGTERM, should_stop() or a STOP file in the run directory."""
        return (self.stop_signal.event.is_set() or (self.should_stop is not None and self.should_stop())
                or (self.writer is not None and rundir.stop_requested(self.writer)))

    @functools.cached_property
    def device_label(self) -> str:
        """The device as status.json records it, e.g. 'cuda:0 — NVIDIA H200, 140 GiB' (looked up once)."""
        return describe(self.device)

    def status(self, state: str, message: str = "") -> None:
        if self.writer is not None:
            rundir.write_status(self.writer, state, step=self.step, epoch=self.epoch, message=message,
                                epochs=self.config.epochs, steps_per_epoch=self.steps_per_epoch,
                                total_steps=self.total_steps, device=self.device_label)

    def emit(self, record: dict[str, Any]) -> None:
        record.update(wall_time=self.wall_before + time.time() - self.started, time=time.time())
        if self.writer is not None:
            rundir.append_metrics(self.writer, record)
        if self.on_record is not None and self.ddp.is_main:
            self.on_record(record)

    def save(self, name: str) -> None:
        if self.writer is None:
            return
        save_checkpoint(self.writer / name, self.model, optimizer=self.optimizer, train_config=self.configs["train"],
                        data_config=self.configs["data"], step=self.step, epoch=self.epoch,
                        rng_state=_rng_state(self.augment),
                        metrics={"wall_time": self.wall_before + time.time() - self.started,
                                 "last_eval": self.last_eval, "best_eval": self.best_eval,
                                 "steps_per_epoch": self.steps_per_epoch})

    def finish(self, state: str, message: str) -> TrainResult:
        """The final status, the export (when asked) and the result, its model in the plain layout."""
        if self.progress_bar is not None:
            self.progress_bar.close()
        self.status(state, message)
        if self.export_path is not None and self.ddp.is_main and state != "failed":
            _export_result(self, state)
        self.model.to(memory_format=torch.contiguous_format)  # laid out as a loaded checkpoint is: same outputs
        return TrainResult(state, self.step, self.epoch, message, self.model, self.last_eval, self.best_eval)


def _run(model_config, train_config, data_config, *, ddp, stop_signal, run_dir, resume, on_record, should_stop,
         progress, export_path) -> TrainResult:
    """Set up (or resume), then epochs of optimisation steps, each epoch closed by an evaluation and checkpoints."""
    run = _set_up(model_config, train_config, data_config, ddp=ddp, run_dir=run_dir, resume=resume,
                  stop_signal=stop_signal, should_stop=should_stop, on_record=on_record, export_path=export_path)
    if progress and ddp.is_main:
        from tqdm import tqdm
        run.progress_bar = tqdm(total=run.total_steps, initial=run.step, unit="step", dynamic_ncols=True)
    run.status("running", "resumed" if run.resumed else "started")
    if run.step >= run.total_steps:
        return run.finish("finished", f"already trained {run.step} of {run.total_steps} steps")
    while run.epoch < train_config.epochs and run.step < run.total_steps:
        ended = _train_epoch(run)
        if ended is not None:
            return ended  # stopped, or failed on a non-finite loss
        _evaluate_and_checkpoint(run)
    return run.finish("finished", f"trained {run.step} steps, {run.epoch} epochs")


def _set_up(model_config: ModelConfig, tc: TrainConfig, data_config: DataConfig, *, ddp: DistContext,
            run_dir: Path | None, resume: bool, **hooks) -> _Run:
    """Device, model, batches and optimizer, seeded per rank; a resumed run continues from last.pt. Rank 0 writes
    config.json (and a "resume" record) and picks the sample images."""
    device = resolve_device(tc.device, local_rank=ddp.local_rank)
    writer = run_dir if ddp.is_main else None  # rank 0 alone writes (and has claimed the directory)
    if writer is None and resume and run_dir is not None:
        _check_resumable(run_dir, resume=True)
    torch.manual_seed(tc.seed * SEED_STRIDE + ddp.rank)
    checkpoint: Checkpoint | None = load_checkpoint(run_dir / rundir.LAST_CHECKPOINT) if resume else None
    if checkpoint is not None and asdict(checkpoint.model_config) != asdict(model_config):
        raise ValueError(f"the model config differs from the one {run_dir} was trained with; resume without "
                         "architecture options")
    model = checkpoint.model if checkpoint is not None else SWWAE(model_config)
    model = model.to(device, memory_format=memory_format(tc, device)).train()
    train_batches = _make_batches(data_config, model_config, tc, "train", ddp=ddp, device=device)
    val_batches = _make_batches(data_config, model_config, tc, "val", ddp=ddp, device=device)
    run = _Run(config=tc, configs={"model": asdict(model_config), "train": asdict(tc), "data": asdict(data_config)},
               ddp=ddp, device=device, writer=writer, model=model, optimizer=build_optimizer(model, tc),
               augment=torch.Generator(device=device).manual_seed(tc.seed * SEED_STRIDE + ddp.rank),
               train_batches=train_batches, val_batches=val_batches, shift=data_config.shift,
               window=_Window(loss_term_names(model_config), device), **hooks)
    if checkpoint is not None:
        _resume_from(run, checkpoint, run_dir)
    if writer is not None:
        run.sample_images = _sample_images(val_batches, tc.samples)
        rundir.write_config(writer, **run.configs)
        if checkpoint is not None:
            rundir.append_metrics(writer, {"kind": "resume", "step": run.step, "time": time.time()})
    run.net = training_net(model, tc, ddp)
    run.compile_pending = hasattr(run.net, "_orig_mod")  # torch.compile's wrapper: its first step compiles
    run.started = time.time()
    return run


def _resume_from(run: _Run, checkpoint: Checkpoint, run_dir: Path) -> None:
    """Continue where last.pt left off: step and epoch, optimizer state, RNG streams, wall time, evaluations."""
    tc, ddp = run.config, run.ddp
    run.step, run.epoch, run.resumed = checkpoint.step, checkpoint.epoch, True
    _restore_optimizer(run.optimizer, checkpoint, tc)
    if checkpoint.rng_state is not None and ddp.is_main:
        _set_rng_state(checkpoint.rng_state, run.augment)
    elif ddp.enabled:  # only rank 0's streams are saved: the others continue from a seed that moves with the step
        torch.manual_seed(tc.seed * SEED_STRIDE + ddp.rank + run.step)
        run.augment.manual_seed(tc.seed * SEED_STRIDE + ddp.rank + run.step)
    saved_steps_per_epoch = checkpoint.metrics.get("steps_per_epoch", run.steps_per_epoch)
    if saved_steps_per_epoch != run.steps_per_epoch:
        raise ValueError(f"{run_dir} was trained with {saved_steps_per_epoch} steps per epoch, now it would be "
                         f"{run.steps_per_epoch}; resume with the same batch size, data and process count")
    run.wall_before = float(checkpoint.metrics.get("wall_time", 0.0))
    run.best_eval = dict(checkpoint.metrics.get("best_eval") or {})
    run.last_eval = dict(checkpoint.metrics.get("last_eval") or {})


def _sample_images(val_batches, samples: int) -> torch.Tensor | None:
    """One validation image of each class, in class order (mnist5k's split is sorted by class): (S, C, H, W)."""
    val_labels = torch.cat([labels.cpu() for _, labels in val_batches.in_order()])  # (N,): this rank's shard
    rows, size = one_per_class(val_labels, samples).tolist(), val_batches.batch_size
    wanted = {r // size for r in rows}  # the in-order batches that hold those rows
    kept = {b: images for b, (images, _) in enumerate(val_batches.in_order()) if b in wanted}
    return torch.stack([kept[r // size][r % size] for r in rows]) if rows else None  # (S, C, H, W)


def _train_epoch(run: _Run) -> TrainResult | None:
    """Optimisation steps to the end of the epoch (or of max_steps), logging as it goes. Returns the result when
    the run stops or fails on the way, else None."""
    run.model.train()
    for images, labels in run.train_batches.epoch(run.epoch, start_step=run.step - run.epoch * run.steps_per_epoch):
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(run.step, config=run.config, total_steps=run.total_steps)
        terms, logits = run.optimisation_step(images, labels)
        run.window.add(run.step, terms, logits, labels)
        run.step += 1
        if run.progress_bar is not None:
            run.progress_bar.update(1)
        # Single process: look for a stop request every step (cheap, no device sync). DDP: at log steps, where all
        # ranks agree through the all-reduce, so they stop at the same step.
        local_stop = not run.ddp.enabled and run.stop_requested()
        end_of_epoch = run.step % run.steps_per_epoch == 0
        if local_stop or run.step % run.config.log_every == 0 or end_of_epoch or run.step >= run.total_steps:
            ended = _log_and_check(run, end_of_epoch=end_of_epoch)
            if ended is not None:
                return ended
        if run.step >= run.total_steps:
            break
    if run.step == (run.epoch + 1) * run.steps_per_epoch:  # the epoch ran to its end (not cut short by max_steps)
        run.epoch += 1
    return None


def _first_compiled_step(run: _Run, images: torch.Tensor, labels: torch.Tensor):
    """The first step of a compiled net compiles it. Where that fails (no C++ compiler or Triton, an op it cannot
    trace), what the attempt changed (weights, BatchNorm statistics, RNG streams) is put back, a warning says why,
    and the run goes on without compiling: the eager step's results, at the eager speed."""
    run.compile_pending = False
    before = {name: value.clone() for name, value in run.model.state_dict().items()}
    rng = _rng_state(run.augment)
    try:
        return run.optimisation_step(images, labels)
    except Exception as exc:
        _warn_no_compile(exc)
        run.model.load_state_dict(before)
        _set_rng_state(rng, run.augment)
        run.net = run.net._orig_mod  # the eager net torch.compile wrapped
        return run.optimisation_step(images, labels)


def _log_and_check(run: _Run, *, end_of_epoch: bool) -> TrainResult | None:
    """At a log step: the "step" record; then fail on a non-finite loss, stop when asked (after saving last.pt) or
    save last.pt every checkpoint_every steps. Returns the result when the run ends here, else None."""
    failure, stop = _flush_window(run)
    if failure:
        return run.finish("failed", failure)
    if stop:
        run.save(rundir.LAST_CHECKPOINT)
        if run.writer is not None:
            rundir.clear_stop(run.writer)
        return run.finish("stopped", f"stopped at step {run.step}")
    if run.config.checkpoint_every and run.step % run.config.checkpoint_every == 0 and not end_of_epoch:
        run.save(rundir.LAST_CHECKPOINT)
    run.status("running")
    return None


def _flush_window(run: _Run) -> tuple[str | None, bool]:
    """Emit the window's "step" record and start a new window. Returns (a non-finite-loss message or None, whether
    any rank asked to stop); under DDP one all-reduce carries the sums and both flags, so all ranks agree."""
    window, names, world = run.window, run.window.names, run.ddp.world_size
    flags = torch.tensor([float(window.first_bad_step >= 0), float(run.stop_requested())], device=run.device)
    summed = all_reduce_sum(torch.cat([window.sums, flags]), run.ddp.enabled).tolist()
    if window.steps:
        elapsed = time.time() - window.start
        correct, labeled = summed[len(names)], summed[len(names) + 1]
        record = {"kind": "step", "step": run.step, "epoch": run.epoch}
        record.update({n: v / (window.steps * world) for n, v in zip(names, summed)})
        record.update(accuracy=correct / labeled if labeled else None, lr=run.optimizer.param_groups[0]["lr"],
                      images_per_s=window.images * world / max(elapsed, 1e-9))
        run.emit(record)
        if run.progress_bar is not None:
            run.progress_bar.set_postfix(loss=f"{record['total']:.4f}", epoch=run.epoch)
    window.restart()
    return window.failure(any_bad=summed[-2] > 0), summed[-1] > 0


def _evaluate_and_checkpoint(run: _Run) -> None:
    """The end of an epoch: evaluate, then best.pt when this evaluation is the best so far, and last.pt."""
    run.last_eval = _evaluate_and_log(run)
    if run.last_eval.get("best"):
        run.best_eval = run.last_eval
        run.save(rundir.BEST_CHECKPOINT)
    run.save(rundir.LAST_CHECKPOINT)
    run.window.start = time.time()  # evaluation time is not training throughput


def _evaluate_and_log(run: _Run) -> dict[str, Any]:
    """Evaluate on the validation batches, emit the "eval" record (marked best or not), write the samples PNG."""
    model, tc = run.model, run.config
    if run.ddp.enabled:  # BatchNorm running stats drift per rank; evaluate everyone with rank 0's
        broadcast_buffers(model)
    metrics = evaluate(model, run.val_batches.in_order(), config=tc, device=run.device, distributed=run.ddp.enabled)
    record = {"kind": "eval", "step": run.step, "epoch": run.epoch, **metrics}
    record["best"] = _is_better(record, run.best_eval, by_accuracy=tc.mode != "unsupervised")
    run.emit(record)
    if run.writer is not None and run.sample_images is not None and len(run.sample_images):
        model.eval()
        with torch.no_grad(), _autocast(run.device, tc):
            recon = model.decode(model.encode(run.sample_images, check_finite=False)).recon  # (S, C, H, W)
        model.train()
        rundir.write_samples(run.writer, run.epoch, run.sample_images, recon)
    return record


def _is_better(current: dict[str, Any], best: dict[str, Any], *, by_accuracy: bool) -> bool:
    """Higher validation accuracy wins (lower total breaks ties); unsupervised, lower reconstruction error."""
    if not best:
        return True
    if by_accuracy and current.get("accuracy") is not None and best.get("accuracy") is not None:
        return (current["accuracy"], -current["total"]) > (best["accuracy"], -best["total"])
    return current["rec"] < best["rec"]


def _export_result(run: _Run, state: str) -> None:
    """Write the weights-only export: best.pt's weights when there is one, else (finished) the final ones. A run
    stopped before its first evaluation exports nothing: the file keeps what it held."""
    best_path = run.writer / rundir.BEST_CHECKPOINT if run.writer is not None else None
    if best_path is not None and best_path.exists():
        best = load_checkpoint(best_path)
        _export(run.export_path, best.model, best.train_config, best.data_config, best.step, best.epoch,
                best.metrics.get("last_eval") or {})
    elif state == "finished":
        _export(run.export_path, run.model, run.configs["train"], run.configs["data"], run.step, run.epoch,
                run.last_eval)


def _export(path, model: SWWAE, train_config: dict, data_config: dict, step: int, epoch: int,
            evaluation: dict[str, Any]) -> None:
    """A small weights-only checkpoint (no optimizer or RNG state); metrics["eval"] is its validation record."""
    save_checkpoint(path, model, train_config=train_config, data_config=data_config, step=step, epoch=epoch,
                    metrics={"eval": evaluation})


if __name__ == "__main__":  # `python -m core.train`: the script, not the module core.train, starts the CLI
    from core.cli import main  # the command line sits above this engine (it imports core.train, never the reverse)

    sys.exit(main())
