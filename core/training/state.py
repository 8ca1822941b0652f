"""One training run's state (`Run`), what it writes (status, metrics records, checkpoints, the export), the stop
signal (`StopSignal`, `StopRequested`) and the RNG streams a checkpoint carries. The loop (core.training.loop)
reads this state and moves it on."""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from core.model import SWWAE, load_checkpoint, save_checkpoint
from core.training import rundir
from core.training.config import TrainConfig, TrainResult
from core.training.devices import describe
from core.training.distributed import DistContext
from core.training.step import StepWindow, train_step, warn_no_compile

__all__ = ["Run", "StopSignal", "StopRequested", "rng_state", "set_rng_state"]


def rng_state(augment: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "augment": augment.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor], augment: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    augment.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class StopRequested(BaseException):
    """A stop (SIGINT, SIGTERM, a STOP file) raised where the run has nothing to finish: while it sets up, or while
    it waits for a batch. A BaseException, so no `except Exception` on the way (a data loader's) swallows it."""


class StopSignal:
    """How a stop reaches a run: SIGINT, SIGTERM, and (once `watch` is called) a STOP file in the run directory.

    A stop sets `event`, which the loop reads after each step. Where the run has nothing to finish (set-up, until
    `training()` is called, and inside `interruptible()`) it also raises StopRequested in the main thread at once:
    a handler that raises ends the system call it interrupted (PEP 475 retries one only when the handler
    returns), so a read that blocks for ever (a FIFO among the images, a hung mount) ends too. A second SIGINT
    while training interrupts at once (KeyboardInterrupt)."""

    WATCH_EVERY_S = 0.2  # how often the STOP file is looked for

    def __init__(self):
        self.event = threading.Event()
        self.interrupting = True  # raise StopRequested on a stop (set-up), else only set `event`
        self.previous: dict[int, Any] = {}
        self._pid = os.getpid()
        self._watching = threading.Event()
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked child (a DataLoader worker) inherits this handler. There Ctrl-C is
            if signum == signal.SIGTERM:  # the parent's to act on; SIGTERM (the DataLoader ending a stuck worker)
                signal.signal(signum, signal.SIG_DFL)  # ends it as it would by default
                os.kill(os.getpid(), signum)
            return
        again = self.event.is_set()
        self.event.set()
        if self.interrupting:
            self.interrupting = False  # raised once: the stop's own clean-up runs undisturbed
            raise StopRequested(signal.Signals(signum).name)
        if again and signum == signal.SIGINT:
            raise KeyboardInterrupt

    def watch(self, run_dir: Path, *, interrupt: bool) -> None:
        """Look for a STOP file in `run_dir` from now on: it stops the run as SIGTERM would (with `interrupt`, by
        sending SIGTERM to the main thread, so a blocked read ends too; else by setting `event` alone)."""
        interrupt = interrupt and bool(self.previous)  # only where this object handles the main thread's signals

        def look() -> None:
            while not self._watching.wait(self.WATCH_EVERY_S):
                if rundir.stop_requested(run_dir):
                    if interrupt:
                        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
                    else:
                        self.event.set()
                    return

        self._watcher = threading.Thread(target=look, name="stop-file-watcher", daemon=True)
        self._watcher.start()

    def training(self) -> None:
        """Set-up is over: from now on a stop sets `event` (the loop stops after its step), except inside
        `interruptible()`."""
        self.interrupting = False

    @contextlib.contextmanager
    def interruptible(self, enabled: bool = True):
        """A wait with nothing to finish (the next batch): a stop, or one already asked for, raises StopRequested."""
        if not enabled:
            yield
            return
        if self.event.is_set():
            raise StopRequested("asked before the wait")
        before, self.interrupting = self.interrupting, True
        try:
            yield
        finally:
            self.interrupting = before and not self.event.is_set()

    @contextlib.contextmanager
    def deferred(self):
        """A step that must not be cut in two (taking the claim): a stop during it raises StopRequested after it."""
        interrupting, self.interrupting = self.interrupting, False
        try:
            yield
        finally:
            self.interrupting = interrupting
        if interrupting and self.event.is_set():
            self.interrupting = False
            raise StopRequested("asked during a step that had to finish")

    def __exit__(self, *exc) -> None:
        self.interrupting = False  # a late stop only sets the flag
        self._watching.set()
        if self._watcher is not None:
            self._watcher.join()  # it sends no signal once the handlers below are gone
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


