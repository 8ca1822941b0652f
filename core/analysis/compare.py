"""Two models on one image, as pure functions: each model's figures exactly as the Layers page computes them
(`layer_views`), the reconstruction A's decoder makes from A's what with B's where, how many of B's switches sit where
A's do, and the sentences that state the differences, each computed from the numbers it quotes.

Which two models: `model_differences` lists what B differs from A in (pooling, width, supervision, dataset, ...), and
`default_partner` picks the model B a comparison opens with, one that differs from A in one thing wherever there is
one (the where ablation's hard <-> none <-> soft, a run's checkpoint <-> its earlier snapshot).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from core.analysis.networks import decoder_refusal, is_network, projects
from core.analysis.probe import ShiftStage
from core.analysis.running import as_batch, class_probabilities, evaluating, mse, psnr
from core.analysis.units import StageView, layer_views
from core.data import DataConfig
from core.model import SWWAE, Checkpoint, ModelConfig

__all__ = ["ModelFigures", "CrossedWhere", "model_figures", "cross_refusal", "cross_where", "compare_findings",
           "probe_at", "shared_scale", "probe_findings", "ModelTraits", "Difference", "Partner", "POOLING_PARTNERS",
           "model_traits", "model_differences", "differences_sentence", "earlier_steps", "default_partner"]


@dataclass
class ModelFigures:
    """One model's figures for one image: what the Layers page shows for it."""

    views: list[StageView]
    recon: np.ndarray | None  # (C, H, W); a network's deconvnet projection; None: a network without one
    recon_mse: float  # NaN for a network: a projection is no reconstruction
    recon_psnr: float
    probabilities: np.ndarray | None  # (classes,); None for a model trained without labels


@dataclass
class CrossedWhere:
    """A's decoder given A's what and B's where at `stages` (A's own where elsewhere)."""

    stages: list[int]
    recon: np.ndarray  # (C, H, W)
    own_recon: np.ndarray  # (C, H, W): A's own reconstruction, its own where everywhere
    mse: float  # against the image (A a network: against A's own projection)
    own_mse: float  # A's own reconstruction's (NaN for a network)
    same_switch: list[float]  # per stage: fraction of switches at the same window position in A and B


def model_figures(model: SWWAE, image: torch.Tensor, *, classifier_trained: bool) -> ModelFigures:
    """Per-stage views, the reconstruction with its MSE / PSNR and, for a model trained with labels, the class
    probabilities of one image (C, H, W): the Layers page's numbers for this model."""
    views, encoding, decoding = layer_views(model, image)
    error = math.nan if projects(model.config) else mse(decoding.recon, image)
    probabilities = class_probabilities(encoding.logits)[0] if classifier_trained else None
    recon = None if decoding is None else decoding.recon[0].float().cpu().numpy()
    return ModelFigures(views, recon, error, math.nan if math.isnan(error) else psnr(error), probabilities)


def cross_refusal(a: ModelConfig, b: ModelConfig) -> str | None:
    """Why A's decoder cannot take B's where (one line), or None when their wheres have the same shapes and kind."""
    if (refusal := decoder_refusal(a)) is not None:
        return f"A has no decoder ({refusal})"
    if (a.in_channels, a.image_size) != (b.in_channels, b.image_size):
        return f"A takes {_input_shape(a)} images, B {_input_shape(b)}"
    if tuple(a.channels) != tuple(b.channels):
        return f"their stages differ (A: {_slashed(a.channels)} channels, B: {_slashed(b.channels)})"
    if tuple(a.pool_sizes) != tuple(b.pool_sizes):
        windows = lambda config: ", ".join(f"{p}×{p}" for p in config.pool_sizes)  # noqa: E731
        return f"their pooling windows differ (A: {windows(a)}, B: {windows(b)})"
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
    projection = projects(model_a.config)  # no image to score against: the distance to A's own projection
    return CrossedWhere(list(stages), crossed[0].float().cpu().numpy(), own_recon[0].float().cpu().numpy(),
                        mse(crossed, own_recon if projection else image),
                        math.nan if projection else mse(own_recon, image), same)


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
    if crossed is not None and crossed.stages and math.isnan(crossed.own_mse):
        stages = ", ".join(str(s + 1) for s in crossed.stages)
        lines.append(f"A's deconvnet projection with B's where at stage{'s' * (len(crossed.stages) > 1)} {stages} "
                     f"lies at a mean squared distance of {crossed.mse:.4g} from A's own projection (a projection is "
                     "no reconstruction, so there is no error against the image).")
    elif crossed is not None and crossed.stages:
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
    if math.isnan(mse_a) or math.isnan(mse_b):
        which = " and ".join(name for name, value in (("A", mse_a), ("B", mse_b)) if math.isnan(value))
        return (f"No reconstruction errors to compare: {which} {'has' if len(which) == 1 else 'have'} no trained "
                "decoder (a network's picture is its deconvnet projection, not a reconstruction).")
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


