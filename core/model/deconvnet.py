"""The deconvnet of Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks" (ECCV 2014,
arXiv:1311.2901): a unit's activation projected back to pixel space through the network's own layers.

Going down from a pooling layer's what, each layer is undone in reverse order:
- max pooling: the what is put back at its switch (the where) with ``F.max_unpool2d``, zeros elsewhere, to the
  pre-pool size. Overlapping windows (AlexNet's 3x3 stride 2) work the same way: in an encoding's own whats, two
  windows whose maximum is the same input cell carry the same value, so either write gives the same map (it is
  placed once, not summed as a gradient would be);
- ReLU: ``relu`` of the signal coming down (the deconvnet's rectification, not the forward pass's mask);
- Conv2d: ``F.conv_transpose2d`` with the layer's own weights (the filters transposed), its stride, padding,
  dilation and groups, no bias; ``output_padding`` gives back the convolution's recorded input size;
- BatchNorm2d: skipped (the identity). Zeiler & Fergus had no batch norm. In eval mode it is a per-channel scale
  and shift: a deconvnet has no place for the shift (it drops the conv biases too), and dividing by the scale would
  boost the channels batch norm damps. Skipping it keeps the paper's projection: transposed filters, nothing else;
- Dropout, Identity: the identity (eval-mode dropout is the identity).

`pooling="none"` replaces the switches with nearest-neighbour upsampling: the same what, placed without any where.
Functions here are pure: they take the layers, the wheres and the sizes, and store nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DECONV_LAYERS", "UNPOOLING_MODES", "PoolWindow", "DeconvLayer", "deconv_refusal", "undo_layer", "unpool",
           "deconvnet"]

DECONV_LAYERS = (nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.MaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)
UNPOOLING_MODES = ("hard", "none")  # 'hard': by the switches; 'none': nearest-neighbour, the where ignored


@dataclass(frozen=True)
class PoolWindow:
    """One max-pooling layer as the deconvnet needs it; `size` is the (H, W) of the map it pooled."""

    kernel: int
    stride: int
    padding: int
    size: tuple[int, int]


@dataclass(frozen=True)
class DeconvLayer:
    """One layer between two pools: `name` in the wrapped net, `input_size` the (H, W) it received."""

    name: str
    input_size: tuple[int, int]


def _same_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """Conv padding as ints per side, or None when it is asymmetric ('same' with an even reach)."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding != "same":
        return tuple(conv.padding)
    reach = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
    return None if any(r % 2 for r in reach) else tuple(r // 2 for r in reach)


def deconv_refusal(name: str, module: nn.Module) -> str | None:
    """Why the deconvnet cannot undo `module` (one line naming it), or None when it can."""
    if not isinstance(module, DECONV_LAYERS):
        return f"layer {name!r} ({type(module).__name__}) has no deconvnet inverse"
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return f"layer {name!r} pads with {module.padding_mode!r}, which a transposed convolution cannot undo"
        if _same_padding(module) is None:
            return f"layer {name!r} pads asymmetrically ('same' with an even kernel)"
    return None


def undo_layer(signal: torch.Tensor, module: nn.Module, input_size: tuple[int, int]) -> torch.Tensor:
    """The deconvnet's inverse of one layer: signal (N, C_out, h, w) -> (N, C_in, *input_size)."""
    if isinstance(module, nn.ReLU):
        return F.relu(signal)  # the signal coming down is rectified
    if not isinstance(module, nn.Conv2d):
        return signal  # BatchNorm2d (skipped, see the module docstring), Dropout, Identity
    padding = _same_padding(module)
    out_h, out_w = signal.shape[-2:]
    base = [(o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in
            zip((out_h, out_w), module.stride, padding, module.dilation, module.kernel_size)]
    output_padding = tuple(size - b for size, b in zip(input_size, base))  # the rows/cols the conv's floor dropped
    weight = module.weight.to(signal.dtype)
    return F.conv_transpose2d(signal, weight, stride=module.stride, padding=padding, output_padding=output_padding,
                              groups=module.groups, dilation=module.dilation)  # (N, C_in, *input_size)


def unpool(what: torch.Tensor, where: torch.Tensor, window: PoolWindow, mode: str) -> torch.Tensor:
    """(N, C, h, w) what and its where -> (N, C, *window.size), by the switches ('hard') or without them ('none')."""
    if mode == "hard":
        return F.max_unpool2d(what, where, window.kernel, window.stride, window.padding,
                              output_size=window.size)  # (N, C, H, W)
    up = F.interpolate(what, scale_factor=window.stride, mode="nearest")  # (N, C, h*s, w*s); where is ignored
    height, width = window.size
    up = up[..., :height, :width]  # (N, C, <=H, <=W): windows that reach past the map are cut
    return F.pad(up, (0, width - up.shape[-1], 0, height - up.shape[-2]))  # (N, C, H, W)


def deconvnet(net: nn.Module, whats: list[torch.Tensor], wheres: list[torch.Tensor], windows: list[PoolWindow],
              layers: list[list[DeconvLayer]], top: int, mode: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Project whats[top] down to the image through pools top..0 and the layers below each.

    layers[l] lists, in forward order, the layers between pool l-1 (or the image) and pool l.
    -> (image-space projection (N, C, H, W), unpooled maps [stage 0 .. top], each (N, C_l, H_l, W_l)).
    """
    signal = whats[top]  # (N, C_top, h_top, w_top)
    unpooled = []
    for stage in reversed(range(top + 1)):
        signal = unpool(signal, wheres[stage], windows[stage], mode)  # (N, C_l, H_l, W_l)
        unpooled.append(signal)
        for layer in reversed(layers[stage]):
            signal = undo_layer(signal, net.get_submodule(layer.name), layer.input_size)  # (N, C_in, *input_size)
    return signal, unpooled[::-1]
