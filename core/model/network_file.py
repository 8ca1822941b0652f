"""The one module that knows the "pooling-network" file format: a plain (non-SWWAE) classifier with its weights.

A file is a torch.save of a dict of plain types (nanoGPT style), so the network rebuilds from the file alone:

    {"format": "pooling-network", "format_version": 1,
     "architecture": "zoo:small_vgg" | "torchvision:vgg11_bn",     # what to build (core.model.specs builds it)
     "architecture_args": {"num_classes": 10, "in_channels": 1, ...},  # keyword arguments of its factory
     "input": {"channels": 1, "size": 28, "mean": [0.286], "std": [0.353]},  # what the network reads: images in
                                                                   # [0, 1], normalised with mean/std per channel
     "data_config": {"dataset": "fashion-mnist", ...} | None, "train_config": {...} | None,
     "state": state_dict, "step": int, "epoch": int, "metrics": {"val_acc": ..., "test_acc": ..., ...},
     "decoder_config": {...} | None, "decoder_state": state_dict | None}  # optional, both or neither

"decoder_config" and "decoder_state" hold a what-where decoder fitted to the frozen network (core.model.fitted: its
config as a plain dict, its weights as a state dict); files without them (every file written before they existed)
read as before, with no decoder. The network's own weights are always in "state", so a file opens standalone.

Reading uses ``torch.load(weights_only=True)``, so a file never runs code; writing is atomic
(core.model.checkpoint.atomic_write_bytes). Every bad file raises NetworkFileError (a NetworkError) with one line
saying why. This module neither builds the network nor checks its weights against the architecture: core.model.specs
does both.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch.nn as nn

from core.model.checkpoint import FORMAT as SWWAE_FORMAT
from core.model.checkpoint import MAX_IMAGE_SIZE, MAX_PARAMETERS, atomic_write_bytes
from core.model.network import NetworkError

__all__ = ["NETWORK_FORMAT", "NETWORK_FORMAT_VERSION", "NetworkFileError", "NetworkFile", "save_network_file",
           "read_network_file"]

NETWORK_FORMAT = "pooling-network"
NETWORK_FORMAT_VERSION = 1
# what torch's weights-only unpickler says when a file names a function or class to call (not garbage bytes)
_CODE_MARKERS = ("GLOBAL", "allowlist", "reduce")
MAX_CHANNELS = 64  # input channels a file may declare (1 grayscale, 3 RGB; more is not an image)


class NetworkFileError(NetworkError):
    """A file that is not a readable pooling-network file; the message is one line saying why. A NetworkError (and
    so a ValueError): whoever catches those catches this."""


@dataclass
class NetworkFile:
    """The contents of a pooling-network file, checked for types; the weights are not yet in any network."""

    architecture: str
    architecture_args: dict[str, Any]
    input: dict[str, Any]  # {"channels": int, "size": int, "mean": [float] * channels, "std": [float] * channels}
    state: dict[str, torch.Tensor]
    data_config: dict[str, Any] | None = None
    train_config: dict[str, Any] | None = None
    step: int = 0
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = NETWORK_FORMAT_VERSION
    decoder_config: dict[str, Any] | None = None  # a fitted what-where decoder (core.model.fitted), when one is stored
    decoder_state: dict[str, torch.Tensor] | None = None

    @property
    def dataset(self) -> str | None:
        """The dataset the network was trained on (its data_config), None when the file does not say."""
        name = (self.data_config or {}).get("dataset")
        return name if isinstance(name, str) else None


def save_network_file(path: str | os.PathLike, net: nn.Module, *, architecture: str,
                      architecture_args: dict[str, Any], input: dict[str, Any],
                      data_config: dict[str, Any] | None = None, train_config: dict[str, Any] | None = None,
                      step: int = 0, epoch: int = 0, metrics: dict[str, Any] | None = None,
                      decoder_config: dict[str, Any] | None = None,
                      decoder_state: dict[str, torch.Tensor] | None = None) -> None:
    """Atomically write `net`'s weights (unwrap DDP / compile first) with what rebuilds it, and a fitted decoder's
    config and weights when given (both or neither). The payload passes the same checks as a read, so a file this
    writes always reads back (NetworkFileError otherwise, nothing written)."""
    payload = {
        "format": NETWORK_FORMAT,
        "format_version": NETWORK_FORMAT_VERSION,
        "architecture": architecture,
        "architecture_args": _plain(dict(architecture_args)),
        "input": _plain(dict(input)),
        "data_config": _plain(dict(data_config)) if data_config is not None else None,
        "train_config": _plain(dict(train_config)) if train_config is not None else None,
        "state": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},  # plain layout on disk
        "step": step,
        "epoch": epoch,
        "metrics": _plain(dict(metrics or {})),
    }
    if decoder_config is not None or decoder_state is not None:
        payload["decoder_config"] = _plain(dict(decoder_config)) if decoder_config is not None else None
        payload["decoder_state"] = ({k: v.detach().cpu().contiguous() for k, v in decoder_state.items()}
                                    if decoder_state is not None else None)
    _check_payload(payload, str(path))
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (what JSON and torch.load(weights_only=True) give back)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_network_file(source: str | os.PathLike | bytes | BinaryIO) -> NetworkFile:
    """Read a pooling-network file from a path, bytes or a binary file object, never running code from it.

    Raises NetworkFileError (one line) for a missing, empty, truncated, corrupt, code-holding, foreign (an SWWAE
    checkpoint included) or newer-version file, or one whose fields have the wrong types.
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "uploaded file"
    payload = _load(source, name)
    if isinstance(payload, dict) and payload.get("format") == SWWAE_FORMAT:
        raise NetworkFileError(f"{name}: this is an SWWAE checkpoint, not a pooling-network file; open it as an "
                               "SWWAE model (core.model.load_checkpoint)")
    if not isinstance(payload, dict) or payload.get("format") != NETWORK_FORMAT:
        raise NetworkFileError(f"{name}: not a pooling-network file (no '{NETWORK_FORMAT}' format marker)")
    _check_payload(payload, name)
    return NetworkFile(
        architecture=payload["architecture"], architecture_args=payload["architecture_args"],
        input=payload["input"], state=dict(payload["state"]), data_config=payload.get("data_config"),
        train_config=payload.get("train_config"), step=payload.get("step", 0), epoch=payload.get("epoch", 0),
        metrics=dict(payload.get("metrics") or {}), format_version=payload["format_version"],
        decoder_config=payload.get("decoder_config"),
        decoder_state=dict(payload["decoder_state"]) if payload.get("decoder_state") is not None else None,
    )


