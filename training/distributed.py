# SPDX-License-Identifier: GPL-3.0-or-later
"""Multi-process training under ``torchrun`` (NCCL on GPUs, gloo on CPU); one process needs nothing.

``torchrun --nproc_per_node=N -m training.commands.train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them. Without them
the same code runs as a single process.

Gradients are averaged explicitly (:func:`average_gradients`, one flattened all-reduce per network and
phase) rather than by wrapping the networks in ``DistributedDataParallel``: the GAN step calls the
generator's ``mapping``/``planes``/``render``/``query`` separately (DDP only synchronises what goes
through ``forward``), the lazy R1 penalty needs a double backward (unsupported by DDP's reducer), and
parameters unused in some phases would need ``find_unused_parameters``. The arithmetic is the same as
DDP's bucketed all-reduce: every replica applies the mean gradient, so replicas stay identical.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job. ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistContext:
    """Join the process group described by the torchrun environment (if any).

    Args:
        device: "cpu", "cuda" or None (CUDA when available). Under torchrun with CUDA each process
            uses ``cuda:LOCAL_RANK`` and NCCL; on CPU, gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA device is available")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))
    return DistContext(rank, world, local, dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


@torch.no_grad()
def broadcast_module(module: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every replica."""
    if not ctx.distributed:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src)


def average_gradients(params: Iterable[nn.Parameter], ctx: DistContext) -> None:
    """Replace each gradient by its mean over all processes (one flattened all-reduce).

    Parameters without a gradient are skipped; all replicas run the same graph, so they agree."""
    if not ctx.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def mean_over_processes(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """All-reduced mean of ``x`` (returned unchanged on one process)."""
    if not ctx.distributed:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / ctx.world_size


def any_process(flag: bool, ctx: DistContext) -> bool:
    """True on every process if ``flag`` is true on any (one small all-reduce and a host sync)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
