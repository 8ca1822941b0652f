"""What-where experiments as pure functions of a model and images: the dashboard and benchmarks call these.

Every function runs the model in eval mode without gradients and restores the model's previous mode.
Images are float tensors in [0, 1], one image (C, H, W) or a batch (N, C, H, W).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.model import SWWAE, Decoding, Encoding
from core.pooling import where_offsets

__all__ = [
    "SwapResult", "StageView", "ShiftStage", "UnitView", "WhereMorph",
    "swap_where", "swap_matrix", "reconstruct", "no_where_recon", "shift_probe", "shift_curves", "along_axis",
    "shift_findings",
    "layer_views", "unit_view", "unit_decodings", "channel_peaks", "top_images", "morph_where", "shift_image", "psnr",
    "class_probabilities", "classify", "mse",
]


@contextlib.contextmanager
def _evaluating(model: SWWAE) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _batch(images: torch.Tensor, model: SWWAE) -> torch.Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(0)  # (1, C, H, W)
    param = next(model.parameters())
    return images.to(device=param.device, dtype=param.dtype)


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, peak]; inf for a perfect match."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak**2 / mse)


def class_probabilities(logits: torch.Tensor) -> np.ndarray:
    """Softmax of class logits (N, num_classes) -> probabilities (N, num_classes) as numpy float64."""
    return torch.softmax(logits.detach().double(), dim=-1).cpu().numpy()


def classify(model: SWWAE, images: torch.Tensor) -> np.ndarray:
    """Class probabilities of one image (C, H, W) or a batch (N, C, H, W) -> (N, num_classes)."""
    with _evaluating(model):
        return class_probabilities(model.encode(_batch(images, model)).logits)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.mse_loss(a.float(), b.float()).item()


def mse(recon: torch.Tensor, image: torch.Tensor) -> float:
    """Mean squared error between two images or batches of the same number of pixels, on any devices."""
    return _mse(recon.detach().cpu().reshape(image.shape), image.detach().cpu())


@dataclass
class SwapResult:
    """Reconstructions of A and B and of their what-where crossings, each (C, H, W) in the model's range."""

    recon_a: torch.Tensor
    recon_b: torch.Tensor
    what_a_where_b: torch.Tensor
    what_b_where_a: torch.Tensor
    no_where_a: torch.Tensor
    no_where_b: torch.Tensor
    metrics: dict[str, dict[str, float]]  # image name -> {'mse_a', 'psnr_a', 'mse_b', 'psnr_b'}


