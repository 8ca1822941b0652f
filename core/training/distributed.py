"""Multi-process training under torchrun: join the process group, reduce across ranks, share buffers.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them (WORLD_SIZE unset or 1) everything here is a no-op,
so the trainer runs one code path either way.

One process group per process lifetime: the first `init_distributed` joins it and it is left at exit (a second
group on torchrun's store reuses the first one's keys and can hang: `--dry-run` trains twice in one process). Every
collective has a timeout (SWWAE_DDP_TIMEOUT_S, default 300 s), so a rank that died or refused ends the others with
an error in bounded time instead of a hang; a refusal on rank 0 reaches the others at once (`broadcast_text`).
"""
from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["DistContext", "init_distributed", "all_reduce_sum", "broadcast_buffers", "broadcast_text",
           "DDP_TIMEOUT_ENV"]

DDP_TIMEOUT_ENV = "SWWAE_DDP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0
MAX_TEXT_BYTES = 4096


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collectives' tensors live: the rank's GPU under NCCL

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and reports."""
        return self.rank == 0



def _timeout() -> datetime.timedelta:
    try:
        seconds = float(os.environ.get(DDP_TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        seconds = DEFAULT_TIMEOUT_S
    return datetime.timedelta(seconds=seconds if seconds > 0 else DEFAULT_TIMEOUT_S)


def _leave_group() -> None:
    """At exit: wait for every rank (bounded by the group's timeout), then leave. A rank that tears its gloo
    connections down while another still talks to it can abort that one ('terminate called without an active
    exception')."""
    if dist.is_initialized():
        try:
            dist.barrier()
        except Exception:  # another rank is gone: nothing left to wait for
            pass
        dist.destroy_process_group()


def init_distributed(*, use_cuda: bool) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (once per process): NCCL when the ranks train on GPUs,
    gloo on CPU, collectives timing out after SWWAE_DDP_TIMEOUT_S."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=_timeout())
        atexit.register(_leave_group)
    return DistContext(rank, world_size, local_rank, f"cuda:{local_rank}" if use_cuda else "cpu")


def broadcast_text(text: str | None, ddp: DistContext) -> str | None:
    """Rank 0's `text` (a one-line message, or None) on every rank; `text` as it is when not distributed."""
    if not ddp.enabled:
        return text
    data = (text or "").encode()[:MAX_TEXT_BYTES] if ddp.is_main else b""
    length = torch.tensor([len(data) if ddp.is_main and text is not None else -1], device=ddp.device)
    dist.broadcast(length, src=0)
    if int(length) < 0:
        return None
    buffer = torch.zeros(int(length), dtype=torch.uint8, device=ddp.device)
    if ddp.is_main and data:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist()).decode(errors="replace")


def all_reduce_sum(values: torch.Tensor, enabled: bool) -> torch.Tensor:
    """`values` summed over all ranks, in place (unchanged when not distributed)."""
    if enabled:
        dist.all_reduce(values)
    return values


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics drift apart per rank)."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
