"""Fit a what-where decoder (core.model.fitted) to a frozen classifier, and write both into one pooling-network file:

    python -m core.train --encoder checkpoints/fashion_vgg.pt --freeze-encoder --dataset fashion-mnist --epochs 3 \
        --export checkpoints/fashion_vgg_decoder.pt

The encoder is a pooling-network file (core.model.network_file; `--network ... --export` writes one). It is frozen:
every parameter has requires_grad False, the whole network stays in eval mode (its batch norm uses and keeps its
running statistics, its dropout is off), it encodes under no_grad, and the optimizer holds the decoder's parameters
only, so every encoder tensor leaves the fit bit-identical. The decoder is trained with the SWWAE's loss (Zhao et
al. 2015, eq. 1, core.model.losses.swwae_loss) without its classification term: L2rec (the image) + lambda_M * the
sum of L2M (each decoder hidden against the encoder's what of the pooling layer below), by Adam (TrainConfig's
optimizer, lr, warm-up and cosine schedule) on the trainer's data splits and batches, with its shift / flip
augmentation when asked. Each epoch ends with the validation reconstruction MSE (`reconstruction_mse`, the same
number the SWWAE's evaluation calls 'rec'); the best decoder so far is written (atomically) with the encoder's own
weights, input, configs and metrics, plus the fit's record under metrics["decoder"].
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from core.data import (
    DataConfig, DeviceBatches, StreamBatches, as_float_images, fits_in_memory, materialize, open_split, random_flip,
    random_shift,
)
from core.model import UNLABELED, swwae_loss
from core.model.fitted import FittedDecoder, decoder_fields, plan_decoder
from core.model.network import NetworkError, PoolingNetwork
from core.model.network_file import NetworkFile, NetworkFileError, read_network_file, save_network_file
from core.model.specs import open_network
from core.training.config import TrainConfig
from core.training.devices import resolve_device
from core.training.optim import build_optimizer
from core.training.schedule import learning_rate

__all__ = ["FitResult", "fit_decoder", "open_encoder", "freeze", "reconstruction_mse"]


@dataclass
class FitResult:
    state: str  # finished | stopped | failed
    step: int
    epoch: int
    message: str
    network: PoolingNetwork  # the frozen encoder with its best-on-validation decoder attached (config.decoder "fitted")
    best_eval: dict[str, Any] = field(default_factory=dict)  # {"epoch", "step", "val_mse", "val_mid", "train_loss"}
    path: str | None = None  # the pooling-network file written, None when none was


def open_encoder(spec: str | os.PathLike) -> tuple[NetworkFile, PoolingNetwork]:
    """The pooling-network file `spec` and its network (any decoder it held taken off): NetworkError (one line) for
    anything else, since the file this fit writes must rebuild the encoder on its own."""
    try:
        file = read_network_file(spec)
    except NetworkFileError as exc:
        raise NetworkError(f"--encoder takes a pooling-network file (python -m core.train --network zoo:NAME "
                           f"--export FILE writes one): {str(exc).splitlines()[0]}") from None
    network = open_network(spec).network
    network.attach_decoder(None)
    return file, network


def freeze(network: PoolingNetwork) -> None:
    """Fix every weight and statistic of the network: no gradients, eval mode (batch norm, dropout)."""
    network.net.eval()
    for param in network.net.parameters():
        param.requires_grad_(False)


@torch.no_grad()
def reconstruction_mse(model: nn.Module, batches) -> float:
    """Mean squared error per pixel of decode(encode(x)).recon against x over `batches.in_order()`, in eval mode:
    the SWWAE loss's L2rec term ('rec'), for an SWWAE or a PoolingNetwork with a fitted decoder alike."""
    was_training = model.training
    model.eval()
    total, pixels = 0.0, 0
    try:
        for images, _ in batches.in_order():
            images = as_float_images(images)  # (B, C, H, W) in [0, 1]
            recon = model.decode(model.encode(images, check_finite=False)).recon  # (B, C, H, W)
            total += float((recon.float() - images).square().sum())
            pixels += images.numel()
    finally:
        model.train(was_training)
    return total / pixels if pixels else math.nan


