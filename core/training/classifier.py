"""Train a plain classifier (a network of the zoo, core.model.zoo) on the project's data, and write it as a
pooling-network file (core.model.network_file) for the explorer:

    python -m core.train --network zoo:small_vgg --dataset fashion-mnist --epochs 15 --shift 2 --flip --test \
        --export checkpoints/fashion_vgg.pt

The data are the SWWAE trainer's: the same splits (train less a seeded validation hold-out, the official test set read
only by `test`), the same batches held on the device, the same shift / flip augmentation, the same optimizers and
warm-up + cosine learning-rate schedule (TrainConfig). Only labelled training samples are used. The inputs are
normalised with the training split's per-channel mean and std, which go into the file's "input". Each epoch ends
with an evaluation on the validation split; the best-on-validation weights are kept and written (atomically) when
they improve, so a run cut short still leaves its best network behind; `test` evaluates them on the test split once
training is over.
"""
from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.data import (
    CLASS_NAMES, NATIVE_SHAPES, DataConfig, DeviceBatches, StreamBatches, as_float_images, fits_in_memory, materialize,
    open_split, random_flip, random_shift,
)
from core.model import UNLABELED
from core.model.network_file import save_network_file
from core.model.zoo import ARCHITECTURES, build
from core.training.config import TrainConfig, check_labels
from core.training.devices import resolve_device
from core.training.optim import build_optimizer
from core.training.schedule import learning_rate
from core.training.step import autocast, memory_format

__all__ = ["ZOO_PREFIX", "NETWORK_FILE_NAME", "ClassifierResult", "train_classifier", "zoo_name", "evaluate_classifier"]

ZOO_PREFIX = "zoo:"
NETWORK_FILE_NAME = "network.pt"  # in the run folder, when no --export names the file


@dataclass
class ClassifierResult:
    state: str  # finished | stopped | failed
    step: int
    epoch: int
    message: str
    model: nn.Module  # the network with its best-on-validation weights (the final ones when never evaluated)
    best_eval: dict[str, Any] = field(default_factory=dict)  # {"epoch", "step", "val_loss", "val_acc"}
    test_eval: dict[str, Any] = field(default_factory=dict)  # {"test_loss", "test_acc", "test_images"} (test=True)
    path: str | None = None  # the pooling-network file written, None when none was


def zoo_name(architecture: str) -> str:
    """'zoo:small_vgg' -> 'small_vgg'; ValueError (one line) for anything the zoo does not hold."""
    name = architecture[len(ZOO_PREFIX):] if architecture.startswith(ZOO_PREFIX) else None
    if name not in ARCHITECTURES:
        raise ValueError(f"--network {architecture!r}: this trainer trains the project's own networks, one of "
                         f"{', '.join(ZOO_PREFIX + n for n in sorted(ARCHITECTURES))}")
    return name


def _batches(data: DataConfig, split: str, *, shape: dict[str, int], batch_size: int, seed: int,
             device: torch.device):
    """The split's labelled samples as DeviceBatches (held on the device, IDX pixels as uint8) or StreamBatches."""
    subset = open_split(data, split, **shape)
    subset = subset.take(torch.nonzero(subset.labels != UNLABELED).flatten())
    if split == "train" and len(subset) < batch_size:
        raise ValueError(f"only {len(subset)} labelled training samples, fewer than batch_size {batch_size}")
    common = dict(batch_size=batch_size, seed=seed, device=device)
    if fits_in_memory(subset, max_memory_mb=data.max_memory_mb):
        return DeviceBatches(materialize(subset, keep_bytes=True), subset.labels, **common)
    return StreamBatches(subset, workers=data.workers, **common)


def _labels(batches) -> torch.Tensor:
    return batches.labels if isinstance(batches, DeviceBatches) else batches.dataset.labels


