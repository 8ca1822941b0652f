"""How a stop request ends a run (StopSignal in core.training.state delivers it): before training starts, with a
"stopped" status and nothing else changed (`stopped_before_training`); during training, with last.pt at the last
finished step (`stopped`); and while a batch is awaited, by waiting inside StopSignal.interruptible()."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from core.model import SWWAE, ModelConfig
from core.training import rundir
from core.training.config import TrainConfig, TrainResult
from core.training.state import Run

__all__ = ["stopped_before_training", "stopped", "waiting_interruptibly"]


def stopped_before_training(model_config: ModelConfig, train_config: TrainConfig, writer: Path | None, *,
                            resume: bool) -> TrainResult:
    """A stop while the run set up (building the model, loading data: a read that may never end): status.json
    "stopped" (a resumed run keeps the step it stood at), no partial file of an interrupted write. Nothing else
    was changed yet: last.pt, metrics and snapshots are as they were."""
    previous = (rundir.read_status(writer) or {}) if writer is not None and resume else {}
    step, epoch = int(previous.get("step") or 0), int(previous.get("epoch") or 0)
    message = f"stopped before training {'resumed' if resume else 'started'} (while setting up, e.g. loading data)"
    if writer is not None:
        rundir.remove_partial_writes(writer)
        rundir.write_status(writer, "stopped", step=step, epoch=epoch, message=message, epochs=train_config.epochs)
        rundir.clear_stop(writer)
    return TrainResult("stopped", step, epoch, message, SWWAE(model_config))


def stopped(run: Run, message: str) -> TrainResult:
    """End the run on a stop request: last.pt at the last finished step, the STOP file honoured (removed)."""
    run.save(rundir.LAST_CHECKPOINT)
    if run.writer is not None:
        rundir.clear_stop(run.writer)
    return run.finish("stopped", message)


def waiting_interruptibly(run: Run, batches: Iterable) -> Iterator:
    """`batches`, each waited for inside StopSignal.interruptible(): a stop while a read blocks raises StopRequested
    (one process; under DDP the ranks must stop at one step, which they agree on at log steps)."""
    batches = iter(batches)
    while True:
        with run.stop_signal.interruptible(enabled=not run.ddp.enabled):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch
