"""A what-where decoder fitted to a frozen classifier: the SWWAE's decoder (Zhao, Mathieu, Goroshin & LeCun, 2015,
arXiv:1506.02351) grown on a `PoolingNetwork` whose weights stay as they are.

The decoder mirrors the network's conv and pooling stages, built by a loop from the traced chain (the layers the
deconvnet retraces, `PoolingNetwork.stage_layers`). Stage l is what lies between pooling layer l-1 (or the image) and
pooling layer l. Going down, for each pooling layer from the top:
- unpool: the what is put back at its switch (the where) with ``F.max_unpool2d`` and that layer's kernel, stride
  and padding, to the pre-pool size (core.model.deconvnet.unpool; "none" upsamples without the where). Overlapping
  windows (stride < kernel) and padded or ceil-mode pools work the same way: every value goes to its own switch;
- convolve back: each Conv2d of the stage, in reverse order, gets a mirror from its output channels to its input
  channels: a 'same' convolution with the conv's own kernel (3x3 when that kernel is even or not square), batch
  norm and ReLU; the very last one, to the image, has neither and ends in a sigmoid, so `recon` is an image in [0, 1];
- the output of every stage but the lowest is a hidden that reconstructs the what of the pooling layer below
  (`Decoding.hiddens`, as the SWWAE's), which the paper's L2M terms compare (core.model.losses.swwae_loss).

How the encoder's layers are handled: its batch norm layers are not inverted (the decoder has batch norm of its own
after each mirrored conv, trained with it); its ReLUs, dropouts and identities have no mirror (the decoder's own
ReLUs rectify). What the decoder cannot mirror is refused in one `NetworkError` line: a network whose layers up to
the last pool are not one chain (residual additions, concatenations, a function between layers), a layer with no
place in a chain of convs and pools (global or average pooling between two max-pools, an activation other than
ReLU, ...), and a convolution that changes the map's size (a strided or unpadded conv), which a 'same' mirror cannot
undo.

`FittedDecoderConfig` is plain types (it goes into the pooling-network file as "decoder_config"); the weights are its
state dict ("decoder_state"). Nothing is stored between calls: the decoder reads an `Encoding`'s whats and wheres.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn

from core.model.deconvnet import UNPOOLING_MODES, PoolWindow, unpool
from core.model.fields import check_field_types
from core.model.network import NetworkError, PoolingNetwork
from core.model.swwae import Decoding

__all__ = ["FittedDecoderConfig", "FittedDecoder", "plan_decoder", "attach_fitted_decoder", "decoder_fields"]

OUTPUT_ACTIVATIONS = ("sigmoid",)
DEFAULT_KERNEL = 3  # the mirror's kernel where the conv's own cannot pad 'same' symmetrically


@dataclass
class FittedDecoderConfig:
    """The decoder's layout. One entry per mirrored encoder Conv2d, in the encoder's forward order."""

    in_channels: int  # image channels
    channels: tuple[int, ...]  # channels each pooling layer sees (NetworkConfig.channels)
    conv_stages: tuple[int, ...]  # the stage (index of the pooling layer after it) of each conv
    conv_in: tuple[int, ...]  # its input channels (the mirror's output)
    conv_out: tuple[int, ...]  # its output channels (the mirror's input)
    conv_kernels: tuple[int, ...]  # the mirror's kernel side (odd: 'same' padding)
    output_activation: str = "sigmoid"  # on the reconstructed image

    def __post_init__(self) -> None:
        check_field_types(self)
        for f in fields(self):
            if f.type.startswith("tuple["):
                setattr(self, f.name, tuple(getattr(self, f.name)))  # a file gives lists back
        convs = len(self.conv_stages)
        if not self.channels or any(len(getattr(self, n)) != convs for n in ("conv_in", "conv_out", "conv_kernels")):
            raise NetworkError("decoder config: conv_stages, conv_in, conv_out and conv_kernels need one entry per conv")
        if any(not 0 <= s < len(self.channels) for s in self.conv_stages) or list(self.conv_stages) != sorted(
                self.conv_stages):
            raise NetworkError(f"decoder config: conv_stages {self.conv_stages} are not stages in forward order")
        if min((self.in_channels, *self.channels, *self.conv_in, *self.conv_out)) < 1:
            raise NetworkError("decoder config: channel counts must be positive")
        if any(k < 1 or k % 2 == 0 for k in self.conv_kernels):
            raise NetworkError(f"decoder config: kernels must be odd and positive, got {self.conv_kernels}")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise NetworkError(f"decoder config: output_activation must be one of {OUTPUT_ACTIVATIONS}")

    @classmethod
    def from_dict(cls, values: Any) -> "FittedDecoderConfig":
        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) - known or not {"in_channels", "channels"} <= set(values):
            raise NetworkError(f"decoder config: expected the fields {sorted(known)}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:  # check_field_types' one line
            raise NetworkError(str(exc).splitlines()[0]) from None


def _mirror_kernel(conv: nn.Conv2d) -> int:
    side = conv.kernel_size[0]
    return side if conv.kernel_size[0] == conv.kernel_size[1] and side % 2 == 1 else DEFAULT_KERNEL


def plan_decoder(network: PoolingNetwork) -> FittedDecoderConfig:
    """The decoder that mirrors `network`; NetworkError (one line) when it has layers a decoder cannot mirror."""
    cfg = network.config
    if not network.stage_layers:
        reason = cfg.decoder_reason or "its layers up to the last pool are not one chain"
        raise NetworkError(f"cannot fit a what-where decoder: {reason}")
    stages, ins, outs, kernels = [], [], [], []
    for stage, layers in enumerate(network.stage_layers):
        size = (cfg.stage_sizes[stage], cfg.stage_sizes[stage])  # what the pool sees: every conv must keep it
        for layer in layers:
            module = network.net.get_submodule(layer.name)
            if not isinstance(module, nn.Conv2d):
                continue  # ReLU, BatchNorm2d, Dropout, Identity: no mirror of their own (see the module docstring)
            if tuple(layer.input_size) != size or tuple(module.stride) != (1, 1):
                raise NetworkError(f"cannot fit a what-where decoder: layer {layer.name!r} changes the map size "
                                   f"(a strided or unpadded convolution), which a 'same' mirror cannot undo")
            stages.append(stage)
            ins.append(module.in_channels)
            outs.append(module.out_channels)
            kernels.append(_mirror_kernel(module))
    return FittedDecoderConfig(in_channels=cfg.in_channels, channels=cfg.channels, conv_stages=tuple(stages),
                               conv_in=tuple(ins), conv_out=tuple(outs), conv_kernels=tuple(kernels))


def _mirror(in_ch: int, out_ch: int, kernel: int, *, to_image: bool) -> list[nn.Module]:
    """conv (+ BN + ReLU unless it ends at the image): (N, in_ch, H, W) -> (N, out_ch, H, W)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=to_image)  # 'same': the size is kept
    return [conv] if to_image else [conv, nn.BatchNorm2d(out_ch), nn.ReLU()]


