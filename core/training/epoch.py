"""One epoch of a run: optimisation steps, each log step's "step" record and its checks (non-finite loss, stop
request, periodic last.pt), then the evaluation that closes the epoch with its "eval" record, samples PNG and
checkpoints (best.pt when best, last.pt)."""
from __future__ import annotations

import time
from typing import Any

import torch

from core.training import rundir
from core.training.config import TrainResult
from core.training.distributed import all_reduce_sum, broadcast_buffers
from core.training.evaluate import evaluate, is_better
from core.training.schedule import learning_rate
from core.training.state import Run, StopRequested
from core.training.step import autocast
from core.training.stopping import stopped, waiting_interruptibly

__all__ = ["train_epoch", "epoch_unclosed", "evaluate_and_checkpoint"]


def train_epoch(run: Run) -> TrainResult | None:
    """Optimisation steps to the end of the epoch (or of max_steps), logging as it goes. Returns the result when
    the run stops or fails on the way, else None."""
    run.model.train()
    batches = run.train_batches.epoch(run.epoch, start_step=run.step - run.epoch * run.steps_per_epoch)
    try:
        for images, labels in waiting_interruptibly(run, batches):
            for group in run.optimizer.param_groups:
                group["lr"] = learning_rate(run.step, config=run.config, total_steps=run.total_steps)
            terms, logits = run.optimisation_step(images, labels)
            run.window.add(run.step, terms, logits, labels)
            run.step += 1
            run.save_snapshot()
            if run.progress_bar is not None:
                run.progress_bar.update(1)
            # Single process: look for a stop request every step (cheap, no device sync). DDP: at log steps, where
            # all ranks agree through the all-reduce, so they stop at the same step.
            local_stop = not run.ddp.enabled and run.stop_requested()
            end_of_epoch = run.step % run.steps_per_epoch == 0
            if local_stop or run.step % run.config.log_every == 0 or end_of_epoch or run.step >= run.total_steps:
                ended = _log_and_check(run, end_of_epoch=end_of_epoch)
                if ended is not None:
                    return ended
            if run.step >= run.total_steps:
                break
    except StopRequested:  # while waiting for the next batch (a slow or blocked read): stop at the last step done
        return _log_and_check(run, end_of_epoch=False) or stopped(run, f"stopped at step {run.step}")
    if epoch_unclosed(run):  # the epoch ran to its end (not cut short by max_steps)
        run.epoch += 1
    return None


def epoch_unclosed(run: Run) -> bool:
    """Whether the current epoch's steps are all done and it was not closed (a stop cut its evaluation short)."""
    return run.step == (run.epoch + 1) * run.steps_per_epoch


def _log_and_check(run: Run, *, end_of_epoch: bool) -> TrainResult | None:
    """At a log step: the "step" record; then fail on a non-finite loss, stop when asked (after saving last.pt) or
    save last.pt every checkpoint_every steps. Returns the result when the run ends here, else None."""
    failure, stop = _flush_window(run)
    if failure:
        return run.finish("failed", failure)
    if stop:
        return stopped(run, f"stopped at step {run.step}")
    if run.config.checkpoint_every and run.step % run.config.checkpoint_every == 0 and not end_of_epoch:
        run.save(rundir.LAST_CHECKPOINT)
    run.status("running")
    return None


def _flush_window(run: Run) -> tuple[str | None, bool]:
    """Emit the window's "step" record and start a new window. Returns (a non-finite-loss message or None, whether
    any rank asked to stop); under DDP one all-reduce carries the sums and both flags, so all ranks agree."""
    window, names, world = run.window, run.window.names, run.ddp.world_size
    flags = torch.tensor([float(window.first_bad_step >= 0), float(run.stop_requested())], device=run.device)
    summed = all_reduce_sum(torch.cat([window.sums, flags]), run.ddp.enabled).tolist()
    if window.steps:
        elapsed = time.time() - window.start
        correct, labeled = summed[len(names)], summed[len(names) + 1]
        record = {"kind": "step", "step": run.step, "epoch": run.epoch}
        record.update({n: v / (window.steps * world) for n, v in zip(names, summed)})
        record.update(accuracy=correct / labeled if labeled else None, lr=run.optimizer.param_groups[0]["lr"],
                      images_per_s=window.images * world / max(elapsed, 1e-9))
        run.emit(record)
        if run.progress_bar is not None:
            run.progress_bar.set_postfix(loss=f"{record['total']:.4f}", epoch=run.epoch)
    window.restart()
    return window.failure(any_bad=summed[-2] > 0), summed[-1] > 0


def evaluate_and_checkpoint(run: Run) -> None:
    """The end of an epoch: evaluate, then best.pt when this evaluation is the best so far, and last.pt."""
    run.last_eval = _evaluate_and_log(run)
    if run.last_eval.get("best"):
        run.best_eval = run.last_eval
        run.best_state = {name: value.detach().clone() for name, value in run.model.state_dict().items()}
        run.save(rundir.BEST_CHECKPOINT)
    run.save(rundir.LAST_CHECKPOINT)
    run.window.start = time.time()  # evaluation time is not training throughput


def _evaluate_and_log(run: Run) -> dict[str, Any]:
    """Evaluate on the validation batches, emit the "eval" record (marked best or not), write the samples PNG."""
    model, tc = run.model, run.config
    if run.ddp.enabled:  # BatchNorm running stats drift per rank; evaluate everyone with rank 0's
        broadcast_buffers(model)
    metrics = evaluate(model, waiting_interruptibly(run, run.val_batches.in_order()), config=tc, device=run.device,
                       distributed=run.ddp.enabled)  # a stop while a batch is read raises StopRequested: no record
    record = {"kind": "eval", "step": run.step, "epoch": run.epoch, **metrics}
    record["best"] = is_better(record, run.best_eval, by_accuracy=tc.mode != "unsupervised")
    run.emit(record)
    if run.writer is not None and run.sample_images is not None and len(run.sample_images):
        model.eval()
        with torch.no_grad(), autocast(run.device, tc):
            recon = model.decode(model.encode(run.sample_images, check_finite=False)).recon  # (S, C, H, W)
        model.train()
        rundir.write_samples(run.writer, run.epoch, run.sample_images, recon)
    return record
