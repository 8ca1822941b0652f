"""Two models on one image, as pure functions: each model's figures exactly as the Layers page computes them
(`layer_views`), the reconstruction A's decoder makes from A's what with B's where, how many of B's switches sit where
A's do, and the sentences that state the differences, each computed from the numbers it quotes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from core.analysis.probe import ShiftStage
from core.analysis.running import as_batch, class_probabilities, evaluating, mse, psnr
from core.analysis.units import StageView, layer_views
from core.model import SWWAE, ModelConfig

__all__ = ["ModelFigures", "CrossedWhere", "model_figures", "cross_refusal", "cross_where", "compare_findings",
           "probe_at", "shared_scale", "probe_findings"]


@dataclass
class ModelFigures:
    """One model's figures for one image: what the Layers page shows for it."""

    views: list[StageView]
    recon: np.ndarray  # (C, H, W)
    recon_mse: float
    recon_psnr: float
    probabilities: np.ndarray | None  # (classes,); None for a model trained without labels


@dataclass
class CrossedWhere:
    """A's decoder given A's what and B's where at `stages` (A's own where elsewhere)."""

    stages: list[int]
    recon: np.ndarray  # (C, H, W)
    own_recon: np.ndarray  # (C, H, W): A's own reconstruction, its own where everywhere
    mse: float  # against the image
    own_mse: float  # A's own reconstruction's
    same_switch: list[float]  # per stage: fraction of switches at the same window position in A and B


def model_figures(model: SWWAE, image: torch.Tensor, *, classifier_trained: bool) -> ModelFigures:
    """Per-stage views, the reconstruction with its MSE / PSNR and, for a model trained with labels, the class
    probabilities of one image (C, H, W): the Layers page's numbers for this model."""
    views, encoding, decoding = layer_views(model, image)
    error = mse(decoding.recon, image)
    probabilities = class_probabilities(encoding.logits)[0] if classifier_trained else None
    return ModelFigures(views, decoding.recon[0].float().cpu().numpy(), error, psnr(error), probabilities)


def cross_refusal(a: ModelConfig, b: ModelConfig) -> str | None:
    """Why A's decoder cannot take B's where (one line), or None when their wheres have the same shapes and kind."""
    if (a.in_channels, a.image_size) != (b.in_channels, b.image_size):
        return (f"A takes {a.in_channels}x{a.image_size}x{a.image_size} images, B {b.in_channels}x{b.image_size}x"
                f"{b.image_size}")
    if (tuple(a.channels), tuple(a.pool_sizes)) != (tuple(b.channels), tuple(b.pool_sizes)):
        return (f"their stages differ (A: channels {list(a.channels)}, pools {list(a.pool_sizes)}; B: channels "
                f"{list(b.channels)}, pools {list(b.pool_sizes)})")
    if (a.pooling == "soft") != (b.pooling == "soft"):
        return f"A's where is {_where_kind(a)} and B's is {_where_kind(b)}"
    return None


def _where_kind(config: ModelConfig) -> str:
    return "a continuous offset (soft pooling)" if config.pooling == "soft" else "a switch index (max pooling)"


def cross_where(model_a: SWWAE, model_b: SWWAE, image: torch.Tensor, stages: Sequence[int]) -> CrossedWhere:
    """Decode A's what of `image` with B's where at `stages`: does B's where serve A's decoder? Raises ValueError
    (cross_refusal's reason) when the models' wheres do not fit each other."""
    refusal = cross_refusal(model_a.config, model_b.config)
    if refusal is not None:
        raise ValueError(f"A's decoder cannot take B's where: {refusal}")
    with evaluating(model_a), evaluating(model_b):
        own = model_a.encode(as_batch(image, model_a))
        theirs = model_b.encode(as_batch(image, model_b))
        crossed = model_a.decode(own.with_wheres_from(theirs, stages)).recon
        own_recon = model_a.decode(own).recon
    soft = model_a.config.pooling == "soft"
    same = [_same_position(mine, other, soft) for mine, other in zip(own.wheres, theirs.wheres)]
    return CrossedWhere(list(stages), crossed[0].float().cpu().numpy(), own_recon[0].float().cpu().numpy(),
                        mse(crossed, image), mse(own_recon, image), same)


def _same_position(mine: torch.Tensor, other: torch.Tensor, soft: bool) -> float:
    """Fraction of switches at the same place: equal indices, or (soft) offsets within half a pixel in both axes."""
    if soft:
        return float(((mine - other).abs() <= 0.5).all(-1).float().mean())
    return float((mine == other).float().mean())


