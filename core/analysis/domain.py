"""Is an input like the model's training data? Its scores ranked against the same scores of the model's own dataset
examples; above the 99th percentile of either, the input is unlike them and a class prediction for it deserves no
trust, however confident.

Two scores, both the model's own:
- **reconstruction error** (per-pixel MSE): an autoencoder reconstructs what resembles its training data well. It
  flags a garment under the digits model, but not a digit under the Fashion-MNIST model, which reconstructs sparse
  strokes as well as clothes;
- **classifier energy**, -logsumexp(logits) (Liu et al., 2020, "Energy-based Out-of-distribution Detection"): high
  when no class's logit is large. It catches most digit photos under the Fashion model. Only for a model whose
  classifier was trained.
A rank below the threshold does not prove an input is like the data; above it, it is unlike nearly all of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.analysis.running import as_batch, batch_size_for, evaluating
from core.model import SWWAE

__all__ = ["DomainRank", "domain_scores", "domain_rank", "UNLIKE_PERCENTILE", "RECON_SCORE", "ENERGY_SCORE"]

UNLIKE_PERCENTILE = 99.0  # a score above this percentile of the examples' marks the input as unlike them
RECON_SCORE, ENERGY_SCORE = "reconstruction error", "classifier energy"


def domain_scores(model: SWWAE, images: torch.Tensor, *, classifier: bool, batch_size: int | None = None
                  ) -> dict[str, np.ndarray]:
    """Each image's scores: {RECON_SCORE: (N,) MSE, ENERGY_SCORE: (N,) -logsumexp(logits) (with `classifier`)},
    float64, in batches the activation budget allows."""
    batch_size = batch_size or batch_size_for(model.config)
    errors, energies = [], []
    with evaluating(model):
        for start in range(0, images.shape[0], batch_size):
            batch = as_batch(images[start:start + batch_size], model)
            encoding = model.encode(batch)
            recon = model.decode(encoding).recon
            errors.append(((recon.float() - batch.float()) ** 2).flatten(1).mean(dim=1).double().cpu().numpy())
            energies.append((-torch.logsumexp(encoding.logits.float(), dim=1)).double().cpu().numpy())
    scores = {RECON_SCORE: np.concatenate(errors) if errors else np.zeros(0)}
    if classifier:
        scores[ENERGY_SCORE] = np.concatenate(energies) if energies else np.zeros(0)
    return scores


@dataclass
class Rank:
    """One score of the input against the examples'."""

    name: str
    value: float
    percentile: float  # the share of the examples with a smaller score, in percent (0 to 100)
    threshold: float  # the examples' UNLIKE_PERCENTILE-th percentile

    @property
    def unlike(self) -> bool:
        return self.value > self.threshold


@dataclass
class DomainRank:
    ranks: list[Rank]
    examples: int  # how many examples the input was ranked against

    @property
    def unlike(self) -> bool:
        return any(rank.unlike for rank in self.ranks)

    def sentence(self, dataset: str) -> str:
        """The ranks in one line; a warning first when the input is unlike the training data."""
        parts = ", ".join(f"{r.name} {r.value:.4g} above {r.percentile:.1f}% of theirs" for r in self.ranks)
        against = f"against the {self.examples:,} {dataset} examples: {parts}"
        if self.unlike:
            over = " and ".join(f"{r.name} over their 99th percentile ({r.threshold:.4g})" for r in self.ranks
                                if r.unlike)
            return (f"Unlike the training data ({over}): this prediction is not to be trusted, however confident. "
                    f"Ranked {against}.")
        return f"Within the training data's range, ranked {against}."


def domain_rank(scores: dict[str, float], example_scores: dict[str, np.ndarray],
                percentile: float = UNLIKE_PERCENTILE) -> DomainRank:
    """Rank an input's `scores` among the examples' (same names): the percent strictly below, and the threshold."""
    if not example_scores or any(values.size == 0 for values in example_scores.values()):
        raise ValueError("no example scores to rank against")
    ranks = [Rank(name, float(scores[name]), float((values < scores[name]).mean() * 100),
                  float(np.percentile(values, percentile))) for name, values in example_scores.items()]
    return DomainRank(ranks, int(next(iter(example_scores.values())).size))