def _load(source: str | os.PathLike | bytes | BinaryIO, name: str) -> Any:
    """torch.load(weights_only=True) of the source, every failure as one NetworkFileError line."""
    try:
        if isinstance(source, (str, os.PathLike)):
            if not Path(source).is_file():
                raise NetworkFileError(f"{name}: no such file")
            if Path(source).stat().st_size == 0:
                raise NetworkFileError(f"{name}: the file is empty")
        elif isinstance(source, (bytes, bytearray)):
            if not source:
                raise NetworkFileError(f"{name}: the file is empty")
            source = io.BytesIO(source)
        return torch.load(source, map_location="cpu", weights_only=True)
    except NetworkFileError:
        raise
    except Exception as exc:  # weights_only refuses code; anything else means unreadable
        holds_code = any(marker in str(exc) for marker in _CODE_MARKERS)
        reason = ("it holds objects other than tensors and plain data (refused, not run)" if holds_code
                  else "it is not a readable PyTorch file (truncated or corrupt?)")
        raise NetworkFileError(f"{name}: not a pooling-network file: {reason}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_payload(payload: dict[str, Any], name: str) -> None:
    """One NetworkFileError line for the first field that is missing or of the wrong type."""
    version = payload.get("format_version")
    if not _is_int(version) or version < 1:
        raise NetworkFileError(f"{name}: corrupt pooling-network file (format_version {version!r})")
    if version > NETWORK_FORMAT_VERSION:
        raise NetworkFileError(f"{name}: pooling-network format version {version} is newer than this program's "
                               f"({NETWORK_FORMAT_VERSION}); update SWWAE Explorer")
    architecture = payload.get("architecture")
    if not isinstance(architecture, str) or not architecture.strip() or "\n" in architecture:
        raise NetworkFileError(f"{name}: corrupt pooling-network file (architecture is not a one-line name)")
    for key, optional in (("architecture_args", False), ("input", False), ("data_config", True),
                          ("train_config", True), ("metrics", True)):
        value = payload.get(key)
        if not (isinstance(value, dict) or (optional and value is None)):
            raise NetworkFileError(f"{name}: corrupt pooling-network file ({key} is a {type(value).__name__}, not a "
                                   "dictionary)")
        if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
            raise NetworkFileError(f"{name}: corrupt pooling-network file ({key} has a key that is not a string)")
    for key in ("step", "epoch"):
        if not _is_int(payload.get(key, 0)) or payload.get(key, 0) < 0:
            raise NetworkFileError(f"{name}: corrupt pooling-network file ({key} is not a count)")
    _check_input(payload["input"], name)
    _check_state(payload.get("state"), name)
    _check_decoder(payload, name)


def _check_input(spec: dict[str, Any], name: str) -> None:
    """channels and size positive ints in range; mean and std one finite number per channel, std > 0."""
    channels, size = spec.get("channels"), spec.get("size")
    if not _is_int(channels) or not 1 <= channels <= MAX_CHANNELS:
        raise NetworkFileError(f"{name}: corrupt pooling-network file (input channels {channels!r})")
    if not _is_int(size) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise NetworkFileError(f"{name}: input size {size!r} is not an image side this program serves "
                               f"(1..{MAX_IMAGE_SIZE})")
    for key in ("mean", "std"):
        values = spec.get(key)
        if (not isinstance(values, list) or len(values) != channels
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in values)):
            raise NetworkFileError(f"{name}: corrupt pooling-network file (input {key} is not {channels} finite "
                                   "number(s))")
    if not all(v > 0 for v in spec["std"]):
        raise NetworkFileError(f"{name}: corrupt pooling-network file (input std must be > 0)")


def _check_decoder(payload: dict[str, Any], name: str) -> None:
    """decoder_config and decoder_state: both absent (or None), or a dict of plain fields and a state dict."""
    config, state = payload.get("decoder_config"), payload.get("decoder_state")
    if config is None and state is None:
        return
    if config is None or state is None:
        missing = "decoder_config" if config is None else "decoder_state"
        raise NetworkFileError(f"{name}: corrupt pooling-network file (a decoder without its {missing})")
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise NetworkFileError(f"{name}: corrupt pooling-network file (decoder_config is not a dictionary)")
    _check_state(state, name, key="decoder_state", extra=sum(v.numel() for v in payload["state"].values()))


def _check_state(state: Any, name: str, *, key: str = "state", extra: int = 0) -> None:
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise NetworkFileError(f"{name}: corrupt pooling-network file ({key} is not a dict of named tensors)")
    parameters = extra + sum(v.numel() for v in state.values())
    if parameters > MAX_PARAMETERS:
        raise NetworkFileError(f"{name}: the network has {parameters:,} values, over the {MAX_PARAMETERS:,} this "
                               "program loads")