# ---- what two models differ in, and the default model B -----------------------------------------------------------

@dataclass(frozen=True)
class ModelTraits:
    """What a comparison of two models can differ in, read from a checkpoint alone (`model_traits`)."""

    config: ModelConfig
    supervised: bool  # its classifier learned from labels (Checkpoint.classifier_trained)
    dataset: str  # the dataset it was trained on
    step: int  # training steps taken
    run: str | None = None  # the run folder it was trained in, shared by a run's checkpoints and snapshots; None: none


@dataclass(frozen=True)
class Difference:
    """One thing two models differ in: `name`, with A's and B's value as they read on a page."""

    name: str  # "pooling", "width", "supervision", ...
    a: str
    b: str

    def __str__(self) -> str:
        return f"{self.name} ({self.a} vs {self.b})"


@dataclass(frozen=True)
class Partner:
    """The model B a comparison opens with: a file, at one of its run's snapshot steps (None: the file itself)."""

    source: str
    step: int | None = None


# Which pooling kind a model is compared with first: hard and none are the where ablation's two ends (with where, and
# without), and soft pooling is compared with the hard pooling it relaxes.
POOLING_PARTNERS = {"hard": ("none", "soft"), "none": ("hard", "soft"), "soft": ("hard", "none")}
# The order a single difference is preferred in as model B (lower first): the where story before anything else.
_PREFERENCE = {"pooling": 0, "training step": 1, "supervision": 2, "width": 3, "convs per stage": 4, "dataset": 6}
_OTHER = 5  # every other architecture field


def model_traits(checkpoint: Checkpoint, *, run: str | None = None) -> ModelTraits:
    """A checkpoint's traits; `run`: the run folder its file sits in. A file that names no dataset was trained on
    DataConfig's default (as the shipped mnist5k where-ablation models were)."""
    return ModelTraits(checkpoint.model_config, checkpoint.classifier_trained,
                       checkpoint.dataset or DataConfig().dataset, checkpoint.step, run)


def _slashed(values: Sequence) -> str:
    return "/".join(_plain_value(v) for v in values)


def _plain_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return _slashed(value)
    return str(value)


def _input_shape(config: ModelConfig) -> str:
    return f"{config.in_channels}×{config.image_size}×{config.image_size}"


_HEAD_FIELDS = ("head_width", "dropout", "num_classes")  # the classifier head's, which only labels train
# Architecture fields beyond pooling, width and convs per stage, with how a page names them.
_OTHER_FIELDS = (("pool_strides", "pooling strides"), ("decoder", "decoding"),
                 ("kernel_sizes", "kernel sizes"), ("pool_sizes", "pooling windows"), ("batch_norm", "batch norm"),
                 ("head_width", "classifier head width"), ("dropout", "classifier dropout"), ("num_classes", "classes"),
                 ("output_activation", "output activation"), ("noise_std", "training noise"),
                 ("input_mean", "input mean"), ("input_std", "input std"))


def model_differences(a: ModelTraits, b: ModelTraits) -> list[Difference]:
    """Everything B differs from A in, the where first: pooling kind, width (channels per stage), convs per stage,
    supervision (labels or none), dataset, input shape, training step (between a run's checkpoint and its own
    snapshots; separate trainings' step counts are no comparison), then any other architecture field (the
    classifier head's only when both learned from labels). Empty when the two are the same model (the same training
    at the same step, or two trainings of one setting)."""
    ca, cb = a.config, b.config
    found = []
    kind_a, kind_b = (_kind(c) for c in (ca, cb))
    if kind_a != kind_b:
        found.append(Difference("kind", kind_a, kind_b))
    if ca.pooling != cb.pooling:
        found.append(Difference("pooling", ca.pooling, cb.pooling))
    if len(ca.channels) != len(cb.channels):
        found.append(Difference("stages", _slashed(ca.channels), _slashed(cb.channels)))
    elif tuple(ca.channels) != tuple(cb.channels):
        found.append(Difference("width", _slashed(ca.channels), _slashed(cb.channels)))
    if ca.convs_per_stage != cb.convs_per_stage:
        found.append(Difference("convs per stage", str(ca.convs_per_stage), str(cb.convs_per_stage)))
    if a.supervised != b.supervised:
        found.append(Difference("supervision", *("labels" if s else "none" for s in (a.supervised, b.supervised))))
    if a.dataset != b.dataset:
        found.append(Difference("dataset", a.dataset, b.dataset))
    if (ca.in_channels, ca.image_size) != (cb.in_channels, cb.image_size):
        found.append(Difference("input shape", _input_shape(ca), _input_shape(cb)))
    if a.run is not None and a.run == b.run and a.step != b.step:
        found.append(Difference("training step", f"{a.step:,}", f"{b.step:,}"))
    for field, name in _OTHER_FIELDS:
        if not (hasattr(ca, field) and hasattr(cb, field)):
            continue  # a field one kind of model has not (a network has no decoder settings): said as "kind"
        va, vb = getattr(ca, field), getattr(cb, field)
        if field in ("kernel_sizes", "pool_sizes") and len(va) != len(vb):
            continue  # other stage counts: said once, as "stages"
        if field in _HEAD_FIELDS and not (a.supervised and b.supervised):
            continue  # a head trained without labels predicts nothing: its shape is no difference
        if va != vb:
            found.append(Difference(name, _plain_value(va), _plain_value(vb)))
    if ca.pooling == cb.pooling == "soft" and ca.soft_beta != cb.soft_beta:
        found.append(Difference("soft-pooling β", _plain_value(ca.soft_beta), _plain_value(cb.soft_beta)))
    return found