def channel_stats(batches) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of every image in `batches` (float64 sums, one pass)."""
    total = total_sq = None
    count = 0
    for images, _ in batches.in_order():
        images = as_float_images(images).double()  # (B, C, H, W)
        sums, sums_sq = images.sum(dim=(0, 2, 3)), images.square().sum(dim=(0, 2, 3))  # (C,)
        total = sums if total is None else total + sums
        total_sq = sums_sq if total_sq is None else total_sq + sums_sq
        count += images[:, 0].numel()
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return [round(v, 6) for v in mean.tolist()], [round(v, 6) for v in std.tolist()]


def _normalizer(mean: list[float], std: list[float], device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return lambda images: (as_float_images(images) - mean_t) / std_t  # (B, C, H, W)


@torch.no_grad()
def evaluate_classifier(net: nn.Module, batches, normalize: Callable[[torch.Tensor], torch.Tensor], *,
                        config: TrainConfig, device: torch.device) -> dict[str, float]:
    """{"loss": mean cross-entropy, "accuracy", "images"} of `net` over `batches` in order, in eval mode."""
    was_training = net.training
    net.eval()
    loss_sum, correct, count = 0.0, 0, 0
    try:
        for images, labels in batches.in_order():
            images = normalize(images).contiguous(memory_format=memory_format(config, device))
            with autocast(device, config):
                logits = net(images)  # (B, num_classes)
            loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
            count += len(labels)
    finally:
        net.train(was_training)
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / count if count else math.nan, "images": count}


@dataclass
class _Setup:
    """What an epoch needs: the network and its optimizer, the data, the normaliser and the augmentation stream."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    train: Any  # DeviceBatches | StreamBatches
    val: Any
    normalize: Callable[[torch.Tensor], torch.Tensor]
    augment: torch.Generator
    device: torch.device
    total_steps: int
    file_fields: dict[str, Any]  # the pooling-network file's fields other than the weights, step, epoch, metrics


def _defaults(factory: Callable[..., nn.Module]) -> dict[str, Any]:
    """The keyword arguments of a zoo factory with their defaults, tuples as lists (plain, as the file stores them)."""
    parameters = inspect.signature(factory).parameters.values()
    return {p.name: list(p.default) if isinstance(p.default, tuple) else p.default for p in parameters
            if p.default is not inspect.Parameter.empty}


def _set_up(architecture: str, tc: TrainConfig, data: DataConfig,
            architecture_args: dict[str, Any] | None) -> _Setup:
    name = zoo_name(architecture)
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    channels, size = NATIVE_SHAPES.get(data.dataset, (3, 32))
    shape = {"channels": channels, "image_size": size}
    if 2 * data.shift >= size:
        raise ValueError(f"shift {data.shift} must be less than half the image size ({size})")
    train = _batches(data, "train", shape=shape, batch_size=tc.batch_size, seed=tc.seed, device=device)
    val = _batches(data, "val", shape=shape, batch_size=tc.eval_batch_size, seed=tc.seed, device=device)
    labels = _labels(train)
    num_classes = len(CLASS_NAMES.get(data.dataset, ())) or int(labels.max()) + 1
    check_labels(labels, num_classes, "train")
    check_labels(_labels(val), num_classes, "val")
    args = {**_defaults(ARCHITECTURES[name]), "in_channels": channels, "num_classes": num_classes,
            "image_size": size, **(architecture_args or {})}  # every argument, so the file alone rebuilds the net
    net = build(name, **args).to(device, memory_format=memory_format(tc, device)).train()
    mean, std = channel_stats(train)
    steps = train.steps_per_epoch * tc.epochs
    file_fields = dict(architecture=architecture, architecture_args=args,
                       input={"channels": channels, "size": size, "mean": mean, "std": std},
                       data_config=asdict(data), train_config=asdict(tc))
    return _Setup(net=net, optimizer=build_optimizer(net, tc), train=train, val=val,
                  normalize=_normalizer(mean, std, device), augment=torch.Generator(device=device).manual_seed(tc.seed),
                  device=device, total_steps=min(steps, tc.max_steps) if tc.max_steps else steps,
                  file_fields=file_fields)


def _train_epoch(setup: _Setup, tc: TrainConfig, data: DataConfig, epoch: int, step: int,
                 progress_bar) -> tuple[int, dict[str, float]]:
    """One pass over the training batches (or up to total_steps); (the step reached, {"train_loss", "train_acc"})."""
    net, optimizer = setup.net, setup.optimizer
    net.train()
    loss_sum = torch.zeros((), device=setup.device)
    correct = torch.zeros((), device=setup.device, dtype=torch.long)
    seen = 0
    for images, labels in setup.train.epoch(epoch):
        if step >= setup.total_steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config=tc, total_steps=setup.total_steps)
        images = random_shift(as_float_images(images), data.shift, setup.augment)  # (B, C, H, W)
        if data.flip:
            images = random_flip(images, setup.augment)
        images = setup.normalize(images).contiguous(memory_format=memory_format(tc, setup.device))
        with autocast(setup.device, tc):
            logits = net(images)  # (B, num_classes)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip:
            nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
        optimizer.step()
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += len(labels)
        step += 1
        if progress_bar is not None:
            progress_bar.update(1)
            progress_bar.set_postfix(loss=f"{float(loss):.4f}", epoch=epoch + 1)
    return step, {"train_loss": float(loss_sum) / max(seen, 1), "train_acc": float(correct) / max(seen, 1)}