@dataclass(eq=False)
class Run:
    """One training run: what set-up built, where the loop stands, and where it reports (rank 0 alone writes).
    The steps of `_run` below read it and move it on."""

    config: TrainConfig
    configs: dict[str, dict]  # {"model", "train", "data"} as plain dicts: config.json, and inside every checkpoint
    ddp: DistContext
    device: torch.device
    writer: Path | None  # the run directory on rank 0, None on the other ranks (or without one)
    model: SWWAE  # unwrapped, in memory_format(config, device) while training
    optimizer: torch.optim.Optimizer
    augment: torch.Generator  # random_shift's stream; its state goes into checkpoints
    train_batches: Any  # DeviceBatches | StreamBatches
    val_batches: Any
    shift: int  # DataConfig.shift
    flip: bool  # DataConfig.flip
    window: StepWindow
    stop_signal: StopSignal
    should_stop: Callable[[], bool] | None
    on_record: Callable[[dict[str, Any]], None] | None
    export_path: str | os.PathLike | None
    net: nn.Module | None = None  # what the step calls (training_net)
    compile_pending: bool = False  # the net is compiled and its first step (which compiles it) has not run
    step: int = 0
    epoch: int = 0
    resumed: bool = False
    wall_before: float = 0.0  # training seconds before this process (a resumed run)
    started: float = 0.0
    last_eval: dict[str, Any] = field(default_factory=dict)
    best_eval: dict[str, Any] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None  # the weights best.pt holds, when saved by this process
    test_eval: dict[str, Any] = field(default_factory=dict)  # the final evaluation on the test split (--test)
    sample_images: torch.Tensor | None = None  # (S, C, H, W): one validation image per class, rank 0 only
    snapshot_at: frozenset[int] = frozenset()  # the steps whose weights go to snapshots/ (snapshot_steps)
    snapshot_seconds: float = 0.0  # spent writing them in this process
    progress_bar: Any = None

    @property
    def steps_per_epoch(self) -> int:
        return self.train_batches.steps_per_epoch

    @property
    def total_steps(self) -> int:
        every_epoch = self.config.epochs * self.steps_per_epoch
        return min(self.config.max_steps, every_epoch) if self.config.max_steps else every_epoch

    def optimisation_step(self, images: torch.Tensor, labels: torch.Tensor):
        if self.compile_pending:
            return _first_compiled_step(self, images, labels)
        return train_step(self.net, self.optimizer, images, labels, config=self.config, device=self.device,
                          shift=self.shift, flip=self.flip, augment=self.augment)

    def stop_requested(self) -> bool:
        """SIGINT/SIGTERM, should_stop() or a STOP file in the run directory."""
        return (self.stop_signal.event.is_set() or (self.should_stop is not None and self.should_stop())
                or (self.writer is not None and rundir.stop_requested(self.writer)))

    @functools.cached_property
    def device_label(self) -> str:
        """The device as status.json records it, e.g. 'cuda:0 — NVIDIA H200, 140 GiB' (looked up once)."""
        return describe(self.device)

    def status(self, state: str, message: str = "") -> None:
        if self.writer is not None:
            rundir.write_status(self.writer, state, step=self.step, epoch=self.epoch, message=message,
                                epochs=self.config.epochs, steps_per_epoch=self.steps_per_epoch,
                                total_steps=self.total_steps, device=self.device_label,
                                **({"test": self.test_eval} if self.test_eval else {}))

    def emit(self, record: dict[str, Any]) -> None:
        record.update(wall_time=self.wall_before + time.time() - self.started, time=time.time())
        if self.writer is not None:
            rundir.append_metrics(self.writer, record)
        if self.on_record is not None and self.ddp.is_main:
            self.on_record(record)

    def save(self, name: str) -> None:
        if self.writer is None:
            return
        save_checkpoint(self.writer / name, self.model, optimizer=self.optimizer, train_config=self.configs["train"],
                        data_config=self.configs["data"], step=self.step, epoch=self.epoch,
                        rng_state=rng_state(self.augment),
                        metrics={"wall_time": self.wall_before + time.time() - self.started,
                                 "last_eval": self.last_eval, "best_eval": self.best_eval,
                                 "steps_per_epoch": self.steps_per_epoch})

    def save_snapshot(self) -> None:
        """The weights right after this step, when it is a snapshot step: snapshots/step_<step>.pt, weights only,
        written atomically by the writer (rank 0)."""
        if self.writer is None or self.step not in self.snapshot_at:
            return
        started = time.perf_counter()
        path = rundir.snapshot_path(self.writer, self.step)
        if path.parent.is_symlink():
            raise rundir.RunDirError(f"{path.parent} is a symbolic link; snapshots are never written through one")
        save_checkpoint(path, self.model, train_config=self.configs["train"], data_config=self.configs["data"],
                        step=self.step, epoch=self.epoch,
                        metrics={"wall_time": self.wall_before + time.time() - self.started})
        self.snapshot_seconds += time.perf_counter() - started

    def finish(self, state: str, message: str) -> TrainResult:
        """The final status, the export (when asked) and the result, its model in the plain layout."""
        if self.progress_bar is not None:
            self.progress_bar.close()
        self.status(state, message)
        if self.export_path is not None and self.ddp.is_main and state != "failed":
            _export_result(self, state)
        self.model.to(memory_format=torch.contiguous_format)  # laid out as a loaded checkpoint is: same outputs
        return TrainResult(state, self.step, self.epoch, message, self.model, self.last_eval, self.best_eval,
                           self.test_eval, self.snapshot_seconds)


