"""Train an SWWAE: one engine for the dashboard, the terminal and a multi-GPU server.

    python -m core.train --dataset mnist5k --labels 100 --epochs 10 --run runs/demo
    torchrun --nproc_per_node 4 -m core.train --dataset cifar10 --run-dir runs/cifar   # DDP, rank 0 writes

`train()` reports through the run directory (core.training.rundir) and an optional callback; it knows nothing of any UI.
Modes: 'supervised' trains on the labeled samples only; 'semi-supervised' on all, the ones without a kept label
(DataConfig.labels) carrying -1; 'unsupervised' on all with no labels and lambda_nll off.

The run, top to bottom in `_run`: `_set_up` (device, model, batches, optimizer; `_resume_from` last.pt), then per
epoch `_train_epoch` (each step `train_step`, logged by `_log_and_check`) and `_evaluate_and_checkpoint`. Weights
and images are channels_last on CPU and CUDA (`channels_last`); `compile` wraps the step in torch.compile.
The command line (core.runs.cli, run as `python -m core.train`) sits above this module and is never imported by it.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from core.data import DataConfig, DeviceBatches, StreamBatches, fits_in_memory, materialize, one_per_class, open_split
from core.model import SWWAE, UNLABELED, Checkpoint, ModelConfig, load_checkpoint
from core.training import rundir
from core.training.claiming import check_resumable, claim_on_rank_0, mark_failed
from core.training.config import SEED_STRIDE, TrainConfig, TrainResult, check_configs, check_labels
from core.training.devices import resolve_device
from core.training.distributed import DistContext, init_distributed
from core.training.epoch import epoch_unclosed, evaluate_and_checkpoint, train_epoch
from core.training.evaluate import evaluate
from core.training.optim import build_optimizer, restore_optimizer
from core.training.schedule import snapshot_steps
from core.training.state import Run, StopRequested, StopSignal, set_rng_state
from core.training.step import StepWindow, loss_term_names, memory_format, training_net
from core.training.stopping import stopped, stopped_before_training

__all__ = ["train"]


def _make_batches(data: DataConfig, model_config: ModelConfig, train: TrainConfig, split: str, *,
                  ddp: DistContext, device: torch.device):
    """DeviceBatches when the split fits `max_memory_mb`, else StreamBatches; applies the mode to the labels."""
    shape = {"channels": model_config.in_channels, "image_size": model_config.image_size}
    subset = open_split(data, split, **shape)
    labels = subset.labels
    check_labels(labels, model_config.num_classes, split)
    if split == "train" and train.mode == "supervised":
        subset = subset.take(torch.nonzero(labels != UNLABELED).flatten())
    elif split == "train" and train.mode == "unsupervised":
        subset = subset.take(torch.arange(len(labels)), torch.full_like(labels, UNLABELED))
    batch_size = train.batch_size if split == "train" else train.eval_batch_size
    if split == "train" and len(subset) // ddp.world_size < batch_size:
        raise ValueError(f"only {len(subset)} training samples for {ddp.world_size} process(es), fewer than "
                         f"batch_size {batch_size} each; lower --batch-size or keep more --labels")
    common = dict(batch_size=batch_size, seed=train.seed, rank=ddp.rank, world_size=ddp.world_size, device=device)
    mixed = split == "train" and train.mode == "semi-supervised" and data.labeled_per_batch > 0
    if fits_in_memory(subset, max_memory_mb=data.max_memory_mb):
        return DeviceBatches(materialize(subset, keep_bytes=True), subset.labels, labeled_per_batch=data.labeled_per_batch if mixed else 0,
                             **common)
    if mixed:
        raise ValueError("labeled_per_batch needs the training set held in memory; raise --max-memory-mb")
    return StreamBatches(subset, workers=data.workers, **common)


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    data_config: DataConfig,
    *,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
    export_path: str | os.PathLike | None = None,
    test: bool = False,
    new_only: bool = False,
    claim: rundir.Claim | None = None,
) -> TrainResult:
    """Train from scratch (or from run_dir/last.pt when `resume`) and return how it ended.

    Rank 0 writes the run directory (if given) and calls `on_record` with each metrics record. The run stops
    ('stopped') on SIGINT/SIGTERM, a STOP file in run_dir or `should_stop()`: after finishing its step, or at once
    while it sets up (loading data) or waits for a batch (StopSignal), with last.pt at the last finished step;
    it fails ('failed', result returned, not raised) on a non-finite loss, keeping the last good checkpoint.
    `export_path`: at the end, also write the best weights (no optimizer state) there, e.g. a shipped model.
    `test`: once finished, evaluate best.pt's weights (chosen on 'val') on the 'test' split: TrainResult.test_eval,
    and "test" in status.json. Nothing else ever reads the test split. `new_only`: refuse a run_dir that already
    holds a run (a dry run never writes into one). `claim`: run_dir's claim, when the caller holds it already (a
    process started by core.runs.launcher inherits the launcher's); it stays the caller's to release.
    Raises ValueError / CheckpointError / RunDirError / DatasetUnavailable for bad input.
    """
    check_configs(model_config, train_config, data_config)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ddp = init_distributed(use_cuda=resolve_device(train_config.device, local_rank=local_rank).type == "cuda")
    run_dir = Path(run_dir) if run_dir is not None else None
    held, claim = claim, None
    try:
        with StopSignal() as stop_signal:  # until training starts, a stop raises StopRequested at once
            try:
                with stop_signal.deferred():  # rank 0 alone writes, holding the claim
                    claim = claim_on_rank_0(run_dir, ddp, resume=resume, new_only=new_only, held=held)
                    if claim is not None:
                        stop_signal.watch(run_dir, interrupt=not ddp.enabled)
                return _run(model_config, train_config, data_config, ddp=ddp, stop_signal=stop_signal,
                            run_dir=run_dir, resume=resume, on_record=on_record, should_stop=should_stop,
                            progress=progress, export_path=export_path, test=test)
            except StopRequested:
                writer = run_dir if claim is not None else None  # rank 0 (holding the claim) alone writes
                return stopped_before_training(model_config, train_config, writer, resume=resume)
    except BaseException as exc:  # leave no "running" status behind a dead run
        if claim is not None:
            mark_failed(run_dir, exc)
        raise
    finally:
        if claim is not None and claim is not held:
            claim.release()


def _run(model_config, train_config, data_config, *, ddp, stop_signal, run_dir, resume, on_record, should_stop,
         progress, export_path, test) -> TrainResult:
    """Set up (or resume), then epochs of optimisation steps, each epoch closed by an evaluation and checkpoints."""
    run = _set_up(model_config, train_config, data_config, ddp=ddp, run_dir=run_dir, resume=resume,
                  stop_signal=stop_signal, should_stop=should_stop, on_record=on_record, export_path=export_path)
    stop_signal.training()  # from here a stop lets the step finish (or ends a wait for a batch)
    if progress and ddp.is_main:
        from tqdm import tqdm
        run.progress_bar = tqdm(total=run.total_steps, initial=run.step, unit="step", dynamic_ncols=True)
    run.status("running", "resumed" if run.resumed else "started")
    metrics = run.writer / rundir.METRICS_FILE if run.writer is not None else None
    if metrics is not None and not run.resumed and metrics.is_file() and metrics.stat().st_size:
        _void_earlier_attempt(run)
    message = f"already trained {run.step} of {run.total_steps} steps"
    while run.epoch < train_config.epochs and (run.step < run.total_steps or epoch_unclosed(run)):
        ended = train_epoch(run)
        if ended is not None:
            return ended  # stopped, or failed on a non-finite loss
        try:
            evaluate_and_checkpoint(run)
        except StopRequested:  # while waiting for a validation batch: the epoch's steps are done, its evaluation
            run.epoch -= 1  # is not; last.pt says so, and the resume evaluates it before it trains on
            return stopped(run, f"stopped at step {run.step}, before the evaluation of epoch {run.epoch + 1}")
        message = f"trained {run.step} steps, {run.epoch} epochs"
    if test:
        run.test_eval = _evaluate_test(run, model_config, data_config, run_dir)
    return run.finish("finished", message)


def _void_earlier_attempt(run: Run) -> None:
    """A fresh start where an earlier attempt died before its first checkpoint: a {"kind": "resume", "step": 0}
    line voids that attempt's records for every reader (they stay in the file), so the steps do not repeat."""
    rundir.append_metrics(run.writer, {"kind": "resume", "step": 0, "fresh_start": True, "time": time.time()})


