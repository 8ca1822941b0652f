"""The pooling lens: one channel of one stage seen as the windows its pooling read, so a switch can be pointed at.

For each pooling window (kernel = stride = pool size, floor mode, as `core.model.pooling`): the values it held
(pre-pool), the value it passed up (*what*), the cell it passed it from (*where*, the switch: the winning cell for
hard pooling, the soft-argmax position for soft pooling) and whether that cell was a choice at all: a window whose
maximum occurs more than once (a flat, most often all-zero region) is a **tie**, and the index max pooling returns
there (the first such cell) is an artefact of the scan order, not something the network picked.

`pooling_lens` is a pure function of an `Encoding` (no model call), so a click on the page costs no forward pass;
`switch_agreement` compares two images' (or models') switches window by window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.analysis.running import as_batch, evaluating
from core.analysis.switches import windows_tied
from core.model import SWWAE, Encoding, where_offsets
from core.model.pooling import unpool

__all__ = ["PoolingLens", "SwitchAgreement", "window_ties", "pooling_lens", "switch_agreement", "tie_share",
           "paired_lenses", "busiest_channel", "image_lens"]


def window_ties(pre_pool: torch.Tensor | np.ndarray, pool_size: int) -> np.ndarray:
    """Whether each pooling window's maximum occurs more than once (exact equality: a tie is a tie).

    pre_pool: (..., H, W) -> (..., H // s, W // s) bool. Rows and columns a floor-mode pool drops are ignored. The
    SWWAE's windows (kernel = stride, no padding) of core.analysis.switches.windows_tied, which reads any window."""
    values = torch.as_tensor(pre_pool)
    planes = values.reshape(-1, 1, *values.shape[-2:]).float()  # (P, 1, H, W): exact for every float dtype
    tied = windows_tied(planes, pool_size, pool_size)  # (P, 1, h, w)
    return tied.reshape(*values.shape[:-2], *tied.shape[-2:]).cpu().numpy()


def tie_share(tied: np.ndarray) -> float:
    """The fraction of windows that are ties (0 for no windows)."""
    return float(tied.mean()) if tied.size else 0.0


@dataclass
class PoolingLens:
    """One channel of one stage of one image, window by window, as numpy arrays ready to draw."""

    stage: int
    channel: int
    pool_size: int
    pooling: str  # "hard", "soft" or "none" (max pooling whose decoder ignores the switches)
    pre_pool: np.ndarray  # (H, W) the map the pool read
    what: np.ndarray  # (h, w) the pooled values, one per window
    switch: np.ndarray  # (h, w, 2) float (row, col) of each window's switch in pre-pool pixels
    tied: np.ndarray  # (h, w) bool: the window's maximum occurs more than once, so no cell was chosen
    unpooled: np.ndarray  # (H, W) the what put back by this model's unpooling (at the switches, unless "none")

    @property
    def windows(self) -> tuple[int, int]:
        return self.what.shape[0], self.what.shape[1]

    def window_values(self, row: int, col: int) -> np.ndarray:
        """(s, s) the pre-pool values window (row, col) held."""
        s = self.pool_size
        return self.pre_pool[row * s:(row + 1) * s, col * s:(col + 1) * s]

    def readout(self, row: int, col: int) -> str:
        """Window (row, col) in one line of plain words: what it held, passed up and from where."""
        s = self.pool_size
        values = self.window_values(row, col)
        cells = ", ".join(f"{v:.3g}" for v in values.ravel())
        top, left = row * s, col * s
        if self.tied[row, col]:
            where = (f"a tie: its maximum {values.max():.3g} occurs {int((values == values.max()).sum())} times, "
                     "so no cell was chosen")
        elif self.pooling == "soft":
            r, c = self.switch[row, col]
            where = f"the switch at ({r:.2f}, {c:.2f}), a blend of the cells weighted by their softmax"
        else:
            r, c = self.switch[row, col].round().astype(int)
            where = f"the switch at pixel ({r}, {c}), cell ({r - top}, {c - left}) of the window"
        return (f"Window ({row}, {col}) covers pixels {top}–{top + s - 1} × {left}–{left + s - 1}; it held "
                f"[{cells}] and passed up what = {self.what[row, col]:.3g} from {where}.")


def pooling_lens(encoding: Encoding, pooling: str, pool_size: int, stage: int, channel: int, index: int = 0
                 ) -> PoolingLens:
    """The lens of `channel` at `stage` for batch item `index` of an encoding made by a model with `pooling` and
    `pool_size` at that stage (its `ModelConfig.pooling` and `.pool_sizes[stage]`)."""
    if not 0 <= stage < len(encoding.whats):
        raise ValueError(f"stage {stage} does not exist; expected 0..{len(encoding.whats) - 1}")
    count = encoding.whats[stage].shape[1]
    if not 0 <= channel < count:
        raise ValueError(f"channel {channel} does not exist at stage {stage + 1}; expected 0..{count - 1}")
    pre_pool = encoding.pre_pool[stage][index:index + 1, channel:channel + 1].float()  # (1, 1, H, W)
    what = encoding.whats[stage][index:index + 1, channel:channel + 1].float()  # (1, 1, h, w)
    where = encoding.wheres[stage][index:index + 1, channel:channel + 1]  # (1, 1, h, w) or (1, 1, h, w, 2)
    height, width = pre_pool.shape[-2:]
    h, w = what.shape[-2:]
    offsets = where_offsets(where, pool_size, width)[0, 0]  # (h, w, 2) (row, col) inside the window
    origins = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), dim=-1) * pool_size
    switch = offsets.cpu() + origins.to(offsets.dtype)  # (h, w, 2) in pre-pool pixels
    placed = unpool(what, where, pooling, pool_size, (height, width))  # (1, 1, H, W)
    return PoolingLens(
        stage=stage, channel=channel, pool_size=pool_size, pooling=pooling,
        pre_pool=pre_pool[0, 0].cpu().numpy(), what=what[0, 0].cpu().numpy(), switch=switch.numpy(),
        tied=window_ties(pre_pool[0, 0], pool_size), unpooled=placed[0, 0].cpu().numpy(),
    )


