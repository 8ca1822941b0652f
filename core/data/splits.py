"""Split rules as pure functions of labels: the validation hold-out, the labels kept for semi-supervised training,
subsets of a seeded shuffle, and one row per class for sample strips. Every rule is seeded and class-balanced, so
the same call gives the same rows on every machine and in every process.
"""
from __future__ import annotations

import torch

from core.model import UNLABELED

__all__ = ["holdout", "keep_labels", "subset_index", "one_per_class", "balanced_counts"]


def balanced_counts(class_sizes: list[int], total: int) -> list[int]:
    """How many of `total` rows each class gives, in proportion to its size (largest remainders round up; ties to
    the lower class), never more than the class has."""
    size = sum(class_sizes)
    if size == 0 or total <= 0:
        return [0] * len(class_sizes)
    total = min(total, size)
    exact = [total * n / size for n in class_sizes]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda c: (-(exact[c] - counts[c]), c))
    for c in by_remainder[: total - sum(counts)]:
        counts[c] += 1
    return [min(c, n) for c, n in zip(counts, class_sizes)]


def holdout(labels: torch.Tensor, count: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept rows, held-out rows), both sorted: `count` rows held out, balanced over the classes of `labels` (N,)
    in proportion to their sizes, chosen by a generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels).tolist()
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    counts = balanced_counts([len(m) for m in members], count)
    held = [m[torch.randperm(len(m), generator=generator)[:k]] for m, k in zip(members, counts)]
    is_held = torch.zeros(len(labels), dtype=torch.bool)
    if held:
        is_held[torch.cat(held)] = True
    return torch.nonzero(~is_held).flatten(), torch.nonzero(is_held).flatten()


def keep_labels(labels: torch.Tensor, count: int, *, seed: int) -> torch.Tensor:
    """A copy of `labels` (N,) where only `count` stay, spread evenly over classes (seeded); the rest are -1.

    Classes get count // K each and the first count % K classes (in a seeded order) one more.
    """
    if count < 0 or count >= len(labels):
        return labels.clone()
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels[labels != UNLABELED])
    classes = classes[torch.randperm(len(classes), generator=generator)]
    per_class, extra = divmod(count, len(classes))
    kept = []
    for rank, c in enumerate(classes.tolist()):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        kept.append(members[:per_class + (1 if rank < extra else 0)])
    out = torch.full_like(labels, UNLABELED)
    kept_index = torch.cat(kept)
    out[kept_index] = labels[kept_index]
    return out


def subset_index(length: int, limit: int, seed: int) -> torch.Tensor:
    """The first `limit` rows of a seeded shuffle (all rows, in order, when limit is 0)."""
    if limit <= 0 or limit >= length:
        return torch.arange(length)
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed))[:limit]


def one_per_class(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Row indices (min(count, N),) into `labels` (N,): the first row of each class in class order, then the second
    row of each class, and so on (a class that runs out is skipped); unlabeled rows (-1) follow all labeled ones.

    A sample strip drawn from any split then shows every class once, in class order.
    """
    labels = labels.cpu()
    classes = torch.unique(labels[labels != UNLABELED]).tolist()  # sorted
    members = [torch.nonzero(labels == c).flatten() for c in classes]  # K tensors of rows, in row order
    rounds = torch.nn.utils.rnn.pad_sequence(members, padding_value=-1) if members else labels.new_empty(0)  # (R, K)
    labeled = rounds.flatten()  # (R * K,): round 0 (one row per class), round 1, ...; -1 where a class ran out
    unlabeled = torch.nonzero(labels == UNLABELED).flatten()
    return torch.cat([labeled[labeled >= 0], unlabeled])[:max(count, 0)]
