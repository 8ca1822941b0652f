"""The one module that knows the checkpoint format.

A checkpoint is a dict of plain types (nanoGPT style), so a model rebuilds from the file alone:

    {"format": "swwae", "format_version": 1, "model_config": {...}, "train_config": {...} | None,
     "data_config": {...} | None, "model_state": state_dict, "optimizer_state": state_dict | None,
     "step": int, "epoch": int, "metrics": {...}, "rng_state": {name: ByteTensor} | None}

`optimizer_state` and `rng_state` are optional (None in a weights-only file such as the shipped model); a
trainer resumes from them.

Loading uses ``torch.load(weights_only=True)``, so reading a file never runs code. Writing is atomic (temp file
in the same folder + ``os.replace``), so a crash at any moment leaves the previous file intact.
"""
from __future__ import annotations

import io
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from core.model.swwae import SWWAE, ModelConfig

__all__ = ["FORMAT", "FORMAT_VERSION", "CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint",
           "atomic_write_bytes"]

FORMAT = "swwae"
FORMAT_VERSION = 1
READABLE_FILE_MODE = 0o644
MAX_IMAGE_SIZE = 1024  # largest input side a loaded model may have: the explorer runs it on such images
MAX_PARAMETERS = 200_000_000  # largest model a file may ask this program to build


class CheckpointError(Exception):
    """A file that is not a loadable SWWAE checkpoint; the message is one line saying why."""


@dataclass
class Checkpoint:
    model: SWWAE  # rebuilt from model_config, weights loaded, in eval mode, on the CPU (or map_location)
    model_config: ModelConfig
    train_config: dict[str, Any] | None = None
    data_config: dict[str, Any] | None = None
    optimizer_state: dict[str, Any] | None = None
    step: int = 0
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    rng_state: dict[str, torch.Tensor] | None = None  # random generator states, for an exact resume

    @property
    def classifier_trained(self) -> bool:
        """False when the file says the model learned without labels (train_config mode 'unsupervised', or a
        classification weight lambda_nll of 0): its classifier head then keeps its random initial weights, so its
        class outputs mean nothing. True when the file does not say (no train_config)."""
        train = self.train_config or {}
        return train.get("mode") != "unsupervised" and train.get("lambda_nll", 1.0) != 0

    @property
    def dataset(self) -> str | None:
        """The name of the dataset the model was trained on (its data_config), None when the file does not say."""
        name = (self.data_config or {}).get("dataset")
        return name if isinstance(name, str) else None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, READABLE_FILE_MODE)  # mkstemp makes 0600; others (a dashboard, a reviewer) read these
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | os.PathLike,
    model: SWWAE,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    train_config: dict[str, Any] | None = None,
    data_config: dict[str, Any] | None = None,
    step: int = 0,
    epoch: int = 0,
    metrics: dict[str, Any] | None = None,
    rng_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Atomically write a checkpoint of `model` (unwrap DDP before calling) and, optionally, its optimizer.

    Leave `optimizer` out for a small weights-only file (about a third of the size with Adam).
    """
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": _plain(asdict(model.config)),
        "train_config": train_config,
        "data_config": data_config,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "epoch": int(epoch),
        "metrics": dict(metrics or {}),
        "rng_state": {k: v.detach().cpu() for k, v in rng_state.items()} if rng_state is not None else None,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _check_buildable(config: ModelConfig, state: Any, name: str) -> None:
    """Refuse, before anything is allocated, a config too large to build or whose weights the file lacks.

    The model is laid out on the meta device (no memory), so its tensor shapes can be compared with the file's.
    """
    if config.image_size > MAX_IMAGE_SIZE:
        raise CheckpointError(f"{name}: image_size {config.image_size} is over the {MAX_IMAGE_SIZE} this program "
                              "builds")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{name}: corrupt checkpoint (model_state is not a dict of tensors)")
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in SWWAE(config).state_dict().items()}
    parameters = sum(math.prod(shape) for shape in expected.values())
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(f"{name}: the stored architecture has {parameters:,} parameters, over the "
                              f"{MAX_PARAMETERS:,} this program builds")
    found = {key: tuple(value.shape) for key, value in state.items()}
    if found != expected:
        missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
        detail = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected
                  else f"{wrong[0]} is {found[wrong[0]]}, expected {expected[wrong[0]]}")
        raise CheckpointError(f"{name}: the weights do not match the stored architecture ({detail})")


def load_checkpoint(source: str | os.PathLike | bytes | BinaryIO, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint from a path, bytes or a binary file object and rebuild its model.

    Raises CheckpointError (one line) for an empty, truncated, corrupt, foreign, newer-format or
    wrong-architecture file. Never executes code from the file.
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "uploaded file"
    try:
        if isinstance(source, (str, os.PathLike)):
            if not Path(source).is_file():
                raise CheckpointError(f"{name}: no such file")
            if Path(source).stat().st_size == 0:
                raise CheckpointError(f"{name}: the file is empty")
        elif isinstance(source, (bytes, bytearray)):
            if not source:
                raise CheckpointError(f"{name}: the file is empty")
            source = io.BytesIO(source)
        payload = torch.load(source, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # weights_only refuses code; anything else means unreadable
        # Under weights_only every failure mentions it; only "Unsupported global" means the file names code to run.
        reason = ("it holds objects other than tensors and plain data (refused, not run)" if "Unsupported global" in
                  str(exc) else "it is not a readable PyTorch file (truncated or corrupt?)")
        raise CheckpointError(f"{name}: not a checkpoint: {reason}") from None

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{name}: not an SWWAE checkpoint (no '{FORMAT}' format marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{name}: checkpoint format version {version} is newer than this program's "
                              f"({FORMAT_VERSION}); update SWWAE Explorer")
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        _check_buildable(config, payload["model_state"], name)
        model = SWWAE(config)
        model.load_state_dict(payload["model_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{name}: the weights do not match the stored architecture ({first_line})") from None
    try:
        step, epoch, metrics = int(payload.get("step", 0)), int(payload.get("epoch", 0)), dict(payload.get("metrics") or {})
    except (TypeError, ValueError):
        raise CheckpointError(f"{name}: corrupt checkpoint (step, epoch or metrics of the wrong type)") from None
    for key in ("train_config", "data_config", "optimizer_state", "rng_state"):
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            raise CheckpointError(f"{name}: corrupt checkpoint ({key} is a {type(payload[key]).__name__}, not a "
                                  "dictionary)")
    model.to(map_location).eval()
    return Checkpoint(
        model=model,
        model_config=config,
        train_config=payload.get("train_config"),
        data_config=payload.get("data_config"),
        optimizer_state=payload.get("optimizer_state"),
        step=step,
        epoch=epoch,
        metrics=metrics,
        rng_state=payload.get("rng_state"),
    )
