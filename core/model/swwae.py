"""Stacked What-Where Auto-encoder (Zhao, Mathieu, Goroshin & LeCun, 2015, arXiv:1506.02351).

Encoder: stages of conv(s) -> (BN) -> ReLU -> pool. Each pool emits *what* (fed to the next stage) and *where*
(kept for the matching decoder stage). A classifier head reads the top what. The decoder mirrors the encoder:
it unpools the what with the where, then convolves back to the stage's input channels.

`encode` returns an `Encoding`, `decode` takes one, and nothing is stored on the module between calls, so an
encoding can be edited (e.g. where swapped between images) before it is decoded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Sequence

import torch
import torch.nn as nn

from core.model.fields import check_field_types
from core.model.pooling import POOLING_MODES, pool, unpool

__all__ = ["ModelConfig", "SWWAE", "Encoding", "Decoding", "digits_config", "rgb32_config"]

OUTPUT_ACTIVATIONS = ("sigmoid", "none")


@dataclass
class ModelConfig:
    """Architecture of an SWWAE. Plain-type fields, so it goes into checkpoints and config.json as is."""

    in_channels: int = 1  # image channels (1 grayscale, 3 RGB)
    image_size: int = 28  # images are image_size x image_size
    channels: tuple[int, ...] = (32, 64, 128)  # output channels of each stage; one stage per entry
    kernel_sizes: tuple[int, ...] = (3, 3, 3)  # conv kernel size of each stage (odd; 'same' padding)
    convs_per_stage: int = 1  # convolutions before each pool (and after each unpool)
    pool_sizes: tuple[int, ...] = (2, 2, 2)  # pooling window (= stride) of each stage
    batch_norm: bool = True  # BatchNorm after every conv except the image output
    dropout: float = 0.0  # dropout in the classifier head
    noise_std: float = 0.0  # training only: Gaussian noise added after every encoder conv (and its BN), before ReLU
    head_width: int = 128  # hidden units of the classifier head; 0 = a single linear layer
    num_classes: int = 10
    pooling: str = "hard"  # 'hard' (max-pool switches), 'soft' (soft what-where) or 'none' (ablation)
    soft_beta: float = 4.0  # soft pooling temperature beta; soft -> hard as beta grows
    output_activation: str = "sigmoid"  # 'sigmoid' or 'none' on the reconstructed image
    input_mean: tuple[float, ...] = (0.1307,)  # per-channel normalisation, applied inside the model
    input_std: tuple[float, ...] = (0.3081,)

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("channels", "kernel_sizes", "pool_sizes", "input_mean", "input_std"):
            setattr(self, name, tuple(getattr(self, name)))  # JSON gives lists back
        stages = len(self.channels)
        if stages == 0:
            raise ValueError("channels must name at least one stage")
        for name in ("kernel_sizes", "pool_sizes"):
            if len(getattr(self, name)) != stages:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, expected {stages} (one per stage)")
        for name in ("input_mean", "input_std"):
            if len(getattr(self, name)) != self.in_channels:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, expected in_channels={self.in_channels}")
        if any(k % 2 == 0 or k < 1 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd and positive, got {self.kernel_sizes}")
        if any(p < 1 for p in self.pool_sizes) or self.convs_per_stage < 1 or min(self.channels) < 1:
            raise ValueError("pool_sizes, convs_per_stage and channels must be positive")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {self.output_activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.noise_std >= 0.0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if self.stage_sizes[-1] // self.pool_sizes[-1] < 1:
            raise ValueError(
                f"image_size {self.image_size} is too small for pools {self.pool_sizes}: "
                f"need at least {math.prod(self.pool_sizes)}"
            )

    @property
    def stage_sizes(self) -> list[int]:
        """Spatial size entering each stage (= the size each pool sees)."""
        sizes = [self.image_size]
        for p in self.pool_sizes[:-1]:
            sizes.append(sizes[-1] // p)
        return sizes

    @property
    def top_size(self) -> int:
        return self.stage_sizes[-1] // self.pool_sizes[-1]

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**values)


def digits_config(**overrides) -> ModelConfig:
    """28x28 grayscale digits (MNIST-like): 28 -> 14 -> 7 -> 3."""
    return replace(ModelConfig(), **overrides)


def rgb32_config(**overrides) -> ModelConfig:
    """32x32 RGB images (CIFAR-10 / SVHN-like): 32 -> 16 -> 8 -> 4."""
    base = ModelConfig(
        in_channels=3, image_size=32, channels=(64, 128, 256), input_mean=(0.4914, 0.4822, 0.4465),
        input_std=(0.2470, 0.2435, 0.2616),
    )
    return replace(base, **overrides)


@dataclass
class Encoding:
    """Everything the encoder produced, per stage (index 0 = closest to the image)."""

    whats: list[torch.Tensor]  # stage l: (N, C_l, h_l, w_l), the pooled values
    wheres: list[torch.Tensor]  # stage l: hard/none (N, C_l, h_l, w_l) int64 flat indices; soft (..., 2) offsets
    pre_pool: list[torch.Tensor]  # stage l: (N, C_l, H_l, W_l), what the pool saw
    logits: torch.Tensor  # (N, num_classes)

    def _take(self, attr: str, other: "Encoding", stages: Sequence[int]) -> "Encoding":
        mine, theirs = list(getattr(self, attr)), getattr(other, attr)
        if len(theirs) != len(mine):
            raise ValueError(f"cannot take {attr} from an encoding with {len(theirs)} stages, expected {len(mine)}")
        for stage in stages:
            if not 0 <= stage < len(mine):
                raise ValueError(f"stage {stage} does not exist; expected 0..{len(mine) - 1}")
            if theirs[stage].shape != mine[stage].shape or theirs[stage].dtype != mine[stage].dtype:
                raise ValueError(
                    f"stage {stage} {attr[:-1]} has shape {tuple(theirs[stage].shape)} ({theirs[stage].dtype}), "
                    f"expected {tuple(mine[stage].shape)} ({mine[stage].dtype})"
                )
            mine[stage] = theirs[stage]
        return replace(self, **{attr: mine})

    def with_wheres_from(self, other: "Encoding", stages: Sequence[int]) -> "Encoding":
        """A copy whose where at `stages` comes from `other` (same shapes required)."""
        return self._take("wheres", other, stages)

    def with_whats_from(self, other: "Encoding", stages: Sequence[int]) -> "Encoding":
        """A copy whose what at `stages` comes from `other`. Only the top what feeds the decoder."""
        return self._take("whats", other, stages)

    def keeping_channels(self, stage: int, channels: Sequence[int]) -> "Encoding":
        """A copy whose what at `stage` keeps only `channels` (the others zeroed): decode it from `stage` to see
        the pixels those units account for, placed by the image's own wheres."""
        if not 0 <= stage < len(self.whats):
            raise ValueError(f"stage {stage} does not exist; expected 0..{len(self.whats) - 1}")
        count = self.whats[stage].shape[1]
        keep = torch.zeros(count, dtype=torch.bool, device=self.whats[stage].device)
        for channel in channels:
            if not 0 <= channel < count:
                raise ValueError(f"channel {channel} does not exist at stage {stage}; expected 0..{count - 1}")
            keep[channel] = True
        whats = list(self.whats)
        whats[stage] = self.whats[stage] * keep.view(1, count, 1, 1).to(self.whats[stage].dtype)  # (N, C_l, h_l, w_l)
        return replace(self, whats=whats)

    def select(self, index) -> "Encoding":
        """Rows `index` of the batch (an int, slice, list or index tensor), as an Encoding."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        pick = lambda tensors: [t[index] for t in tensors]  # noqa: E731
        return Encoding(pick(self.whats), pick(self.wheres), pick(self.pre_pool), self.logits[index])


@dataclass
class Decoding:
    recon: torch.Tensor  # (N, C, H, W), the reconstructed image
    hiddens: list[torch.Tensor]  # hiddens[l] reconstructs Encoding.whats[l], for l = 0 .. stages-2
    unpooled: list[torch.Tensor] = field(default_factory=list)  # stage l: (N, C_l, H_l, W_l), aligned with pre_pool


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode; the identity in eval mode (as in ladder networks)."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x) if self.training else x


def _conv_block(in_ch: int, out_ch: int, kernel: int, batch_norm: bool, relu: bool,
                noise_std: float = 0.0) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    if noise_std:  # only when on, so module indices (and checkpoints) of noise-free models are unchanged
        layers.append(GaussianNoise(noise_std))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


class SWWAE(nn.Module):
    """Stacked What-Where Auto-encoder. Input: images in [0, 1], (N, in_channels, image_size, image_size)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        cfg = config
        stage_inputs = (cfg.in_channels, *cfg.channels[:-1])
        self.encoder_stages = nn.ModuleList()
        self.decoder_stages = nn.ModuleList()  # decoder_stages[l] undoes encoder_stages[l]
        for stage, (in_ch, out_ch, kernel) in enumerate(zip(stage_inputs, cfg.channels, cfg.kernel_sizes)):
            encoder: list[nn.Module] = []
            decoder: list[nn.Module] = []
            for i in range(cfg.convs_per_stage):
                encoder += _conv_block(in_ch if i == 0 else out_ch, out_ch, kernel, cfg.batch_norm, relu=True,
                                       noise_std=cfg.noise_std)
            for i in range(cfg.convs_per_stage - 1):
                decoder += _conv_block(out_ch, out_ch, kernel, cfg.batch_norm, relu=True)
            is_image = stage == 0
            decoder += _conv_block(out_ch, in_ch, kernel, cfg.batch_norm and not is_image, relu=not is_image)
            self.encoder_stages.append(nn.Sequential(*encoder))
            self.decoder_stages.append(nn.Sequential(*decoder))

        top_features = cfg.channels[-1] * cfg.top_size**2
        if cfg.head_width:
            head = [nn.Linear(top_features, cfg.head_width), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout),
                    nn.Linear(cfg.head_width, cfg.num_classes)]
        else:
            head = [nn.Linear(top_features, cfg.num_classes)]
        self.to_logits = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout), *head)
        self.register_buffer("input_mean", torch.tensor(cfg.input_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(cfg.input_std).view(1, -1, 1, 1), persistent=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.config.in_channels, self.config.image_size, self.config.image_size)

    def check_input(self, x: torch.Tensor, *, check_finite: bool = True) -> None:
        """Raise ValueError unless x is a (N, C, H, W) float batch of the configured shape (and finite)."""
        c, h, w = self.input_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w) or not x.is_floating_point():
            raise ValueError(f"expected float images of shape (N, {c}, {h}, {w}), got {tuple(x.shape)} ({x.dtype})")
        if check_finite and not torch.isfinite(x).all():
            raise ValueError(f"input of shape {tuple(x.shape)} holds NaN or infinite values")

    def encode(self, x: torch.Tensor, *, check_finite: bool = True) -> Encoding:
        """x: (N, C, H, W) in [0, 1] -> Encoding. `check_finite=False` skips a host sync (trusted data)."""
        self.check_input(x, check_finite=check_finite)
        cfg = self.config
        h = (x - self.input_mean) / self.input_std  # (N, C, H, W)
        whats, wheres, pre_pool = [], [], []
        for stage, pool_size in zip(self.encoder_stages, cfg.pool_sizes):
            h = stage(h)  # (N, C_l, H_l, W_l)
            pre_pool.append(h)
            h, where = pool(h, cfg.pooling, pool_size, cfg.soft_beta)  # (N, C_l, H_l // p, W_l // p)
            whats.append(h)
            wheres.append(where)
        return Encoding(whats=whats, wheres=wheres, pre_pool=pre_pool, logits=self.to_logits(h))

    def decode(self, encoding: Encoding, *, pooling: str | None = None, from_stage: int | None = None) -> Decoding:
        """Reconstruct from the what of `from_stage` (default: the top) and the wheres of it and every stage below.

        `pooling` overrides the unpooling rule (e.g. 'none' for a no-where reconstruction of a hard model).
        Starting lower (e.g. from one unit's what, see `Encoding.keeping_channels`) skips the stages above;
        `hiddens` then covers stages 0 .. from_stage-1 and `unpooled` stages 0 .. from_stage.
        """
        cfg = self.config
        mode = pooling or cfg.pooling
        if mode not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {mode!r}")
        if len(encoding.wheres) != len(cfg.channels):
            raise ValueError(f"encoding has {len(encoding.wheres)} stages, expected {len(cfg.channels)}")
        top = len(cfg.channels) - 1 if from_stage is None else from_stage
        if not 0 <= top < len(cfg.channels):
            raise ValueError(f"from_stage {from_stage} does not exist; expected 0..{len(cfg.channels) - 1}")
        h = encoding.whats[top]  # (N, C_top, h_top, w_top)
        hiddens, unpooled = [], []
        for stage in reversed(range(top + 1)):
            size = cfg.stage_sizes[stage]
            h = unpool(h, encoding.wheres[stage], mode, cfg.pool_sizes[stage], (size, size))  # (N, C_l, H_l, W_l)
            unpooled.append(h)
            h = self.decoder_stages[stage](h)  # (N, C_{l-1}, H_l, W_l)
            if stage > 0:
                hiddens.append(h)
        recon = torch.sigmoid(h) if cfg.output_activation == "sigmoid" else h  # (N, C, H, W)
        return Decoding(recon=recon, hiddens=hiddens[::-1], unpooled=unpooled[::-1])

    def forward(self, x: torch.Tensor) -> tuple[Encoding, Decoding]:
        encoding = self.encode(x)
        return encoding, self.decode(encoding)
