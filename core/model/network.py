"""A foreign classifier seen the way the explorer sees an SWWAE: the switches of its max-pooling layers.

`PoolingNetwork` wraps any `nn.Module` classifier whose max pooling is done by `nn.MaxPool2d` modules (torchvision's
VGG, AlexNet, ResNet, the project's zoo) and gives it the SWWAE's API: `encode(x)` returns an `Encoding` whose stage
l is the l-th MaxPool2d call in forward order (pre_pool = its input, what = its output, where = the indices
``F.max_pool2d(..., return_indices=True)`` gives with its kernel, stride, padding, dilation and ceil_mode), and
`decode(encoding)` is the Zeiler & Fergus deconvnet (core.model.deconvnet) back to the image.

The layout is measured once, when the network is wrapped: a trace of one zero image (eval mode, no grad) with hooks
on every leaf module records the calls in order, their shapes, and whether each layer reads the previous one's
output unchanged. When every layer up to the last pool does (conv, ReLU, batch norm, pool, dropout, identity in a
chain, no residual add, no function between them), `config.decoder` is "deconvnet"; otherwise "none", with the
reason in `config.decoder_reason`. A what-where decoder fitted to the frozen network (core.model.fitted, attached
with `attach_decoder`) makes `config.decoder` "fitted": `decode` then gives true reconstructions in [0, 1], as an
SWWAE's, and the deconvnet stays at hand as `deconvnet`.

Encoding runs the wrapped net itself. Each MaxPool2d carries one permanent forward hook that does nothing unless
the calling thread is inside `encode`: the per-call record lives in a `ContextVar` (one per thread), never on the
module, so several threads may encode on one shared network at once without a lock.
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.model.deconvnet import UNPOOLING_MODES, DeconvLayer, PoolWindow, deconv_refusal, deconvnet
from core.model.fields import check_field_types
from core.model.swwae import Decoding, Encoding

__all__ = ["NetworkError", "NetworkConfig", "PoolingNetwork", "MIN_IMAGE_SIZE", "MAX_IMAGE_SIZE"]

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024  # the input sides the explorer can serve


class NetworkError(ValueError):
    """A network, its file or its input that the explorer cannot use; the message is one line saying why."""


@dataclass
class NetworkConfig:
    """What the trace measured of a wrapped classifier. Plain-type fields, so it goes into config.json as is.
    Per-pool tuples have one entry per MaxPool2d call, in forward order (stage 0 = closest to the image)."""

    in_channels: int
    image_size: int  # inputs are image_size x image_size
    channels: tuple[int, ...]  # channels each pooling layer sees
    pool_sizes: tuple[int, ...]  # kernel side of each pooling layer
    pool_strides: tuple[int, ...]
    pool_paddings: tuple[int, ...]
    pool_dilations: tuple[int, ...]
    pool_ceil_modes: tuple[bool, ...]
    stage_sizes: tuple[int, ...]  # side of the map each pooling layer sees (measured)
    top_size: int  # side of the last pooling layer's output
    num_classes: int
    pooling: str = "hard"  # max pooling: the where is a switch index
    soft_beta: float = 0.0
    convs_per_stage: int = 1  # the most Conv2d calls between two pools (for activation estimates)
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    architecture: str = "custom"  # the spec the network was built from, e.g. "torchvision:vgg11_bn"
    decoder: str = "none"  # "deconvnet", "fitted" (a trained what-where decoder, core.model.fitted) or "none"
    decoder_reason: str = ""  # why decoder is "none" (one line); "" otherwise

    def __post_init__(self) -> None:
        check_field_types(self)
        for f in fields(self):
            if f.type.startswith("tuple["):
                setattr(self, f.name, tuple(getattr(self, f.name)))  # JSON gives lists back

    @property
    def overlapping(self) -> bool:
        """Whether some pooling windows overlap (stride < kernel, e.g. AlexNet's 3x3 stride 2)."""
        return any(s != k for s, k in zip(self.pool_strides, self.pool_sizes))

    @classmethod
    def from_dict(cls, values: dict) -> "NetworkConfig":
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise NetworkError(f"unknown network config fields: {sorted(unknown)}")
        return cls(**values)


# ---- the trace: one zero image through the net, every leaf module call recorded ----

@dataclass
class _Call:
    name: str  # the module's name in the net ("features.3")
    module: nn.Module
    input: torch.Tensor | None
    input_version: int  # the input's version counter when the module was called
    output: torch.Tensor | None
    output_version: int  # the output's version counter when the module returned


def _first_tensor(value) -> torch.Tensor | None:
    value = value[0] if isinstance(value, (tuple, list)) and value else value  # MaxPool2d(return_indices) -> what
    return value if isinstance(value, torch.Tensor) else None


def _trace(net: nn.Module, image: torch.Tensor) -> tuple[list[_Call], torch.Tensor]:
    """Run `net` on `image` with hooks on every leaf module: (the calls in order, the output)."""
    names = {id(module): name for name, module in net.named_modules()}
    calls: list[_Call] = []
    pending: list[tuple[torch.Tensor | None, int]] = []

    def before(module, inputs):
        first = _first_tensor(inputs)
        pending.append((first, -1 if first is None else first._version))

    def after(module, inputs, output):
        first, version = pending.pop()
        out = _first_tensor(output)
        calls.append(_Call(names[id(module)], module, first, version, out, -1 if out is None else out._version))

    leaves = [module for module in net.modules() if next(module.children(), None) is None]
    handles = [h for m in leaves for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        output = net(image)
    except Exception as error:  # a net that cannot take this input: say so in one line
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise NetworkError(f"the network does not run on a {tuple(image.shape)} input: "
                           f"{type(error).__name__}: {reason}") from None
    finally:
        for handle in handles:
            handle.remove()
    return calls, output


def _side(value, what: str, name: str) -> int:
    sides = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(set(sides)) != 1:
        raise NetworkError(f"pooling layer {name!r} has a non-square {what} {sides}; only square windows are shown")
    return int(sides[0])


def _chain_refusal(calls: list[_Call], image: torch.Tensor, last_pool: int) -> str:
    """Why the layers up to the last pool are not a chain the deconvnet can invert; "" when they are."""
    previous, version, source = image, 0, "the network's input"
    for call in calls[: last_pool + 1]:
        if refusal := deconv_refusal(call.name, call.module):
            return refusal
        if call.input is not previous or call.input_version != version:
            return (f"layer {call.name!r} does not read {source} as it is (a residual add, a concatenation or a "
                    f"function between them), so the deconvnet cannot retrace it")
        previous, version, source = call.output, call.output_version, f"{call.name!r}'s output"
    return ""


def _stage_layers(calls: list[_Call], last_pool: int) -> list[list[DeconvLayer]]:
    """The layers between consecutive pools (stage l: after pool l-1, before pool l), in forward order."""
    stages: list[list[DeconvLayer]] = [[]]
    for call in calls[: last_pool + 1]:
        if isinstance(call.module, nn.MaxPool2d):
            stages.append([])
        else:
            stages[-1].append(DeconvLayer(call.name, tuple(call.input.shape[-2:])))
    return stages[:-1]


@dataclass
class _Layout:
    """The trace's findings: the config's measured fields and what encode/decode need."""

    measured: dict
    pool_names: tuple[str, ...]  # the module of each pooling call, in forward order
    guards: tuple[bool, ...]  # pooling calls whose input or output the net later changes in place
    layers: list[list[DeconvLayer]] = field(default_factory=list)


def _layout(net: nn.Module, in_channels: int, image_size: int) -> _Layout:
    param = next(net.parameters(), None)
    image = torch.zeros(1, in_channels, image_size, image_size, device=None if param is None else param.device,
                        dtype=torch.float32 if param is None else param.dtype)  # (1, C, S, S)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            calls, output = _trace(net, image)
    finally:
        net.train(was_training)
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[0] != 1:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise NetworkError(f"the network's output must be class logits (N, num_classes), got {shape}")
    pools = [i for i, call in enumerate(calls) if isinstance(call.module, nn.MaxPool2d)]
    if not pools:
        raise NetworkError("the network has no nn.MaxPool2d layer, so it has no switches to show")
    measured: dict = {key: [] for key in ("channels", "pool_sizes", "pool_strides", "pool_paddings",
                                          "pool_dilations", "pool_ceil_modes", "stage_sizes")}
    for i in pools:
        pool, name, pre_pool = calls[i].module, calls[i].name, calls[i].input
        if pre_pool.dim() != 4 or pre_pool.shape[-1] != pre_pool.shape[-2]:
            raise NetworkError(f"pooling layer {name!r} sees a map of shape {tuple(pre_pool.shape)}; "
                               "only square (N, C, H, H) maps are shown")
        for key, word, value in (("pool_sizes", "kernel", pool.kernel_size), ("pool_strides", "stride", pool.stride),
                                 ("pool_paddings", "padding", pool.padding),
                                 ("pool_dilations", "dilation", pool.dilation)):
            measured[key].append(_side(value, word, name))
        measured["pool_ceil_modes"].append(bool(pool.ceil_mode))
        measured["channels"].append(int(pre_pool.shape[1]))
        measured["stage_sizes"].append(int(pre_pool.shape[-1]))
    top = calls[pools[-1]].output  # (1, C_top, h_top, w_top)
    conv_counts = [sum(isinstance(c.module, nn.Conv2d) for c in calls[a + 1:b]) for a, b in zip([-1, *pools], pools)]
    reason = _chain_refusal(calls, image, pools[-1])
    measured.update(top_size=int(top.shape[-1]), num_classes=int(output.shape[1]), decoder_reason=reason,
                    convs_per_stage=max(1, *conv_counts), decoder="none" if reason else "deconvnet")
    guards = tuple(calls[i].input._version != calls[i].input_version
                   or calls[i].output._version != calls[i].output_version for i in pools)
    return _Layout(measured, tuple(calls[i].name for i in pools), guards,
                   [] if reason else _stage_layers(calls, pools[-1]))


# ---- encode: a forward hook on each MaxPool2d, active only inside the calling thread's encode ----

@dataclass
class _Recording:
    pools: tuple[nn.Module, ...]  # the pooling module expected at each call, in order
    guards: tuple[bool, ...]
    pre_pool: list[torch.Tensor] = field(default_factory=list)
    whats: list[torch.Tensor] = field(default_factory=list)
    wheres: list[torch.Tensor] = field(default_factory=list)
    out_of_order: bool = False


_RECORDING: ContextVar[_Recording | None] = ContextVar("pooling_network_recording", default=None)


def _switch_hook(module: nn.MaxPool2d, inputs: tuple, output):
    """Record a pooling call's input, what and where; hand the net the same what, so its forward is unchanged."""
    recording = _RECORDING.get()
    if recording is None or not any(module is pool for pool in recording.pools):
        return None  # not inside encode (or another network's pool): leave the call alone
    stage = len(recording.whats)
    if stage >= len(recording.pools) or recording.pools[stage] is not module:
        recording.out_of_order = True
        return None
    pre_pool = inputs[0]  # (N, C, H, W)
    if module.return_indices:
        what, where = output
    else:
        what, where = F.max_pool2d(pre_pool, module.kernel_size, module.stride, module.padding, module.dilation,
                                   ceil_mode=module.ceil_mode, return_indices=True)  # (N, C, h, w) twice
    guard = recording.guards[stage]  # the net changes these in place later: keep copies of them as they are now
    recording.pre_pool.append(pre_pool.clone() if guard else pre_pool)
    recording.whats.append(what)
    recording.wheres.append(where)
    passed = what.clone() if guard else what
    return (passed, where) if module.return_indices else passed


class PoolingNetwork(nn.Module):
    """A classifier with nn.MaxPool2d layers, behind the SWWAE's API. Input: images in [0, 1],
    (N, in_channels, image_size, image_size), normalised inside with input_mean / input_std.

    `net` is the wrapped classifier (its state_dict is the weights); `forward(x)` returns its logits.
    """

    def __init__(self, net: nn.Module, *, in_channels: int, image_size: int, input_mean, input_std,
                 architecture: str = "custom"):
        super().__init__()
        if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
            raise NetworkError(f"input size {image_size} is outside what the explorer serves "
                               f"({MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} pixels a side)")
        input_mean, input_std = tuple(float(v) for v in input_mean), tuple(float(v) for v in input_std)
        if len(input_mean) != in_channels or len(input_std) != in_channels or min(input_std) <= 0:
            raise NetworkError(f"input mean and std need {in_channels} values each (std > 0), "
                               f"got {input_mean} and {input_std}")
        layout = _layout(net, in_channels, image_size)
        self.net = net
        self.config = NetworkConfig(in_channels=in_channels, image_size=image_size, input_mean=input_mean,
                                    input_std=input_std, architecture=architecture, **layout.measured)
        self._pool_names = layout.pool_names
        self._guards = layout.guards
        self._layers = layout.layers  # per stage, the layers the deconvnet undoes (empty when decoder is "none")
        self._traced_decoder = self.config.decoder
        self.fitted_decoder: nn.Module | None = None  # core.model.fitted.FittedDecoder, see attach_decoder
        for name in dict.fromkeys(layout.pool_names):  # a pool module called twice gets one hook
            pool = net.get_submodule(name)
            if _switch_hook not in pool._forward_hooks.values():  # wrapped twice: still one hook
                pool.register_forward_hook(_switch_hook)
        self.register_buffer("input_mean", torch.tensor(input_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(input_std).view(1, -1, 1, 1), persistent=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.config.in_channels, self.config.image_size, self.config.image_size)

    @property
    def stage_layers(self) -> list[list[DeconvLayer]]:
        """Per pooling layer, the layers between it and the previous one (forward order); [] when not a chain."""
        return self._layers

    def attach_decoder(self, decoder: nn.Module | None) -> None:
        """Make `decoder` (a core.model.fitted.FittedDecoder) the one `decode` uses: config.decoder becomes "fitted".
        None takes it off again (the deconvnet, or "none")."""
        self.fitted_decoder = decoder
        self.config.decoder = "fitted" if decoder is not None else self._traced_decoder

    def check_input(self, x: torch.Tensor, *, check_finite: bool = True) -> None:
        """Raise NetworkError unless x is a (N, C, H, W) float batch of the configured shape (and finite)."""
        c, h, w = self.input_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w) or not x.is_floating_point():
            raise NetworkError(f"expected float images of shape (N, {c}, {h}, {w}), got {tuple(x.shape)} ({x.dtype})")
        if check_finite and not torch.isfinite(x).all():
            raise NetworkError(f"input of shape {tuple(x.shape)} holds NaN or infinite values")

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std  # (N, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) in [0, 1] -> logits (N, num_classes); records nothing."""
        return self.net(self.normalise(x))

    def encode(self, x: torch.Tensor, *, check_finite: bool = True) -> Encoding:
        """x: (N, C, H, W) in [0, 1] -> Encoding with one stage per pooling call. Differentiable; thread-safe."""
        self.check_input(x, check_finite=check_finite)
        recording = _Recording(tuple(self.net.get_submodule(name) for name in self._pool_names), self._guards)
        token = _RECORDING.set(recording)
        try:
            logits = self.net(self.normalise(x))  # (N, num_classes); the pools' hooks fill `recording`
        finally:
            _RECORDING.reset(token)
        if recording.out_of_order or len(recording.whats) != len(self._pool_names):
            raise NetworkError(f"the network pooled {len(recording.whats)} times in an unexpected order on this "
                               f"input, not the {len(self._pool_names)} pooling calls it made when traced")
        return Encoding(whats=recording.whats, wheres=recording.wheres, pre_pool=recording.pre_pool, logits=logits)

    def decode(self, encoding: Encoding, *, pooling: str | None = None, from_stage: int | None = None) -> Decoding:
        """From the what of `from_stage` (default: the top) through the wheres of it and every stage below, down to
        the image: by the fitted decoder when one is attached (config.decoder "fitted": recon is an image in [0, 1],
        hiddens[l] reconstructs whats[l] for l < from_stage, as an SWWAE's), else by the deconvnet (`deconvnet`).
        `pooling` "hard" (default) unpools by the switches, "none" by nearest-neighbour upsampling (no where)."""
        if self.fitted_decoder is None:
            return self.deconvnet(encoding, pooling=pooling, from_stage=from_stage)
        top, mode = self._decode_range(encoding, pooling, from_stage)
        return self.fitted_decoder(encoding.whats, encoding.wheres, self._windows(), top=top, mode=mode)

    def deconvnet(self, encoding: Encoding, *, pooling: str | None = None, from_stage: int | None = None) -> Decoding:
        """The Zeiler-Fergus deconvnet (core.model.deconvnet) from the what of `from_stage` (default: the top)
        through the wheres of it and every stage below, down to the image, with the network's own filters.
        -> Decoding: recon = the image-space projection (N, C, H, W), in the normalised input's units (not an image
        in [0, 1]); hiddens = [] (a deconvnet reconstructs no what); unpooled = stages 0 .. from_stage.
        """
        if not self._layers:
            raise NetworkError(f"this network has no deconvnet: {self.config.decoder_reason}")
        top, mode = self._decode_range(encoding, pooling, from_stage)
        recon, unpooled = deconvnet(self.net, encoding.whats, encoding.wheres, self._windows(), self._layers, top,
                                    mode)
        return Decoding(recon=recon, hiddens=[], unpooled=unpooled)

    def _windows(self) -> list[PoolWindow]:
        cfg = self.config
        return [PoolWindow(k, s, p, (size, size)) for k, s, p, size in
                zip(cfg.pool_sizes, cfg.pool_strides, cfg.pool_paddings, cfg.stage_sizes)]

    def _decode_range(self, encoding: Encoding, pooling: str | None, from_stage: int | None) -> tuple[int, str]:
        """(the top stage, the unpooling mode) of a decode call, checked; NetworkError (one line) otherwise."""
        cfg = self.config
        mode = pooling or cfg.pooling
        if mode not in UNPOOLING_MODES:
            raise NetworkError(f"decoding unpools {' or '.join(UNPOOLING_MODES)}, not {mode!r}")
        stages = len(cfg.pool_sizes)
        if len(encoding.wheres) != stages or len(encoding.whats) != stages:
            raise NetworkError(f"encoding has {len(encoding.wheres)} stages, expected {stages}")
        top = stages - 1 if from_stage is None else from_stage
        if not 0 <= top < stages:
            raise NetworkError(f"from_stage {from_stage} does not exist; expected 0..{stages - 1}")
        return top, mode
