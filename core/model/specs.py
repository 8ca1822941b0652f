"""Naming and opening a classifier that is not an SWWAE: `open_network(spec)` -> a `PoolingNetwork` to explore.

A spec is one of
- ``"torchvision:NAME"``: a classification architecture of torchvision.models (``vgg11_bn``, ``alexnet``, ...), with
  random weights, a ``.pth`` state dict (path or bytes; its classifier's width sets num_classes), or
  ``weights="DEFAULT"``: torchvision's ImageNet weights (downloaded once into torch's cache; offline, one line);
- ``"zoo:NAME"``: a network of the project's zoo (core.model.zoo), random weights unless `weights` is a state dict;
- a pooling-network file (path or bytes, core.model.network_file): architecture, weights, input and metrics, and
  the what-where decoder fitted to it when the file holds one (core.model.fitted; config.decoder is then "fitted");
- a ``.pt2`` file (path or bytes) of ``torch.export.save``: the graph rebuilt as layers (core.model.exported);
- ``"package.module:function"``: a factory in the user's own code, called with no arguments; it runs code, so only
  with ``allow_code=True`` (the command line), never for a name typed into the app.

Nothing here runs code from a file: state dicts and network files are read with ``torch.load(weights_only=True)``,
``.pt2`` archives are screened before ``torch.export.load``. Every refusal is one `NetworkError` line.

Input normalisation (images in [0, 1], normalised inside the PoolingNetwork): `input_mean` / `input_std` when given;
else the file's own (a network file; a .pt2's ``pooling-network.json``), torchvision's ImageNet statistics for
torchvision and any other 3-channel net, and mean 0 / std 1 (the net reads pixels in [0, 1]) for other channels.
"""
from __future__ import annotations

import importlib
import inspect
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from core.model.checkpoint import MAX_PARAMETERS
from core.model.exported import open_exported, is_pt2_archive
from core.model.fitted import attach_fitted_decoder
from core.model.network import MAX_IMAGE_SIZE, NetworkError, PoolingNetwork
from core.model.network_file import NetworkFileError, read_network_file

