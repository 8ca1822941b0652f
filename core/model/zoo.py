"""The project's own plain (non-SWWAE) classifiers, in torchvision's style: a conv/pool stack built by a loop from a
spec list, then a classifier head.

`small_vgg` follows the VGG recipe (Simonyan & Zisserman, 2015, "Very Deep Convolutional Networks for Large-Scale
Image Recognition", arXiv:1409.1556) with BatchNorm (Ioffe & Szegedy, 2015) at 28x28: blocks of two 3x3 convs,
each followed by BatchNorm and ReLU, closed by a 2x2 max-pool (28 -> 14 -> 7 -> 3 with three blocks). Its max-pooling
is done by `nn.MaxPool2d` modules, so core.model.network.PoolingNetwork can record their switches.

`build("small_vgg", **architecture_args)` rebuilds a network from the arguments a pooling-network file stores
(core.model.network_file). Importing this module builds nothing.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch.nn as nn

__all__ = ["SmallVGG", "small_vgg", "ARCHITECTURES", "build", "POOL"]

POOL = "M"  # a max-pool in a spec list; an int is a 3x3 conv (+ BN + ReLU) with that many output channels
CONVS_PER_BLOCK = 2
KERNEL_SIZE = 3
POOL_SIZE = 2
HEAD_WIDTH = 256  # hidden units of the classifier head


def block_spec(widths: Sequence[int], convs_per_block: int = CONVS_PER_BLOCK) -> list[int | str]:
    """(32, 64) -> [32, 32, "M", 64, 64, "M"]: torchvision's cfg lists, made from the block widths."""
    return [item for width in widths for item in [width] * convs_per_block + [POOL]]


def make_features(spec: Sequence[int | str], in_channels: int) -> nn.Sequential:
    """The conv/pool stack of a spec list (torchvision's `make_layers` with batch_norm=True)."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in spec:
        if item == POOL:
            layers.append(nn.MaxPool2d(kernel_size=POOL_SIZE, stride=POOL_SIZE))  # (N, C, H, W) -> (N, C, H/2, W/2)
        else:
            layers += [nn.Conv2d(channels, int(item), KERNEL_SIZE, padding=KERNEL_SIZE // 2),  # size kept
                       nn.BatchNorm2d(int(item)), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


class SmallVGG(nn.Sequential):
    """features (conv/pool stack) -> classifier (Flatten, Dropout, Linear, ReLU, Dropout, Linear).

    An nn.Sequential of two named children, so `net.features` and `net.classifier` read as in torchvision's VGG and
    the whole forward is one chain of modules.
    """

    def __init__(self, *, in_channels: int, num_classes: int, widths: Sequence[int], image_size: int,
                 dropout: float):
        top_size = image_size // POOL_SIZE ** len(widths)  # 28 -> 14 -> 7 -> 3
        features = make_features(block_spec(widths), in_channels)
        classifier = nn.Sequential(
            nn.Flatten(),  # (N, C, top, top) -> (N, C * top * top)
            nn.Dropout(dropout),
            nn.Linear(widths[-1] * top_size * top_size, HEAD_WIDTH),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(HEAD_WIDTH, num_classes),  # (N, num_classes) logits
        )
        super().__init__(OrderedDict(features=features, classifier=classifier))
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision VGG's initialisation: He (fan-out) for convs, BN as identity, small normal for linears."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)


def small_vgg(*, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128),
              image_size: int = 28, dropout: float = 0.3) -> SmallVGG:
    """A VGG-style classifier for small images (arXiv:1409.1556): per width a block of two 3x3 convs + BN + ReLU and
    a 2x2 max-pool. The defaults (28x28 grayscale, widths 32-64-128) have about 0.59M parameters (2.3 MB)."""
    widths = tuple(widths) if isinstance(widths, (list, tuple)) else widths
    _check_positive_int("in_channels", in_channels)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("image_size", image_size)
    if not isinstance(widths, tuple) or not widths:
        raise ValueError(f"small_vgg: widths must be a non-empty list of channel counts, got {widths!r}")
    for width in widths:
        _check_positive_int("widths", width)
    if image_size // POOL_SIZE ** len(widths) < 1:
        raise ValueError(f"small_vgg: image_size {image_size} is too small for {len(widths)} pools; need at least "
                         f"{POOL_SIZE ** len(widths)}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"small_vgg: dropout must be in [0, 1), got {dropout!r}")
    return SmallVGG(in_channels=in_channels, num_classes=num_classes, widths=widths, image_size=image_size,
                    dropout=float(dropout))


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"small_vgg: {name} must be a positive integer, got {value!r}")


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"small_vgg": small_vgg}


def build(name: str, **kwargs) -> nn.Module:
    """The zoo network `name` (e.g. "small_vgg") built with `kwargs`; ValueError (one line) for an unknown name or
    an argument the factory does not take."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown zoo network {name!r}; expected one of {', '.join(sorted(ARCHITECTURES))}")
    try:
        return ARCHITECTURES[name](**kwargs)
    except TypeError as exc:  # an unexpected or positional argument
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "bad arguments"
        raise ValueError(f"zoo:{name}: {detail.replace(ARCHITECTURES[name].__name__ + '()', '').strip()}") from None