def train_classifier(architecture: str, train_config: TrainConfig, data_config: DataConfig, *,
                     export_path: str | os.PathLike | None = None, test: bool = False, progress: bool = False,
                     on_epoch: Callable[[dict[str, Any]], None] | None = None,
                     architecture_args: dict[str, Any] | None = None) -> ClassifierResult:
    """Train the zoo network `architecture` ("zoo:small_vgg") and return how it ended.

    Each epoch ends with a validation record {"epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc",
    "best", "lr", "seconds"} passed to `on_epoch`; when it is the best so far (higher val_acc, lower val_loss breaks
    ties) the weights are kept and written to `export_path`. `test`: at the end, evaluate the kept weights on the
    test split and rewrite the file with "test_acc". Ctrl-C stops the run ('stopped') with the best file written.
    Raises ValueError (one line) / DatasetUnavailable for bad input.
    """
    tc, data = train_config, data_config
    setup = _set_up(architecture, tc, data, architecture_args)
    started, step, epoch = time.time(), 0, 0
    best: dict[str, Any] = {}
    best_state = None
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=setup.total_steps, unit="step", dynamic_ncols=True)
    state, message = "finished", ""
    try:
        while epoch < tc.epochs and step < setup.total_steps:
            epoch_start = time.time()
            step, record = _train_epoch(setup, tc, data, epoch, step, bar)
            epoch += 1
            if not math.isfinite(record["train_loss"]):
                state, message = "failed", f"non-finite training loss in epoch {epoch}"
                break
            val = evaluate_classifier(setup.net, setup.val, setup.normalize, config=tc, device=setup.device)
            record.update(epoch=epoch, step=step, val_loss=val["loss"], val_acc=val["accuracy"],
                          lr=setup.optimizer.param_groups[0]["lr"], seconds=time.time() - epoch_start)
            record["best"] = not best or (val["accuracy"], -val["loss"]) > (best["val_acc"], -best["val_loss"])
            if record["best"]:
                best = {k: record[k] for k in ("epoch", "step", "val_loss", "val_acc", "train_loss", "train_acc")}
                best_state = {k: v.detach().clone() for k, v in setup.net.state_dict().items()}
                _write(setup, export_path, best, {}, started, epoch_count=epoch)
            if on_epoch is not None:
                on_epoch(record)
        message = message or f"trained {step} steps, {epoch} epochs"
    except KeyboardInterrupt:
        state, message = "stopped", f"stopped at step {step} (epoch {epoch + 1}); the best network so far is kept"
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        setup.net.load_state_dict(best_state)
    test_eval = {}
    if test and state == "finished" and best_state is not None:
        test_eval = _evaluate_test(setup, tc, data)
        _write(setup, export_path, best, test_eval, started, epoch_count=epoch)
    path = str(export_path) if export_path is not None and best_state is not None else None
    return ClassifierResult(state=state, step=step, epoch=epoch, message=message, model=setup.net, best_eval=best,
                            test_eval=test_eval, path=path)


def _evaluate_test(setup: _Setup, tc: TrainConfig, data: DataConfig) -> dict[str, Any]:
    """The one reading of the test split: {"test_loss", "test_acc", "test_images"} of the network as it is (the
    best-on-validation weights)."""
    shape = {"channels": setup.file_fields["input"]["channels"], "image_size": setup.file_fields["input"]["size"]}
    batches = _batches(data, "test", shape=shape, batch_size=tc.eval_batch_size, seed=tc.seed, device=setup.device)
    scores = evaluate_classifier(setup.net, batches, setup.normalize, config=tc, device=setup.device)
    return {"test_loss": scores["loss"], "test_acc": scores["accuracy"], "test_images": scores["images"]}


def _write(setup: _Setup, path: str | os.PathLike | None, best: dict[str, Any], test_eval: dict[str, Any],
           started: float, *, epoch_count: int) -> None:
    """The pooling-network file of the network's current weights (the best so far) with its metrics."""
    if path is None:
        return
    metrics = {**best, **test_eval, "best_epoch": best["epoch"], "epochs_trained": epoch_count,
               "val_images": len(_labels(setup.val)), "wall_time": time.time() - started,
               "parameters": sum(p.numel() for p in setup.net.parameters())}
    save_network_file(path, setup.net, step=best["step"], epoch=best["epoch"], metrics=metrics, **setup.file_fields)