def _evaluate_test(run: Run, model_config: ModelConfig, data_config: DataConfig, run_dir: Path | None) -> dict:
    """The final evaluation on the test split, of the weights best.pt holds (the model chosen on validation), else
    of the final weights; {"checkpoint", "epoch", "images", loss terms, "accuracy"}."""
    state, epoch, name = run.best_state, run.best_eval.get("epoch"), rundir.BEST_CHECKPOINT
    if state is None and run_dir is not None and (run_dir / rundir.BEST_CHECKPOINT).exists():
        best = load_checkpoint(run_dir / rundir.BEST_CHECKPOINT)
        state, epoch = best.model.state_dict(), best.epoch
    model = run.model
    if state is not None:
        model = SWWAE(model_config)
        model.load_state_dict(state)
        model = model.to(run.device, memory_format=memory_format(run.config, run.device))
    else:
        epoch, name = run.epoch, "final weights"
    batches = _make_batches(data_config, model_config, run.config, "test", ddp=run.ddp, device=run.device)
    metrics = evaluate(model, batches.in_order(), config=run.config, device=run.device, distributed=run.ddp.enabled)
    images = len(batches.labels) if isinstance(batches, DeviceBatches) else len(batches.dataset)  # every rank's
    return {"checkpoint": name, "epoch": epoch, "images": images, **metrics}


