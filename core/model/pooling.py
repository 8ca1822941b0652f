"""Pooling that splits a feature map into *what* (pooled values) and *where* (switch positions).

Three modes, after Zhao, Mathieu, Goroshin & LeCun, "Stacked What-Where Auto-encoders" (arXiv:1506.02351):

- ``hard``: max pooling. ``where`` holds the flat index of each max inside its (H, W) plane, exactly as
  ``F.max_pool2d(..., return_indices=True)`` returns it, and unpooling is ``F.max_unpool2d``.
- ``soft``: in each pooling window, weights ``w = softmax(beta * z)``; ``what = sum(w * z)`` and
  ``where = sum(w * (row, col))``, a continuous (row, col) offset inside the window. Unpooling puts each what
  at its continuous position with bilinear weights over the window, so everything is differentiable.
- ``none``: the paper's ablation. Pooling is max pooling (switches are still returned, so they can be shown),
  but unpooling ignores where and upsamples by nearest neighbour.

Windows never overlap (kernel = stride = ``size``) and use floor mode, so a 7x7 map pools to 3x3 and unpools
back to 7x7 via ``output_size`` with zeros in the dropped last row and column.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["POOLING_MODES", "pool", "unpool", "soft_pool", "soft_unpool", "where_offsets"]

POOLING_MODES = ("hard", "soft", "none")


def _window_grid(size: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) offset of each of the size*size cells of a window, in row-major order."""
    cells = torch.arange(size * size, device=device)
    return (cells // size).to(dtype), (cells % size).to(dtype)


def soft_pool(x: torch.Tensor, size: int, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft what-where pooling. x: (N, C, H, W) -> what (N, C, h, w), where (N, C, h, w, 2) as (row, col)."""
    n, c, height, width = x.shape
    h, w = height // size, width // size
    windows = x[:, :, : h * size, : w * size].reshape(n, c, h, size, w, size)  # (N, C, h, s, w, s)
    windows = windows.permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w, size * size)  # (N, C, h, w, s*s)
    weights = torch.softmax(beta * windows, dim=-1)  # (N, C, h, w, s*s)
    what = (weights * windows).sum(-1)  # (N, C, h, w)
    rows, cols = _window_grid(size, x.device, x.dtype)
    where = torch.stack([(weights * rows).sum(-1), (weights * cols).sum(-1)], dim=-1)  # (N, C, h, w, 2)
    return what, where


def soft_unpool(what: torch.Tensor, where: torch.Tensor, size: int, output_size: tuple[int, int]) -> torch.Tensor:
    """Place each what at its continuous (row, col) offset with bilinear weights.

    what: (N, C, h, w), where: (N, C, h, w, 2) -> (N, C, *output_size). At integer offsets this is exactly
    hard unpooling; the weights of a window always sum to 1.
    """
    n, c, h, w = what.shape
    cells = torch.arange(size, device=what.device, dtype=what.dtype)
    row_weight = torch.relu(1 - (cells - where[..., 0:1]).abs())  # (N, C, h, w, s)
    col_weight = torch.relu(1 - (cells - where[..., 1:2]).abs())  # (N, C, h, w, s)
    windows = what[..., None, None] * row_weight[..., :, None] * col_weight[..., None, :]  # (N, C, h, w, s, s)
    out = windows.permute(0, 1, 2, 4, 3, 5).reshape(n, c, h * size, w * size)  # (N, C, h*s, w*s)
    return F.pad(out, (0, output_size[1] - w * size, 0, output_size[0] - h * size))  # (N, C, *output_size)


def pool(x: torch.Tensor, mode: str, size: int, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (N, C, H, W) -> (what, where) for the given pooling mode."""
    if mode == "soft":
        return soft_pool(x, size, beta)
    return F.max_pool2d(x, size, size, return_indices=True)  # (N, C, H//s, W//s) twice


def unpool(what: torch.Tensor, where: torch.Tensor, mode: str, size: int, output_size: tuple[int, int]) -> torch.Tensor:
    """(what, where) -> (N, C, *output_size): the inverse placement of `pool` for the given mode."""
    if mode == "hard":
        return F.max_unpool2d(what, where, size, size, output_size=output_size)  # (N, C, *output_size)
    if mode == "soft":
        return soft_unpool(what, where, size, output_size)
    up = F.interpolate(what, scale_factor=size, mode="nearest")  # (N, C, h*s, w*s); where is ignored
    return F.pad(up, (0, output_size[1] - up.shape[-1], 0, output_size[0] - up.shape[-2]))


def where_offsets(where: torch.Tensor, size: int, input_width: int) -> torch.Tensor:
    """Any where -> its (row, col) offset inside the pooling window, float (N, C, h, w, 2).

    Hard switches are flat indices into the (H, W) plane of the pooled map; soft wheres already are offsets.
    """
    if where.is_floating_point():
        return where
    h, w = where.shape[-2:]
    out_rows = torch.arange(h, device=where.device).view(h, 1) * size  # (h, 1): top row of each window
    out_cols = torch.arange(w, device=where.device).view(1, w) * size  # (1, w): left column of each window
    rows = where // input_width - out_rows  # (N, C, h, w)
    cols = where % input_width - out_cols  # (N, C, h, w)
    return torch.stack([rows, cols], dim=-1).float()  # (N, C, h, w, 2)