def _batches(data: DataConfig, split: str, *, file: NetworkFile, batch_size: int, seed: int,
             device: torch.device):
    """The split at the encoder's input shape, held on the device (DeviceBatches) or streamed (StreamBatches)."""
    subset = open_split(data, split, channels=file.input["channels"], image_size=file.input["size"])
    if split == "train" and len(subset) < batch_size:
        raise ValueError(f"only {len(subset)} training images, fewer than batch_size {batch_size}")
    common = dict(batch_size=batch_size, seed=seed, device=device)
    if fits_in_memory(subset, max_memory_mb=data.max_memory_mb):
        return DeviceBatches(materialize(subset, keep_bytes=True), subset.labels, **common)
    return StreamBatches(subset, workers=data.workers, **common)


@dataclass
class _Setup:
    file: NetworkFile
    network: PoolingNetwork  # frozen, with `decoder` attached
    decoder: FittedDecoder
    optimizer: torch.optim.Optimizer
    train: Any  # DeviceBatches | StreamBatches
    val: Any
    device: torch.device
    total_steps: int
    augment: torch.Generator


def _set_up(encoder: str | os.PathLike, tc: TrainConfig, data: DataConfig) -> _Setup:
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    file, network = open_encoder(encoder)
    if 2 * data.shift >= file.input["size"]:
        raise ValueError(f"shift {data.shift} must be less than half the image size ({file.input['size']})")
    decoder = FittedDecoder(plan_decoder(network))  # NetworkError (one line) for what it cannot mirror
    freeze(network)
    network.to(device)
    network.attach_decoder(decoder.to(device).train())
    train = _batches(data, "train", file=file, batch_size=tc.batch_size, seed=tc.seed, device=device)
    val = _batches(data, "val", file=file, batch_size=tc.eval_batch_size, seed=tc.seed, device=device)
    steps = train.steps_per_epoch * tc.epochs
    return _Setup(file=file, network=network, decoder=decoder, optimizer=build_optimizer(decoder, tc), train=train,
                  val=val, device=device, total_steps=min(steps, tc.max_steps) if tc.max_steps else steps,
                  augment=torch.Generator(device=device).manual_seed(tc.seed))


def _fit_epoch(setup: _Setup, tc: TrainConfig, data: DataConfig, epoch: int, step: int,
               progress_bar) -> tuple[int, dict[str, float]]:
    """One pass over the training images (or up to total_steps): (the step reached, {"train_loss", "train_mse"})."""
    network, decoder, optimizer = setup.network, setup.decoder, setup.optimizer
    decoder.train()  # the encoder stays in eval mode (freeze)
    sums = torch.zeros(2, device=setup.device)  # total loss, rec: each summed over the steps
    steps = 0
    for images, _ in setup.train.epoch(epoch):
        if step >= setup.total_steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config=tc, total_steps=setup.total_steps)
        images = random_shift(as_float_images(images), data.shift, setup.augment)  # (B, C, H, W)
        if data.flip:
            images = random_flip(images, setup.augment)
        with torch.no_grad():
            encoding = network.encode(images, check_finite=False)  # the frozen encoder: whats, wheres
        decoding = network.decode(encoding)  # through the fitted decoder
        unlabeled = torch.full((len(images),), UNLABELED, device=images.device)
        terms = swwae_loss(images, unlabeled, encoding, decoding, lambda_nll=0.0, lambda_rec=tc.lambda_rec,
                           lambda_mid=tc.lambda_mid)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if tc.grad_clip:
            nn.utils.clip_grad_norm_(decoder.parameters(), tc.grad_clip)
        optimizer.step()
        sums += torch.stack([terms["total"].detach(), terms["rec"].detach()])
        steps += 1
        step += 1
        if progress_bar is not None:
            progress_bar.update(1)
            progress_bar.set_postfix(loss=f"{float(terms['total']):.4f}", epoch=epoch + 1)
    loss, rec = (sums / max(steps, 1)).tolist()
    return step, {"train_loss": loss, "train_mse": rec}


