"""Switch statistics for any max pooling (kernel, stride and padding as the layer has them, windows overlapping or
not): where in its window each switch sits, which windows tie, and how evenly the switches spread over the cells.

These are what `python -m core.inspect` reports per pooling layer of any network; for an SWWAE (kernel = stride,
no padding) they agree with `core.analysis.lens.window_ties` and `core.model.where_offsets`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["window_cells", "windows_tied", "switch_entropy"]


def window_cells(where: torch.Tensor, kernel: int, stride: int, padding: int, input_width: int) -> torch.Tensor:
    """Hard switches (flat indices into the (H, W) plane the pool read, as F.max_pool2d returns them) -> the
    (row, col) of each inside its window: (N, C, h, w) -> (N, C, h, w, 2) int64 in [0, kernel)."""
    h, w = where.shape[-2:]
    tops = torch.arange(h, device=where.device).view(h, 1) * stride - padding  # (h, 1) first row of each window
    lefts = torch.arange(w, device=where.device).view(1, w) * stride - padding  # (1, w)
    return torch.stack([where // input_width - tops, where % input_width - lefts], dim=-1)  # (N, C, h, w, 2)


def windows_tied(pre_pool: torch.Tensor, kernel: int, stride: int, padding: int = 0, *,
                 ceil_mode: bool = False) -> torch.Tensor:
    """Whether each pooling window's maximum occurs more than once (exact equality). pre_pool: (N, C, H, W) ->
    (N, C, h, w) bool, the windows F.max_pool2d(pre_pool, kernel, stride, padding, ceil_mode=ceil_mode) reads
    (padding never wins a max, so it never ties)."""
    n, c, height, width = pre_pool.shape
    peak = F.max_pool2d(pre_pool, kernel, stride, padding, ceil_mode=ceil_mode)  # (N, C, h, w)
    h, w = peak.shape[-2:]
    padded = F.pad(pre_pool, (padding, padding + kernel, padding, padding + kernel), value=-math.inf)
    rows = torch.arange(h, device=pre_pool.device) * stride  # window tops in the padded map
    cols = torch.arange(w, device=pre_pool.device) * stride
    count = torch.zeros_like(peak, dtype=torch.int64)
    for dr in range(kernel):  # k*k shifted views of the map, each compared with its window's peak
        for dc in range(kernel):
            cell = padded[:, :, rows + dr][:, :, :, cols + dc]  # (N, C, h, w) the window's cell (dr, dc)
            count += (cell == peak).long()
    return count > 1


def switch_entropy(cells: torch.Tensor, tied: torch.Tensor, kernel: int) -> float:
    """Entropy in bits of the cell a switch sits in, over the windows that did not tie (every channel and image
    pooled together): log2(kernel²) when the switches spread evenly over a window's cells, 0 when they all take one
    cell. NaN when every window ties. cells: (..., 2) from `window_cells`; tied: the same (...) bool."""
    chosen = cells[~tied]  # (K, 2)
    if chosen.numel() == 0:
        return math.nan
    index = (chosen[:, 0] * kernel + chosen[:, 1]).clamp(0, kernel * kernel - 1)
    share = torch.bincount(index, minlength=kernel * kernel).double() / len(index)
    share = share[share > 0]
    return float(-(share * share.log2()).sum())
