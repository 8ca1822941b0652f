"""One optimisation step as the trainer runs it, the net it calls, and the window of steps between two records.

`train_step` is shared with the benchmarks (bench.limit, bench.gpu), so what they time is what the trainer runs.
Weights and images are channels_last on CPU and CUDA (`memory_format`); `compile` wraps the net in torch.compile.
"""
from __future__ import annotations

import time
import warnings
from contextlib import nullcontext

import torch
import torch.nn as nn

from core.data import random_flip, random_shift
from core.model import SWWAE, UNLABELED, ModelConfig, swwae_loss
from core.training.config import TrainConfig
from core.training.distributed import DistContext

__all__ = ["loss_term_names", "autocast", "memory_format", "training_net", "train_step", "warn_no_compile",
           "StepWindow"]


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


def autocast(device: torch.device, config: TrainConfig):
    if device.type == "cuda" and config.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


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
            warn_no_compile(exc)
    return net


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor, *,
               config: TrainConfig, device: torch.device, shift: int = 0, flip: bool = False,
               augment: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One optimisation step as the trainer runs it (bench.limit times this same function): shift and mirror the
    images (augmentation), forward (bf16 autocast on CUDA), the SWWAE loss, backward, clip, update.

    images: (B, C, H, W) in [0, 1]; labels: (B,), -1 where unlabeled. Returns the loss terms and the logits (B, K),
    detached and left on the device (no host sync).
    """
    images = random_shift(images, shift, augment) if shift else images  # (B, C, H, W)
    images = random_flip(images, augment) if flip else images  # (B, C, H, W)
    images = images.contiguous(memory_format=memory_format(config, device))  # (B, C, H, W), laid out as the weights
    with autocast(device, config):
        encoding, decoding = net(images)
    terms = swwae_loss(images, labels, encoding, decoding, **config.lambdas)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    if config.grad_clip:
        nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
    optimizer.step()
    return {name: term.detach() for name, term in terms.items()}, encoding.logits.detach()


def warn_no_compile(exc: BaseException) -> None:
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    warnings.warn(f"torch.compile cannot compile the training step here ({type(exc).__name__}: {reason}); "
                  "training without it", RuntimeWarning, stacklevel=3)


class StepWindow:
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