__all__ = ["NetworkError", "LoadedNetwork", "open_network", "torchvision_names", "IMAGENET_MEAN", "IMAGENET_STD",
           "SPEC_FORMS"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's transforms
TORCHVISION_IMAGE_SIZE, MIN_TORCHVISION_IMAGE_SIZE = 224, 32
FACTORY_IMAGE_SIZE = 224  # a factory's input side unless image_size says otherwise
SPEC_FORMS = ("torchvision:NAME, zoo:NAME, a pooling-network file, a .pt2 file (torch.export.save), or "
              "package.module:function (your own code, command line only)")
_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_FILE_SUFFIXES = (".pt", ".pth", ".pt2", ".ckpt")
_BUILDER_ARGS_REFUSED = ("weights", "progress", "weights_backbone")  # a network file may not ask for a download

Source = str | os.PathLike | bytes


@dataclass
class LoadedNetwork:
    network: PoolingNetwork  # eval mode, on the CPU
    data_config: dict[str, Any] | None = None
    train_config: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    label: str = ""  # one line for people: "torchvision:vgg11_bn (random weights)"
    epoch: int = 0
    class_names: list[str] | None = None  # when the source names its classes (torchvision's ImageNet weights)


def open_network(spec: Source, *, weights: Source | None = None, image_size: int | None = None,
                 allow_code: bool = False, input_mean: Sequence[float] | None = None,
                 input_std: Sequence[float] | None = None) -> LoadedNetwork:
    """Open `spec` (see the module docstring) as a PoolingNetwork; NetworkError (one line) when it cannot be."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)):
        raise NetworkError(f"image_size must be a whole number of pixels, got {image_size!r}")
    norm = (input_mean, input_std)
    if isinstance(spec, str) and spec.startswith("torchvision:"):
        return _open_torchvision(spec[len("torchvision:"):], weights, image_size, norm)
    if isinstance(spec, str) and spec.startswith("zoo:"):
        return _open_zoo(spec[len("zoo:"):], weights, image_size, norm)
    if isinstance(spec, (bytes, bytearray, os.PathLike)) or (isinstance(spec, str) and _looks_like_file(spec)):
        if weights is not None:
            raise NetworkError("weights= applies to torchvision:, zoo: and factory specs; a file carries its own")
        return _open_file(spec, image_size, norm)
    if isinstance(spec, str) and _FACTORY.fullmatch(spec):
        return _open_factory(spec, weights, image_size, norm, allow_code)
    raise NetworkError(f"cannot open {str(spec)[:80]!r}: expected {SPEC_FORMS}")


def _looks_like_file(spec: str) -> bool:
    return Path(spec).is_file() or spec.endswith(_FILE_SUFFIXES) or "/" in spec or os.sep in spec


# ---- wrapping: every route ends here ----

def _default_norm(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.0,) * channels, (1.0,) * channels)


def _wrap(net: nn.Module, label: str, *, architecture: str, in_channels: int, image_size: int, norm: tuple,
          fallback: tuple | None = None, **info) -> LoadedNetwork:
    """The PoolingNetwork of `net` (eval mode); its refusals prefixed with the label."""
    mean, std = (fallback or _default_norm(in_channels))
    mean, std = norm[0] if norm[0] is not None else mean, norm[1] if norm[1] is not None else std
    try:
        network = PoolingNetwork(net.eval(), in_channels=in_channels, image_size=image_size, input_mean=mean,
                                 input_std=std, architecture=architecture)
    except (TypeError, ValueError) as exc:  # NetworkError is a ValueError
        raise NetworkError(f"{label}: {(str(exc).strip().splitlines() or ['cannot be wrapped'])[0]}") from None
    return LoadedNetwork(network=network.eval(), label=label, **info)


# ---- state dicts: read safely, checked against the architecture before a byte is allocated ----

def _read_state_dict(source: Source) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, its name) from a path or bytes, torch.load(weights_only=True); a {"state_dict": ...} wrapper
    and DistributedDataParallel's "module." prefix are taken off."""
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "uploaded weights"
    try:
        if isinstance(source, (str, os.PathLike)):
            if not Path(source).is_file():
                raise NetworkError(f"{name}: no such file")
            source = Path(source).read_bytes()
        if not source:
            raise NetworkError(f"{name}: the file is empty")
        state = torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
    except NetworkError:
        raise
    except Exception as exc:  # weights_only refuses code; anything else means unreadable
        reason = ("it holds objects other than tensors and plain data (refused, not run)"
                  if "Unsupported global" in str(exc)  # a pickled function or class; garbage is an "operand"
                  else "it is not a readable PyTorch file (truncated or corrupt?)")
        raise NetworkError(f"{name}: not a state dict: {reason}") from None
    for key in ("state_dict", "model_state_dict", "model_state", "model", "state"):
        inner = state.get(key) if isinstance(state, dict) else None
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            state = inner
            break
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise NetworkError(f"{name}: not a state dict (a dictionary of named tensors)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, name


def _check_fits(expected: dict[str, tuple], state: dict[str, torch.Tensor] | None, label: str) -> None:
    """Refuse a net over MAX_PARAMETERS, or a state dict that does not fit it (the first key that differs)."""
    parameters = sum(math.prod(shape) for shape in expected.values())
    if parameters > MAX_PARAMETERS:
        raise NetworkError(f"{label}: {parameters:,} parameters, over the {MAX_PARAMETERS:,} this program builds")
    if state is None:
        return
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = [k for k in expected if k in found and found[k] != expected[k]]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected
                  else f"{wrong[0]} is {found[wrong[0]]}, expected {expected[wrong[0]]}")
        raise NetworkError(f"{label}: the weights do not fit the architecture ({detail})")


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"


def _build_checked(factory: Callable[..., nn.Module], kwargs: dict, state: dict | None, label: str, *,
                   infer: Sequence[str] = ("num_classes",)) -> nn.Module:
    """factory(**kwargs) with `state` loaded (strict). The net is first laid out on the meta device (no memory), so
    one that is too large or that `state` does not fit is refused before it is allocated; the `infer` arguments
    the caller left out are read off `state` (num_classes: the classifier's rows; in_channels: the first conv's)."""
    try:
        layout = _lay_out(factory, kwargs)
        if state is not None:
            keys = {"num_classes": _module_key(layout, last=True), "in_channels": _module_key(layout, last=False)}
            found = {arg: int(state[keys[arg]].shape[0 if arg == "num_classes" else 1]) for arg in infer
                     if arg not in kwargs and keys[arg] in state and state[keys[arg]].dim() > 1}
            if found:
                kwargs = {**kwargs, **found}
                layout = _lay_out(factory, kwargs)
    except (TypeError, ValueError, RuntimeError, AssertionError, NotImplementedError) as exc:
        raise NetworkError(f"{label}: cannot be built ({_first_line(exc)})") from None
    _check_fits({k: tuple(v.shape) for k, v in layout.state_dict().items()}, state, label)
    net = factory(**kwargs)
    if state is not None:
        net.load_state_dict(state, strict=True)
    return net.eval()


def _lay_out(factory: Callable[..., nn.Module], kwargs: dict) -> nn.Module:
    """factory(**kwargs) on the meta device (shapes, no memory); for real when its __init__ reads tensor values
    (RegNet's does)."""
    try:
        with torch.device("meta"):
            return factory(**kwargs)
    except NotImplementedError:  # "Cannot copy out of meta tensor"
        return factory(**kwargs)


def _module_key(net: nn.Module, *, last: bool) -> str | None:
    """The weight of the classifier (last=True: the last Linear, else the last Conv2d, e.g. SqueezeNet's head) or of
    the first layer (last=False: the first Conv2d)."""
    for kind in ((nn.Linear, nn.Conv2d) if last else (nn.Conv2d,)):
        names = [name for name, module in net.named_modules() if isinstance(module, kind)]
        if names:
            return f"{names[-1] if last else names[0]}.weight"
    return None


def _in_channels(net: nn.Module) -> int:
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


# ---- the routes ----

def torchvision_names() -> list[str]:
    """The classification architectures of torchvision.models (no detection, segmentation or video models)."""
    import torchvision
    return torchvision.models.list_models(module=torchvision.models)


_PRETRAINED_ARGS = {"googlenet": {"transform_input": True}, "inception_v3": {"transform_input": True}}


def _torchvision_builder(name: str) -> Callable[..., nn.Module]:
    import torchvision
    return lambda **kwargs: torchvision.models.get_model(name, weights=None, **kwargs)


def _open_torchvision(name: str, weights: Source | None, image_size: int | None, norm: tuple) -> LoadedNetwork:
    spec = f"torchvision:{name}"
    if name not in torchvision_names():
        raise NetworkError(f"{spec}: not a torchvision classification model (e.g. vgg11_bn, alexnet, resnet18)")
    kwargs, class_names, fallback, size = {}, None, None, image_size or TORCHVISION_IMAGE_SIZE
    if isinstance(weights, str) and weights == "DEFAULT":
        state, class_names, crop, fallback = _imagenet_weights(name)
        kwargs = {**_PRETRAINED_ARGS.get(name, {}), "num_classes": len(class_names)}
        size, how = image_size or crop, "ImageNet weights"
    elif weights is None:
        state, how = None, "random weights"
    else:
        state, file = _read_state_dict(weights)
        how = f"weights: {file}"
    if not MIN_TORCHVISION_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise NetworkError(f"{spec}: image_size {size} is outside {MIN_TORCHVISION_IMAGE_SIZE}..{MAX_IMAGE_SIZE}")
    net = _build_checked(_torchvision_builder(name), kwargs, state, spec)
    return _wrap(net, f"{spec} ({how})", architecture=spec, in_channels=3, image_size=size, norm=norm,
                 fallback=fallback, class_names=class_names)


def _imagenet_weights(name: str) -> tuple[dict, list[str], int, tuple]:
    """torchvision's DEFAULT weights of `name`: (state dict, class names, crop size, (mean, std)). They download
    once into torch's cache (torch.hub), read with weights_only=True; offline and not cached: one line."""
    import torchvision
    weights = torchvision.models.get_model_weights(name).DEFAULT
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except OSError:  # urllib's URLError included: no network, DNS, refused
        raise NetworkError(f"torchvision:{name}: its ImageNet weights need a download from download.pytorch.org; "
                           "no connection") from None
    except Exception as exc:
        raise NetworkError(f"torchvision:{name}: its ImageNet weights could not be read ({_first_line(exc)})") from None
    transforms = weights.transforms()
    return (state, list(weights.meta["categories"]), int(transforms.crop_size[0]),
            (tuple(transforms.mean), tuple(transforms.std)))


def _open_zoo(name: str, weights: Source | None, image_size: int | None, norm: tuple) -> LoadedNetwork:
    from core.model import zoo
    spec = f"zoo:{name}"
    if name not in zoo.ARCHITECTURES:
        raise NetworkError(f"{spec}: not in the zoo; expected one of {', '.join(sorted(zoo.ARCHITECTURES))}")
    state, how = (None, "random weights") if weights is None else _read_state_dict(weights)
    how = how if weights is None else f"weights: {how}"
    kwargs = {} if image_size is None else {"image_size": image_size}
    net = _build_checked(lambda **kw: zoo.build(name, **kw), kwargs, state, spec,
                         infer=("num_classes", "in_channels"))
    default_size = inspect.signature(zoo.ARCHITECTURES[name]).parameters.get("image_size")
    size = image_size or (default_size.default if default_size is not None else TORCHVISION_IMAGE_SIZE)
    return _wrap(net, f"{spec} ({how})", architecture=spec, in_channels=_in_channels(net), image_size=size,
                 norm=norm)


def _open_factory(spec: str, weights: Source | None, image_size: int | None, norm: tuple,
                  allow_code: bool) -> LoadedNetwork:
    """Import package.module, call function() (user code: only when allow_code), load `weights` (strict)."""
    if not allow_code:
        raise NetworkError(f"{spec}: a Python factory runs code; name it on the command line (--network {spec})")
    module_name, function_name = spec.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
        net = factory()
    except Exception as exc:  # user code: anything it raises is a reason to refuse, said in one line
        raise NetworkError(f"{spec}: {_first_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise NetworkError(f"{spec}: the factory returned a {type(net).__name__}, not an nn.Module")
    state, how = (None, "your code") if weights is None else _read_state_dict(weights)
    how = how if weights is None else f"your code, weights: {how}"
    _check_fits({k: tuple(v.shape) for k, v in net.state_dict().items()}, state, spec)
    if state is not None:
        net.load_state_dict(state, strict=True)
    return _wrap(net, f"{spec} ({how})", architecture=spec, in_channels=_in_channels(net),
                 image_size=image_size or FACTORY_IMAGE_SIZE, norm=norm)


def _open_file(source: Source, image_size: int | None, norm: tuple) -> LoadedNetwork:
    """A pooling-network file or a .pt2, told apart by the zip's records (else by the suffix)."""
    is_path = isinstance(source, (str, os.PathLike))
    name = Path(source).name if is_path else "uploaded file"
    if is_path and not Path(source).is_file():
        raise NetworkError(f"{source}: no such file")
    data = Path(source).read_bytes() if is_path else bytes(source)
    if not data:
        raise NetworkError(f"{name}: the file is empty")
    if is_pt2_archive(data) or (is_path and str(source).endswith(".pt2")):
        return _open_pt2(data, name, image_size, norm)
    try:
        file = read_network_file(data)
    except NetworkFileError as exc:
        raise NetworkError(str(exc).replace("uploaded file", name, 1)) from None
    kind, _, arch = file.architecture.partition(":")
    label = f"{name} ({file.architecture})"
    refused = [key for key in file.architecture_args if key in _BUILDER_ARGS_REFUSED]
    if refused or kind not in ("zoo", "torchvision"):
        raise NetworkError(f"{label}: cannot build it (architecture must be zoo:NAME or torchvision:NAME"
                           f"{', without ' + refused[0] if refused else ''})")
    if kind == "torchvision" and arch not in torchvision_names():
        raise NetworkError(f"{label}: not a torchvision classification model")
    from core.model import zoo
    factory = _torchvision_builder(arch) if kind == "torchvision" else (lambda **kw: zoo.build(arch, **kw))
    net = _build_checked(factory, dict(file.architecture_args), file.state, label, infer=())
    loaded = _wrap(net, label, architecture=file.architecture, in_channels=file.input["channels"],
                   image_size=image_size or file.input["size"], norm=norm,
                   fallback=(file.input["mean"], file.input["std"]), data_config=file.data_config,
                   train_config=file.train_config, metrics=file.metrics, step=file.step, epoch=file.epoch)
    if file.decoder_config is not None:
        attach_fitted_decoder(loaded.network, file.decoder_config, file.decoder_state, label)
        loaded.network.eval()
    return loaded


def _open_pt2(data: bytes, name: str, image_size: int | None, norm: tuple) -> LoadedNetwork:
    exported = open_exported(data, name)
    given = exported.extra.get("input") if isinstance(exported.extra.get("input"), dict) else {}
    fallback = (given["mean"], given["std"]) if "mean" in given and "std" in given else None
    data_config = exported.extra.get("data_config")
    return _wrap(exported.net, f"{name} (exported program)", architecture=name, in_channels=exported.in_channels,
                 image_size=image_size or exported.image_size, norm=norm, fallback=fallback,
                 data_config=data_config if isinstance(data_config, dict) else None)