def _kind(config) -> str:
    """What kind of model a config is: 'SWWAE', or a network's architecture ('torchvision:vgg11_bn')."""
    return config.architecture if is_network(config) else "SWWAE"


def differences_sentence(differences: Sequence[Difference]) -> str:
    """One line saying what a comparison of A and B varies: the one thing, or the things it mixes."""
    if not differences:
        return "A and B have the same architecture, pooling, supervision and dataset."
    if len(differences) == 1:
        return f"A and B differ in one thing: {differences[0]}."
    listed = ", ".join(str(d) for d in differences[:-1]) + f" and {differences[-1]}"
    return f"A and B differ in {listed}: the differences below mix them."


def earlier_steps(snapshot_steps: Sequence[int], step: int) -> list[int]:
    """A run's snapshot steps before `step`, in the order a comparison prefers them: the middle one first (far enough
    from the start that the model has begun to learn, and from `step` that it is still forming), then outwards from
    it, the later side first."""
    earlier = sorted(s for s in snapshot_steps if s < step)
    middle = len(earlier) // 2
    order = sorted(range(len(earlier)), key=lambda i: (abs(i - middle), i < middle))
    return [earlier[i] for i in order]


def default_partner(a: ModelTraits, candidates: Mapping[str, ModelTraits], *, a_file: str | None = None,
                    snapshot_steps: Sequence[int] = (), shows: Callable[[int], bool] = lambda step: True,
                    fallbacks: Sequence[str] = ()) -> Partner | None:
    """The model B a comparison with A opens with, one that differs from A in one thing wherever there is one:

    1. A's run (`a_file`, a checkpoint of it) at an earlier snapshot step (`snapshot_steps`: its run's), the first
       in `earlier_steps`' order that `shows(step)` says can be drawn beside A;
    2. else a candidate (source -> its traits, in listing order) that differs from A in one thing: pooling first
       (`POOLING_PARTNERS`: hard <-> none, soft -> hard), then the training step, supervision, width, convs per stage,
       any other architecture field, the dataset;
    3. else the first of `fallbacks` among the candidates that is not A;
    4. else the candidate of A's input shape that differs from A in the fewest things; None when there is none.
    """
    if a_file is not None:
        step = next((s for s in earlier_steps(snapshot_steps, a.step) if shows(s)), None)
        if step is not None:
            return Partner(a_file, step)
    differences = {source: model_differences(a, traits) for source, traits in candidates.items()}
    same_shape = {source: found for source, found in differences.items()
                  if found and not any(d.name == "input shape" for d in found)}

    def preference(item: tuple[int, str]) -> tuple[int, int, int]:
        order, source = item
        (difference,) = same_shape[source]
        partners = POOLING_PARTNERS.get(a.config.pooling, ())
        kind = partners.index(difference.b) if difference.name == "pooling" and difference.b in partners else 0
        return _PREFERENCE.get(difference.name, _OTHER), kind, order

    single = [(order, source) for order, source in enumerate(same_shape) if len(same_shape[source]) == 1]
    if single:
        return Partner(min(single, key=preference)[1])
    fallback = next((source for source in fallbacks if source in same_shape), None)
    if fallback is not None:
        return Partner(fallback)
    if same_shape:
        return Partner(min(same_shape, key=lambda source: len(same_shape[source])))
    return None
