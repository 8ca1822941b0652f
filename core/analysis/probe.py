"""The shift probe: how much a stage's what changes when the input shifts (invariance, against the map it pools and
the input), and how many switches move by exactly the shift (equivariance, against a different image as chance),
with the findings stated from those numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.analysis.running import as_batch, evaluating
from core.model import SWWAE, where_offsets

__all__ = ["ShiftStage", "shift_image", "shift_probe", "shift_curves", "along_axis", "shift_findings"]


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
    with evaluating(model):
        batch = as_batch(images, model)
        n = batch.shape[0]
        if reference is None and n > 1:
            reference = batch.roll(1, dims=0)
        parts = [batch, shift_image(batch, dx, dy)]
        if reference is not None:
            parts.append(shift_image(as_batch(reference, model).expand_as(batch), dx, dy))
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