def shared_scale(a: np.ndarray, b: np.ndarray) -> float | None:
    """The upper end of one colour scale for two maps of the same shape (their largest value), None when the shapes
    differ (each is then drawn on its own scale)."""
    if a.shape != b.shape:
        return None
    return max(float(np.nanmax(a)), float(np.nanmax(b)), 1e-6)


def probe_at(rows: Sequence[ShiftStage], shift: int) -> dict[int, ShiftStage]:
    """{stage: its row} at one shift, from `along_axis` rows of one axis (as the Swap page's table)."""
    return {r.stage: r for r in rows if r.shift == shift}


def compare_findings(a: ModelFigures, b: ModelFigures, names_a: Sequence[str], names_b: Sequence[str],
                     crossed: CrossedWhere | None = None) -> list[str]:
    """Sentences stating how B differs from A on this image, each computed from the numbers beside it; `names_a` and
    `names_b` name each model's classes."""
    lines = [_recon_sentence(a.recon_mse, b.recon_mse)]
    if a.probabilities is not None and b.probabilities is not None:
        lines.append(_prediction_sentence(a.probabilities, b.probabilities, names_a, names_b))
    if crossed is not None and crossed.stages:
        ratio = crossed.mse / max(crossed.own_mse, 1e-12)
        stages = ", ".join(str(s + 1) for s in crossed.stages)
        lines.append(f"A's decoder with B's where at stage{'s' * (len(crossed.stages) > 1)} {stages}: MSE "
                     f"{crossed.mse:.4f}, {ratio:.2f}× A's own {crossed.own_mse:.4f} "
                     f"({'higher' if ratio > 1 else 'lower' if ratio < 1 else 'the same'}).")
    if crossed is not None:
        same = ", ".join(f"{100 * f:.0f}% at stage {s + 1}" for s, f in enumerate(crossed.same_switch))
        lines.append(f"B's switches at the same window position as A's, channel by channel: {same}.")
    return lines


def _recon_sentence(mse_a: float, mse_b: float) -> str:
    if mse_a == mse_b:
        return f"A and B reconstruct this image with the same MSE, {mse_a:.4f}."
    ratio = mse_b / max(mse_a, 1e-12)
    return (f"B's reconstruction MSE is {mse_b:.4f}, {ratio:.2f}× A's {mse_a:.4f} "
            f"({psnr(mse_b) - psnr(mse_a):+.1f} dB PSNR).")


def _prediction_sentence(pa: np.ndarray, pb: np.ndarray, names_a: Sequence[str], names_b: Sequence[str]) -> str:
    name = lambda names, i: names[i] if i < len(names) else str(i)  # noqa: E731
    ia, ib = int(pa.argmax()), int(pb.argmax())
    if name(names_a, ia) == name(names_b, ib):
        return f"Both predict {name(names_a, ia)}: A with {pa[ia]:.1%}, B with {pb[ib]:.1%}."
    return (f"They disagree: A predicts {name(names_a, ia)} ({pa[ia]:.1%}), B predicts {name(names_b, ib)} "
            f"({pb[ib]:.1%}).")


def probe_findings(a: dict[int, ShiftStage], b: dict[int, ShiftStage]) -> list[str]:
    """Per stage both models have, at one shift (`probe_at` of each): how B's what invariance and where equivariance
    differ from A's, each sentence computed from the table's numbers. Stages without a number are left out."""
    lines = []
    for stage in sorted(set(a) & set(b)):
        ra, rb = a[stage], b[stage]
        parts = []
        if np.isfinite(ra.what_per_input) and np.isfinite(rb.what_per_input) and ra.what_per_input > 0:
            ratio = rb.what_per_input / ra.what_per_input
            parts.append(f"B's what changes {ratio:.2f}× as much per input change as A's ({rb.what_per_input:.3f} vs "
                         f"{ra.what_per_input:.3f} what ÷ input)")
        if np.isfinite(ra.where_followed) and np.isfinite(rb.where_followed):
            parts.append(f"switches that follow the shift: A {ra.where_followed:.0%}, B {rb.where_followed:.0%} "
                         f"({100 * (rb.where_followed - ra.where_followed):+.0f} points; chance A "
                         f"{ra.where_reference:.0%}, B {rb.where_reference:.0%})")
        if parts:
            lines.append(f"Stage {stage + 1}: " + "; ".join(parts) + ".")
    return lines
