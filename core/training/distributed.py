"""Multi-process training under torchrun: join the process group, reduce across ranks, share buffers.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them (WORLD_SIZE unset or 1) everything here is a no-op,
so the trainer runs one code path either way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["DistContext", "init_distributed", "all_reduce_sum", "broadcast_buffers"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group (and so destroy it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and reports."""
        return self.rank == 0

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            # wait for every rank first: a rank that tears its gloo connections down while another still
            # talks to it can abort that one ('terminate called without an active exception')
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()


def init_distributed(*, use_cuda: bool) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1: NCCL when the ranks train on GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank, world_size, local_rank, owns)


def all_reduce_sum(values: torch.Tensor, enabled: bool) -> torch.Tensor:
    """`values` summed over all ranks, in place (unchanged when not distributed)."""
    if enabled:
        dist.all_reduce(values)
    return values


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics drift apart per rank)."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