class FittedDecoder(nn.Module):
    """The decoder of `config`: decoder_stages[l] takes stage l's unpooled map (N, channels[l], H_l, W_l) back to the
    channels stage l started from (N, channels[l-1] or in_channels, H_l, W_l)."""

    def __init__(self, config: FittedDecoderConfig):
        super().__init__()
        self.config = config
        self.decoder_stages = nn.ModuleList()
        for stage in range(len(config.channels)):
            convs = [i for i, s in enumerate(config.conv_stages) if s == stage]
            layers: list[nn.Module] = []
            for i in reversed(convs):  # top-down: the stage's last conv is mirrored first
                layers += _mirror(config.conv_out[i], config.conv_in[i], config.conv_kernels[i],
                                  to_image=stage == 0 and i == convs[0])
            self.decoder_stages.append(nn.Sequential(*layers))

    def forward(self, whats: list[torch.Tensor], wheres: list[torch.Tensor], windows: list[PoolWindow], *,
                top: int, mode: str = "hard") -> Decoding:
        """From whats[top] through the wheres of stages top..0 down to the image.
        -> Decoding: recon (N, C, H, W) in [0, 1]; hiddens[l] (stages 0 .. top-1) reconstructs whats[l];
        unpooled[l] (stages 0 .. top) is stage l's unpooled map."""
        if mode not in UNPOOLING_MODES:
            raise NetworkError(f"the fitted decoder unpools {' or '.join(UNPOOLING_MODES)}, not {mode!r}")
        signal = whats[top]  # (N, C_top, h_top, w_top)
        hiddens, unpooled = [], []
        for stage in reversed(range(top + 1)):
            signal = unpool(signal, wheres[stage], windows[stage], mode)  # (N, C_l, H_l, W_l)
            unpooled.append(signal)
            signal = self.decoder_stages[stage](signal)  # (N, C_{l-1}, H_l, W_l)
            if stage > 0:
                hiddens.append(signal)
        recon = torch.sigmoid(signal)  # (N, C, H, W) in [0, 1]
        return Decoding(recon=recon, hiddens=hiddens[::-1], unpooled=unpooled[::-1])


def attach_fitted_decoder(network: PoolingNetwork, config: Any, state: Any, label: str = "decoder") -> FittedDecoder:
    """Rebuild a stored decoder (its config dict and state dict), check that it mirrors `network`, load its weights
    (strict) and attach it, so `network.decode` uses it. NetworkError (one line) when it does not fit."""
    decoder_config = config if isinstance(config, FittedDecoderConfig) else FittedDecoderConfig.from_dict(config)
    expected = plan_decoder(network)
    if decoder_config != expected:
        differ = next(f.name for f in fields(expected) if getattr(expected, f.name) != getattr(decoder_config, f.name))
        raise NetworkError(f"{label}: the stored decoder does not mirror this network ({differ} differs)")
    decoder = FittedDecoder(decoder_config)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NetworkError(f"{label}: the decoder's weights are not a dict of named tensors")
    shapes = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != found:
        key = next(iter(sorted(set(shapes) ^ set(found)) or [k for k in shapes if shapes[k] != found[k]]))
        raise NetworkError(f"{label}: the decoder's weights do not fit its config ({key})")
    decoder.load_state_dict(state, strict=True)
    param = next(network.net.parameters(), None)
    if param is not None:
        decoder.to(param.device)
    network.attach_decoder(decoder.train(network.training))
    return decoder


def decoder_fields(decoder: FittedDecoder) -> dict[str, Any]:
    """The pooling-network file's "decoder_config" and "decoder_state" of `decoder` (plain, on the CPU)."""
    return {"decoder_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(decoder.config).items()},
            "decoder_state": {k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}}
