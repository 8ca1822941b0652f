"""Evaluation: the mean loss terms, reconstruction MSE and accuracy over a split; which evaluation is the best."""
from __future__ import annotations

from typing import Any

import torch

from core.model import SWWAE, UNLABELED, swwae_loss
from core.training.config import TrainConfig
from core.training.distributed import all_reduce_sum
from core.training.step import autocast, loss_term_names

__all__ = ["evaluate", "is_better"]


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
            with autocast(device, config):
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


def is_better(current: dict[str, Any], best: dict[str, Any], *, by_accuracy: bool) -> bool:
    """Higher validation accuracy wins (lower total breaks ties); unsupervised, lower reconstruction error."""
    if not best:
        return True
    if by_accuracy and current.get("accuracy") is not None and best.get("accuracy") is not None:
        return (current["accuracy"], -current["total"]) > (best["accuracy"], -best["total"])
    return current["rec"] < best["rec"]