def fit_decoder(encoder: str | os.PathLike, train_config: TrainConfig, data_config: DataConfig, *,
                export_path: str | os.PathLike | None = None, progress: bool = False,
                on_epoch: Callable[[dict[str, Any]], None] | None = None) -> FitResult:
    """Fit a decoder to the frozen encoder in the pooling-network file `encoder` (see the module docstring).

    Each epoch ends with a record {"epoch", "step", "train_loss", "train_mse", "val_mse", "best", "lr", "seconds"}
    passed to `on_epoch`; when val_mse is the lowest so far the decoder is kept and the file written to
    `export_path`. Ctrl-C stops the fit ('stopped') with the best file written. Raises ValueError (NetworkError
    included; one line) / DatasetUnavailable for bad input.
    """
    tc, data = train_config, data_config
    setup = _set_up(encoder, tc, data)
    started, step, epoch, best, best_state = time.time(), 0, 0, {}, None
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=setup.total_steps, unit="step", dynamic_ncols=True)
    state, message = "finished", ""
    try:
        while epoch < tc.epochs and step < setup.total_steps:
            epoch_start = time.time()
            step, record = _fit_epoch(setup, tc, data, epoch, step, bar)
            epoch += 1
            if not math.isfinite(record["train_loss"]):
                state, message = "failed", f"non-finite training loss in epoch {epoch}"
                break
            record.update(epoch=epoch, step=step, val_mse=reconstruction_mse(setup.network, setup.val),
                          lr=setup.optimizer.param_groups[0]["lr"], seconds=time.time() - epoch_start)
            record["best"] = not best or record["val_mse"] < best["val_mse"]
            if record["best"]:
                best = {k: record[k] for k in ("epoch", "step", "val_mse", "train_loss", "train_mse")}
                best_state = {k: v.detach().clone() for k, v in setup.decoder.state_dict().items()}
                _write(setup, export_path, best, tc, data, started, epochs_trained=epoch)
            if on_epoch is not None:
                on_epoch(record)
        message = message or f"fitted {step} steps, {epoch} epochs; the encoder's weights are unchanged"
    except KeyboardInterrupt:
        state, message = "stopped", f"stopped at step {step} (epoch {epoch + 1}); the best decoder so far is kept"
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        setup.decoder.load_state_dict(best_state)
    setup.network.eval()
    path = str(export_path) if export_path is not None and best_state is not None else None
    return FitResult(state=state, step=step, epoch=epoch, message=message, network=setup.network, best_eval=best,
                     path=path)


def _write(setup: _Setup, path: str | os.PathLike | None, best: dict[str, Any], tc: TrainConfig, data: DataConfig,
           started: float, *, epochs_trained: int) -> None:
    """The pooling-network file: the encoder as it came (weights, input, configs, metrics) plus the decoder."""
    if path is None:
        return
    file = setup.file
    fit = {**best, "epochs_trained": epochs_trained, "val_images": len(setup.val.labels if isinstance(
        setup.val, DeviceBatches) else setup.val.dataset), "dataset": data.dataset, "wall_time": time.time() - started,
           "parameters": sum(p.numel() for p in setup.decoder.parameters()), "train_config": asdict(tc),
           "data_config": asdict(data)}
    save_network_file(path, setup.network.net, architecture=file.architecture,
                      architecture_args=file.architecture_args, input=file.input, data_config=file.data_config,
                      train_config=file.train_config, step=file.step, epoch=file.epoch,
                      metrics={**file.metrics, "decoder": fit}, **decoder_fields(setup.decoder))