def _first_compiled_step(run: Run, images: torch.Tensor, labels: torch.Tensor):
    """The first step of a compiled net compiles it. Where that fails (no C++ compiler or Triton, an op it cannot
    trace), what the attempt changed (weights, BatchNorm statistics, RNG streams) is put back, a warning says why,
    and the run goes on without compiling: the eager step's results, at the eager speed."""
    run.compile_pending = False
    before = {name: value.clone() for name, value in run.model.state_dict().items()}
    rng = rng_state(run.augment)
    try:
        return run.optimisation_step(images, labels)
    except Exception as exc:
        warn_no_compile(exc)
        run.model.load_state_dict(before)
        set_rng_state(rng, run.augment)
        run.net = run.net._orig_mod  # the eager net torch.compile wrapped
        return run.optimisation_step(images, labels)


def _export_result(run: Run, state: str) -> None:
    """Write the weights-only export: best.pt's weights when there is one, else (finished) the final ones. A run
    stopped before its first evaluation exports nothing: the file keeps what it held."""
    best_path = run.writer / rundir.BEST_CHECKPOINT if run.writer is not None else None
    if best_path is not None and best_path.exists():
        best = load_checkpoint(best_path)
        _export(run.export_path, best.model, best.train_config, best.data_config, best.step, best.epoch,
                best.metrics.get("last_eval") or {})
    elif state == "finished":
        _export(run.export_path, run.model, run.configs["train"], run.configs["data"], run.step, run.epoch,
                run.last_eval)


def _export(path, model: SWWAE, train_config: dict, data_config: dict, step: int, epoch: int,
            evaluation: dict[str, Any]) -> None:
    """A small weights-only checkpoint (no optimizer or RNG state); metrics["eval"] is its validation record."""
    save_checkpoint(path, model, train_config=train_config, data_config=data_config, step=step, epoch=epoch,
                    metrics={"eval": evaluation})