def _set_up(model_config: ModelConfig, tc: TrainConfig, data_config: DataConfig, *, ddp: DistContext,
            run_dir: Path | None, resume: bool, **hooks) -> Run:
    """Device, model, batches and optimizer, seeded per rank; a resumed run continues from last.pt. Rank 0 writes
    config.json (and a "resume" record) and picks the sample images."""
    device = resolve_device(tc.device, local_rank=ddp.local_rank)
    writer = run_dir if ddp.is_main else None  # rank 0 alone writes (and has claimed the directory)
    if writer is None and resume and run_dir is not None:
        check_resumable(run_dir, resume=True)
    torch.manual_seed(tc.seed * SEED_STRIDE + ddp.rank)
    checkpoint: Checkpoint | None = load_checkpoint(run_dir / rundir.LAST_CHECKPOINT) if resume else None
    if checkpoint is not None and asdict(checkpoint.model_config) != asdict(model_config):
        raise ValueError(f"the model config differs from the one {run_dir} was trained with; resume without "
                         "architecture options")
    model = checkpoint.model if checkpoint is not None else SWWAE(model_config)
    model = model.to(device, memory_format=memory_format(tc, device)).train()
    train_batches = _make_batches(data_config, model_config, tc, "train", ddp=ddp, device=device)
    val_batches = _make_batches(data_config, model_config, tc, "val", ddp=ddp, device=device)
    run = Run(config=tc, configs={"model": asdict(model_config), "train": asdict(tc), "data": asdict(data_config)},
               ddp=ddp, device=device, writer=writer, model=model, optimizer=build_optimizer(model, tc),
               augment=torch.Generator(device=device).manual_seed(tc.seed * SEED_STRIDE + ddp.rank),
               train_batches=train_batches, val_batches=val_batches, shift=data_config.shift, flip=data_config.flip,
               window=StepWindow(loss_term_names(model_config), device), **hooks)
    if checkpoint is not None:
        _resume_from(run, checkpoint, run_dir)
    run.snapshot_at = frozenset(snapshot_steps(run.total_steps) if tc.snapshots else ())
    if writer is not None:  # snapshots after the step this run starts from are void (a crash came after them)
        rundir.remove_snapshots_after(writer, run.step if checkpoint is not None else -1)
        run.sample_images = _sample_images(val_batches, tc.samples)
        rundir.write_config(writer, **run.configs)
        if checkpoint is not None:
            rundir.append_metrics(writer, {"kind": "resume", "step": run.step, "time": time.time()})
    run.net = training_net(model, tc, ddp)
    run.compile_pending = hasattr(run.net, "_orig_mod")  # torch.compile's wrapper: its first step compiles
    run.started = time.time()
    return run


def _resume_from(run: Run, checkpoint: Checkpoint, run_dir: Path) -> None:
    """Continue where last.pt left off: step and epoch, optimizer state, RNG streams, wall time, evaluations."""
    tc, ddp = run.config, run.ddp
    run.step, run.epoch, run.resumed = checkpoint.step, checkpoint.epoch, True
    restore_optimizer(run.optimizer, checkpoint, tc)
    if checkpoint.rng_state is not None and ddp.is_main:
        set_rng_state(checkpoint.rng_state, run.augment)
    elif ddp.enabled:  # only rank 0's streams are saved: the others continue from a seed that moves with the step
        torch.manual_seed(tc.seed * SEED_STRIDE + ddp.rank + run.step)
        run.augment.manual_seed(tc.seed * SEED_STRIDE + ddp.rank + run.step)
    saved_steps_per_epoch = checkpoint.metrics.get("steps_per_epoch", run.steps_per_epoch)
    if saved_steps_per_epoch != run.steps_per_epoch:
        raise ValueError(f"{run_dir} was trained with {saved_steps_per_epoch} steps per epoch, now it would be "
                         f"{run.steps_per_epoch}; resume with the same batch size, data and process count")
    run.wall_before = float(checkpoint.metrics.get("wall_time", 0.0))
    run.best_eval = dict(checkpoint.metrics.get("best_eval") or {})
    run.last_eval = dict(checkpoint.metrics.get("last_eval") or {})


def _sample_images(val_batches, samples: int) -> torch.Tensor | None:
    """One validation image of each class, in class order (mnist5k's split is sorted by class): (S, C, H, W)."""
    val_labels = torch.cat([labels.cpu() for _, labels in val_batches.in_order()])  # (N,): this rank's shard
    rows, size = one_per_class(val_labels, samples).tolist(), val_batches.batch_size
    wanted = {r // size for r in rows}  # the in-order batches that hold those rows
    kept = {b: images for b, (images, _) in enumerate(val_batches.in_order()) if b in wanted}
    return torch.stack([kept[r // size][r % size] for r in rows]) if rows else None  # (S, C, H, W)