def swap_where(model: SWWAE, a: torch.Tensor, b: torch.Tensor, stages: Sequence[int]) -> SwapResult:
    """Decode A's what with B's where at `stages` (and B's what with A's where); one encode, one decode."""
    if a.shape != b.shape:
        raise ValueError(f"A and B must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    with _evaluating(model):
        pair = torch.cat([_batch(a, model), _batch(b, model)])  # (2, C, H, W): A, B
        encoding = model.encode(pair)  # batch (A, B)
        crossed = encoding.with_wheres_from(encoding.select([1, 0]), stages)  # (what A + where B, what B + where A)
        both = _cat_encodings([encoding, crossed])  # (A, B, A|B, B|A)
        recons = model.decode(both).recon
        no_where = model.decode(encoding, pooling="none").recon
    images = {
        "recon_a": recons[0], "recon_b": recons[1], "what_a_where_b": recons[2], "what_b_where_a": recons[3],
        "no_where_a": no_where[0], "no_where_b": no_where[1],
    }
    metrics = {}
    for name, image in images.items():
        mse_a, mse_b = _mse(image, pair[0]), _mse(image, pair[1])
        metrics[name] = {"mse_a": mse_a, "psnr_a": psnr(mse_a), "mse_b": mse_b, "psnr_b": psnr(mse_b)}
    return SwapResult(**images, metrics=metrics)


def _cat_encodings(encodings: Sequence[Encoding]) -> Encoding:
    cat = lambda attr: [torch.cat(ts) for ts in zip(*(getattr(e, attr) for e in encodings))]  # noqa: E731
    return Encoding(cat("whats"), cat("wheres"), cat("pre_pool"), torch.cat([e.logits for e in encodings]))


def swap_matrix(model: SWWAE, images: torch.Tensor, stages: Sequence[int] | None = None
                ) -> tuple[torch.Tensor, np.ndarray]:
    """Cell (i, j) decodes the what of image i with the where of image j at `stages` (default: all).

    images: (K, C, H, W), K <= 8 -> (recons (K, K, C, H, W), mse (K, K) of each cell against image i).
    """
    k = images.shape[0]
    if not 1 <= k <= 8:
        raise ValueError(f"a swap matrix takes 1 to 8 images, got {k}")
    stages = range(len(model.config.channels)) if stages is None else stages
    with _evaluating(model):
        batch = _batch(images, model)
        encoding = model.encode(batch)
        rows = torch.arange(k).repeat_interleave(k)  # what of image i, K times each
        cols = torch.arange(k).repeat(k)  # where of image j
        grid = encoding.select(rows).with_wheres_from(encoding.select(cols), stages)
        recons = model.decode(grid).recon  # (K*K, C, H, W)
        mse = ((recons.float() - batch[rows].float()) ** 2).flatten(1).mean(1)  # (K*K,)
    return recons.view(k, k, *recons.shape[1:]), mse.view(k, k).cpu().numpy()


def reconstruct(model: SWWAE, images: torch.Tensor) -> torch.Tensor:
    """The model's own reconstruction of one image or a batch: (N, C, H, W)."""
    with _evaluating(model):
        return model.decode(model.encode(_batch(images, model))).recon


def no_where_recon(model: SWWAE, images: torch.Tensor) -> torch.Tensor:
    """Reconstruction with every where replaced by the 'none' rule (nearest upsampling): (N, C, H, W)."""
    with _evaluating(model):
        return model.decode(model.encode(_batch(images, model)), pooling="none").recon


def shift_image(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate by (dx, dy) pixels (right, down), filling the uncovered border with zeros. (..., H, W)."""
    h, w = images.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return torch.zeros_like(images)
    shifted = torch.roll(images, shifts=(dy, dx), dims=(-2, -1))
    if dy > 0:
        shifted[..., :dy, :] = 0
    elif dy < 0:
        shifted[..., dy:, :] = 0
    if dx > 0:
        shifted[..., :, :dx] = 0
    elif dx < 0:
        shifted[..., :, dx:] = 0
    return shifted


@dataclass
class ShiftStage:
    """How one stage answers a shift of the input by (shift_x, shift_y) pixels, over a set of images.

    Changes are relative L2 distances ||f(shifted) - f(x)|| / ||f(x)||, averaged over images, so the input's, the
    pre-pool map's and the what's are in the same units and their ratios say how much each step absorbs.
    Only decisive switches count: an active what from a window whose values are not all equal. A switch *follows*
    the shift when its absolute input position moved by exactly the shift: the shifted image's decisive
    switch in the window that now holds (position + shift) is there (soft wheres: to within half an input
    pixel). `where_reference` is the same figure against the switches of a
    different image shifted the same way: what chance alone gives.
    """

    shift_x: int
    shift_y: int
    stage: int
    stride: int  # input pixels per what cell (the stage's total stride)
    grid: int  # input pixels between neighbouring switch positions (the stride of the stage's input)
    input_change: float
    pre_pool_change: float
    what_change: float
    where_followed: float  # fraction of active switches that moved by exactly the shift (NaN: none to follow)
    where_reference: float  # the same fraction against a different image's switches (NaN: no reference)
    where_error: float  # mean distance (input pixels, max over row/col) from position + shift to the new switch
    switches: int  # active switches counted (whose position + shift stays inside the map)

    @property
    def shift(self) -> int:
        return max(abs(self.shift_x), abs(self.shift_y))

    @property
    def what_per_pre_pool(self) -> float:
        """< 1: this stage's pooling absorbed part of the shift."""
        return _ratio(self.what_change, self.pre_pool_change)

    @property
    def what_per_input(self) -> float:
        """How much the what changes per unit of change of the input: falls with depth as invariance builds up."""
        return _ratio(self.what_change, self.input_change)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def _relative_change(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Per image ||after - before|| / ||before||: (N, ...) twice -> (N,)."""
    return (after - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1).clamp(min=1e-12)


def _switch_positions(model: SWWAE, stage: int, where: torch.Tensor) -> torch.Tensor:
    """A stage's wheres -> absolute (row, col) of each switch in input pixels: (N, C, h, w, 2) float."""
    cfg = model.config
    pool_size, stride_in = cfg.pool_sizes[stage], math.prod(cfg.pool_sizes[:stage])
    offsets = where_offsets(where, pool_size, cfg.stage_sizes[stage])  # (N, C, h, w, 2) inside the window
    h, w = offsets.shape[2:4]
    cells = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), dim=-1)  # (h, w, 2)
    return (cells.to(offsets) * pool_size + offsets) * stride_in  # (N, C, h, w, 2)


def _decisive(what: torch.Tensor, pre_pool: torch.Tensor, pool_size: int) -> torch.Tensor:
    """Switches worth following: an active what from a window that is not flat. (A flat window, e.g. a
    background patch, puts its switch at a fixed cell in every image, so it would "follow" any even shift.)"""
    spread = F.max_pool2d(pre_pool, pool_size) + F.max_pool2d(-pre_pool, pool_size)  # (N, C, h, w): max - min
    return (what > 0) & (spread > 1e-6 * pre_pool.abs().amax().clamp(min=1.0))


def _followed(model: SWWAE, stage: int, positions: torch.Tensor, active: torch.Tensor, moved_positions: torch.Tensor,
              moved_active: torch.Tensor, dx: int, dy: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each active switch at p, look up the moved image's switch in the window holding p + (dy, dx).

    positions, moved_positions: (N, C, h, w, 2) input pixels; active, moved_active: (N, C, h, w) bool.
    -> (counted (N, C, h, w) bool: active and p + shift inside the pooled area, followed bool, error float).
    """
    cfg = model.config
    h, w = active.shape[-2:]
    window = cfg.pool_sizes[stage] * math.prod(cfg.pool_sizes[:stage])  # input pixels per window
    target = positions + torch.tensor([dy, dx], dtype=positions.dtype)  # (N, C, h, w, 2)
    cell = torch.div(target, window, rounding_mode="floor").long()  # (N, C, h, w, 2) window holding the target
    inside = (cell[..., 0] >= 0) & (cell[..., 0] < h) & (cell[..., 1] >= 0) & (cell[..., 1] < w)
    flat = (cell[..., 0].clamp(0, h - 1) * w + cell[..., 1].clamp(0, w - 1)).flatten(2)  # (N, C, h*w)
    found = torch.stack([moved_positions[..., i].flatten(2).gather(2, flat) for i in (0, 1)], -1)  # (N, C, h*w, 2)
    found_active = moved_active.flatten(2).gather(2, flat).view_as(active)  # (N, C, h, w)
    error = (found.view_as(target) - target).abs().amax(-1)  # (N, C, h, w) input pixels
    tolerance = 0.5 if cfg.pooling == "soft" else 1e-4  # soft: continuous positions, to within half an input pixel
    counted = active & inside
    return counted, found_active & (error <= tolerance), error


def shift_probe(model: SWWAE, images: torch.Tensor, dx: int, dy: int,
                reference: torch.Tensor | None = None) -> list[ShiftStage]:
    """What invariance and where equivariance of every stage under a shift of (dx, dy) pixels (right, down).

    images: (C, H, W) or (N, C, H, W). reference: images of the same count whose switches give the chance level;
    default: the set itself rolled by one image (none for a single image: where_reference is then NaN).
    """
    cfg = model.config
    with _evaluating(model):
        batch = _batch(images, model)
        n = batch.shape[0]
        if reference is None and n > 1:
            reference = batch.roll(1, dims=0)
        parts = [batch, shift_image(batch, dx, dy)]
        if reference is not None:
            parts.append(shift_image(_batch(reference, model).expand_as(batch), dx, dy))
        encoding = model.encode(torch.cat(parts))  # (A, A shifted[, reference shifted])
    input_change = _relative_change(parts[1], batch).mean().item()
    rows = []
    for stage in range(len(cfg.channels)):
        what, pre_pool = encoding.whats[stage].float().cpu(), encoding.pre_pool[stage].float().cpu()
        positions = _switch_positions(model, stage, encoding.wheres[stage].cpu()).split(n)
        active = _decisive(what, pre_pool, cfg.pool_sizes[stage]).split(n)
        counted, followed, error = _followed(model, stage, positions[0], active[0], positions[1], active[1], dx, dy)
        total = int(counted.sum())
        reference_followed = math.nan
        if reference is not None:
            _, by_chance, _ = _followed(model, stage, positions[0], active[0], positions[2], active[2], dx, dy)
            reference_followed = (by_chance & counted).sum().item() / total if total else math.nan
        rows.append(ShiftStage(
            shift_x=dx, shift_y=dy, stage=stage, stride=math.prod(cfg.pool_sizes[:stage + 1]),
            grid=math.prod(cfg.pool_sizes[:stage]),
            input_change=input_change,
            pre_pool_change=_relative_change(pre_pool[n:2 * n], pre_pool[:n]).mean().item(),
            what_change=_relative_change(what[n:2 * n], what[:n]).mean().item(),
            where_followed=(followed & counted).sum().item() / total if total else math.nan,
            where_reference=reference_followed,
            where_error=error[counted].mean().item() if total else math.nan,
            switches=total,
        ))
    return rows


def shift_curves(model: SWWAE, images: torch.Tensor, shifts: Sequence[int] = range(5),
                 reference: torch.Tensor | None = None) -> list[ShiftStage]:
    """`shift_probe` for shifts of 0..4 pixels along x (right), then along y (down): rows in that order."""
    rows = []
    for axis in ("x", "y"):
        for shift in shifts:
            dx, dy = (shift, 0) if axis == "x" else (0, shift)
            rows += shift_probe(model, images, dx, dy, reference)
    return rows


def along_axis(rows: Sequence[ShiftStage], axis: str) -> list[ShiftStage]:
    """The rows of shifts along `axis` ('x' or 'y'), the zero shift once, in order of shift then stage."""
    moved = [r for r in rows if (r.shift_y == 0 if axis == "x" else r.shift_x == 0)]
    unique = {(r.shift, r.stage): r for r in reversed(moved)}  # the first of duplicate (0, 0) rows wins
    return [unique[key] for key in sorted(unique)]


def shift_findings(rows: Sequence[ShiftStage], shift: int) -> list[str]:
    """Sentences stating what the rows of one shift size show, each computed from the numbers in them.

    Rows of a shift along x and along y are averaged. Nothing is claimed that the numbers do not show.
    """
    stages = sorted({r.stage for r in rows})
    at = {s: [r for r in rows if r.shift == shift and r.stage == s] for s in stages}
    if shift == 0 or not all(at.values()):
        return []
    mean = lambda s, name: float(np.nanmean([getattr(r, name) for r in at[s]]))  # noqa: E731
    absorbed = [s for s in stages if mean(s, "what_per_pre_pool") < 1]
    lines = []
    if absorbed:
        names = ", ".join(str(s + 1) for s in absorbed)
        ratios = ", ".join(f"{mean(s, 'what_per_pre_pool'):.2f}×" for s in absorbed)
        lines.append(f"At a shift of {shift} pixels, pooling absorbs part of the shift at stage {names}: the what "
                     f"changes {ratios} as much as the map it pools.")
    else:
        lines.append(f"At a shift of {shift} pixels, no stage's pooling makes its what change less than the map it "
                     "pools.")
    per_input = [mean(s, "what_per_input") for s in stages]
    steps = " → ".join(f"{v:.2f}×" for v in per_input)
    if all(b < a for a, b in zip(per_input, per_input[1:])):
        lines.append(f"Relative to the input's change, the what changes {steps} from stage 1 to stage {len(stages)}: "
                     "invariance builds up with depth.")
    else:
        lines.append(f"Relative to the input's change, the what changes {steps} from stage 1 to stage {len(stages)}: "
                     "it does not fall at every stage.")
    multiples = [s for s in stages if shift % at[s][0].stride == 0]
    for s in multiples:
        followed, reference = mean(s, "where_followed"), mean(s, "where_reference")
        versus = f" (chance, from a different image's switches: {reference:.0%})" if not math.isnan(reference) else ""
        lines.append(f"The shift is a multiple of stage {s + 1}'s stride ({at[s][0].stride} px): {followed:.0%} of its "
                     f"active switches moved by exactly the shift{versus}.")
    for s in (s for s in stages if s not in multiples):
        grid = at[s][0].grid
        if shift % grid:
            lines.append(f"Stage {s + 1}'s switches sit on a {grid}-pixel grid, so none can move by exactly "
                         f"{shift} px.")
        else:
            chance = mean(s, "where_reference")
            lines.append(f"The shift is not a multiple of stage {s + 1}'s stride ({at[s][0].stride} px): "
                         f"{mean(s, 'where_followed'):.0%} of its active switches moved by exactly the shift"
                         + (f" (chance: {chance:.0%})." if not math.isnan(chance) else "."))
    return lines


@dataclass
class StageView:
    """One stage of one image, as numpy arrays ready to draw."""

    stage: int
    pool_size: int
    pre_pool: np.ndarray  # (C, H, W)
    what: np.ndarray  # (C, h, w)
    where_offset: np.ndarray  # (C, h, w, 2) (row, col) offset inside the window, float
    where_id: np.ndarray  # (C, h, w) int, row * pool_size + col of the (rounded) offset
    unpooled: np.ndarray  # (C, H, W) what placed back with where, as the decoder sees it
    hidden: np.ndarray | None  # (C, h, w) decoder's reconstruction of `what`; None for the top stage
    mid_mse: float | None  # the L2M term: mean squared error of hidden against what


def layer_views(model: SWWAE, image: torch.Tensor) -> tuple[list[StageView], Encoding, Decoding]:
    """Every stage's pre-pool, what, where, unpooled and hidden for one image (C, H, W) or (1, C, H, W)."""
    cfg = model.config
    with _evaluating(model):
        batch = _batch(image, model)
        if batch.shape[0] != 1:
            raise ValueError(f"layer_views takes one image, got a batch of {batch.shape[0]}")
        encoding = model.encode(batch)
        decoding = model.decode(encoding)
    views = []
    for stage, pool_size in enumerate(cfg.pool_sizes):
        offsets = where_offsets(encoding.wheres[stage], pool_size, cfg.stage_sizes[stage])[0]  # (C, h, w, 2)
        cells = offsets.round().clamp(0, pool_size - 1).long()
        hidden = decoding.hiddens[stage] if stage < len(decoding.hiddens) else None
        views.append(StageView(
            stage=stage,
            pool_size=pool_size,
            pre_pool=encoding.pre_pool[stage][0].float().cpu().numpy(),
            what=encoding.whats[stage][0].float().cpu().numpy(),
            where_offset=offsets.cpu().numpy(),
            where_id=(cells[..., 0] * pool_size + cells[..., 1]).cpu().numpy(),
            unpooled=decoding.unpooled[stage][0].float().cpu().numpy(),
            hidden=None if hidden is None else hidden[0].float().cpu().numpy(),
            mid_mse=None if hidden is None else _mse(hidden, encoding.whats[stage]),
        ))
    return views, encoding, decoding


@dataclass
class UnitView:
    """One channel (unit) of one stage for one image, and the pixels it accounts for."""

    stage: int
    channel: int
    pre_pool: np.ndarray  # (H_l, W_l) the channel's map before pooling
    what: np.ndarray  # (h_l, w_l)
    where_offset: np.ndarray  # (h_l, w_l, 2) (row, col) inside the window
    decoding: np.ndarray  # (C, H, W) decoded from this stage with only this channel's what, the image's wheres
    contribution: np.ndarray  # (C, H, W) decoding minus the decoding with every channel of the stage at 0
    recon: np.ndarray  # (C, H, W) the whole image's reconstruction
    recon_mse: float  # MSE of the whole reconstruction against the image


def _unit_batch(model: SWWAE, encoding: Encoding, stage: int, channel: int) -> torch.Tensor:
    """Decodings from `stage` of: only `channel` kept, and no channel kept. -> (2N, C, H, W)."""
    only = encoding.keeping_channels(stage, [channel])
    none = encoding.keeping_channels(stage, [])
    return model.decode(_cat_encodings([only, none]), from_stage=stage).recon


def unit_decodings(model: SWWAE, images: torch.Tensor, stage: int, channel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode each image from `stage` with only `channel`'s what kept (other channels 0) and its own wheres.

    -> (decodings (N, C, H, W), contributions (N, C, H, W): decodings minus the all-zero stage's decoding).
    """
    with _evaluating(model):
        encoding = model.encode(_batch(images, model))
        both = _unit_batch(model, encoding, stage, channel)
    n = encoding.logits.shape[0]
    return both[:n], both[:n] - both[n:]


def unit_view(model: SWWAE, image: torch.Tensor, stage: int, channel: int) -> UnitView:
    """A unit's maps for one image (C, H, W), its decoding and the whole image's reconstruction error."""
    with _evaluating(model):
        batch = _batch(image, model)
        encoding = model.encode(batch)
        recon = model.decode(encoding).recon  # (1, C, H, W)
        both = _unit_batch(model, encoding, stage, channel)  # (2, C, H, W)
    cfg = model.config
    offsets = where_offsets(encoding.wheres[stage], cfg.pool_sizes[stage], cfg.stage_sizes[stage])  # (1, C_l, h, w, 2)
    numpy = lambda t: t.float().cpu().numpy()  # noqa: E731
    return UnitView(
        stage=stage, channel=channel,
        pre_pool=numpy(encoding.pre_pool[stage][0, channel]), what=numpy(encoding.whats[stage][0, channel]),
        where_offset=numpy(offsets[0, channel]), decoding=numpy(both[0]), contribution=numpy(both[0] - both[1]),
        recon=numpy(recon[0]), recon_mse=_mse(recon, batch),
    )


def channel_peaks(model: SWWAE, images: torch.Tensor, batch_size: int = 250) -> list[np.ndarray]:
    """Each image's largest what of every channel, per stage: [(N, C_l) float32 for each stage]."""
    peaks: list[list[np.ndarray]] = [[] for _ in model.config.channels]
    with _evaluating(model):
        for start in range(0, images.shape[0], batch_size):
            encoding = model.encode(_batch(images[start:start + batch_size], model))
            for stage, what in enumerate(encoding.whats):
                peaks[stage].append(what.float().amax(dim=(2, 3)).cpu().numpy())  # (B, C_l)
    return [np.concatenate(stage_peaks) for stage_peaks in peaks]


def top_images(peaks: np.ndarray, channel: int, count: int = 9) -> np.ndarray:
    """Indices of the `count` images whose `channel` peaks highest, best first. peaks: (N, C) of one stage."""
    return np.argsort(-peaks[:, channel], kind="stable")[:count]


@dataclass
class WhereMorph:
    """A's what decoded with wheres moving from A's (t = 0) to B's (t = 1)."""

    ts: np.ndarray  # (T,)
    recons: torch.Tensor  # (T, C, H, W)
    mse_to_a: np.ndarray  # (T,) against image A
    mse_to_b: np.ndarray  # (T,) against image B


def _morphed_wheres(where_a: torch.Tensor, where_b: torch.Tensor, t: float, generator: torch.Generator
                    ) -> torch.Tensor:
    """Soft: (1 - t) * A + t * B of the continuous offsets. Hard: B's switch at a fixed random fraction t of the
    positions (the same positions for every image, and nested: those taken at t are taken at every larger t)."""
    if where_a.is_floating_point():
        return torch.lerp(where_a, where_b, t)
    order = torch.rand(where_a.shape[1:], generator=generator).to(where_a.device)  # (C, h, w)
    return torch.where(order < t, where_b, where_a)


def morph_where(model: SWWAE, a: torch.Tensor, b: torch.Tensor, ts: Sequence[float],
                stages: Sequence[int] | None = None, seed: int = 0) -> WhereMorph:
    """Decode A's what with wheres moved a fraction t of the way from A's to B's at `stages` (default: all)."""
    stages = range(len(model.config.channels)) if stages is None else stages
    with _evaluating(model):
        pair = torch.cat([_batch(a, model), _batch(b, model)])  # (2, C, H, W)
        encoding = model.encode(pair)
        from_a, from_b = encoding.select(0), encoding.select(1)
        morphs = []
        for t in ts:
            generator = torch.Generator().manual_seed(seed)  # the same positions at every t
            wheres = [_morphed_wheres(where_a, where_b, float(t), generator) if stage in stages else where_a
                      for stage, (where_a, where_b) in enumerate(zip(from_a.wheres, from_b.wheres))]
            morphs.append(replace(from_a, wheres=wheres))  # A's what, wheres t of the way to B's
        recons = model.decode(_cat_encodings(morphs)).recon  # (T, C, H, W)
    errors = lambda image: ((recons.float() - image.float()) ** 2).flatten(1).mean(1).cpu().numpy()  # noqa: E731
    return WhereMorph(np.asarray(ts, dtype=float), recons, errors(pair[0:1]), errors(pair[1:2]))