@dataclass
class SwitchAgreement:
    """Two lenses of one channel (two images, or two models), window by window."""

    same: np.ndarray  # (h, w) bool: both chose, and the same cell (soft: within a tenth of a pixel)
    moved: np.ndarray  # (h, w) bool: both chose, different cells
    tied: np.ndarray  # (h, w) bool: a tie in either, so there is no choice to compare

    @property
    def chosen(self) -> int:
        return int(self.same.sum() + self.moved.sum())

    def sentence(self, name_a: str, name_b: str) -> str:
        """The comparison in one line, with its counts."""
        total = self.same.size
        if self.chosen == 0:
            return f"Every one of the {total} windows is a tie in {name_a} or {name_b}: no switches to compare."
        return (f"Of the {self.chosen} windows where both {name_a} and {name_b} chose a cell, {int(self.moved.sum())} "
                f"({self.moved.sum() / self.chosen:.0%}) put the switch elsewhere and {int(self.same.sum())} in the "
                f"same cell; {int(self.tied.sum())} of the {total} windows are ties in one or both.")


def switch_agreement(a: PoolingLens, b: PoolingLens, tolerance: float = 0.1) -> SwitchAgreement:
    """Where two lenses of the same shape put their switches, window by window."""
    if a.what.shape != b.what.shape:
        raise ValueError(f"cannot compare switches of {a.what.shape} and {b.what.shape} windows")
    tied = a.tied | b.tied
    close = np.abs(a.switch - b.switch).max(axis=-1) <= tolerance  # (h, w)
    return SwitchAgreement(same=close & ~tied, moved=~close & ~tied, tied=tied)


def paired_lenses(model: SWWAE, a: torch.Tensor, b: torch.Tensor, stage: int, channel: int
                  ) -> tuple[PoolingLens, PoolingLens, SwitchAgreement]:
    """The lens of one channel for images A and B (C, H, W) under one model, and where their switches agree."""
    cfg = model.config
    with evaluating(model):
        encoding = model.encode(torch.cat([as_batch(a, model), as_batch(b, model)]))  # batch (A, B)
    lens_a, lens_b = (pooling_lens(encoding, cfg.pooling, cfg.pool_sizes[stage], stage, channel, index)
                      for index in (0, 1))
    return lens_a, lens_b, switch_agreement(lens_a, lens_b)


def busiest_channel(model: SWWAE, image: torch.Tensor, stage: int) -> int:
    """The channel of `stage` with the fewest tied windows for `image` (the most switches to look at); the largest
    total what breaks equal counts."""
    with evaluating(model):
        encoding = model.encode(as_batch(image, model))
    ties = window_ties(encoding.pre_pool[stage][0], model.config.pool_sizes[stage]).reshape(
        encoding.whats[stage].shape[1], -1).sum(axis=1)  # (C,)
    totals = encoding.whats[stage][0].float().flatten(1).sum(dim=1).cpu().numpy()  # (C,)
    return int(np.lexsort((-totals, ties))[0])


def image_lens(model: SWWAE, image: torch.Tensor, stage: int, channel: int) -> PoolingLens:
    """The lens of one channel for one image (C, H, W) under `model`."""
    with evaluating(model):
        encoding = model.encode(as_batch(image, model))
    return pooling_lens(encoding, model.config.pooling, model.config.pool_sizes[stage], stage, channel)
