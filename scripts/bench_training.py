# SPDX-License-Identifier: GPL-3.0-or-later
"""Training throughput: seconds per step of ``tiny`` on CPU; images/s of ``default`` and ``paper`` on CUDA.

    .venv/bin/python scripts/bench_training.py [--threads 2] [--steps 8] [--cuda-only] [--cpu-only]

A step is the full GAN step of training/loop.py (G main, lazy density reg, D main, lazy R1, EMA),
timed over a whole number of lazy-regularisation periods after warm-up steps, so the amortised cost of
the regularisers is included. ``data`` = procedural: heads drawn and rendered every step on the
training device (included in the time); memory: one pre-rendered batch reused (training cost only).
CUDA: batch 32 and the largest power-of-two batch that fits, bfloat16 autocast, peak memory reported.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from training.config import TRAIN_CONFIGS
from training.data import DataBatch, ProceduralSource
from training.distributed import DistContext
from training.loop import _build, _step, build_generator
from ide3d_core.cameras import PoseDistribution


class MemorySource:
    """One procedural batch rendered once and returned for every step."""

    def __init__(self, resolution: int, batch: int, device: torch.device) -> None:
        self.resolution = resolution
        self._batch = ProceduralSource(resolution, 0, device).batch(0, 0, batch)

    def batch(self, step: int, rank: int, batch_size: int) -> DataBatch:
        b = self._batch
        return DataBatch(b.image[:batch_size], b.labels[:batch_size], b.cameras[:batch_size])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(name: str, batch: int, device: torch.device, data: str, steps: int, warmup: int) -> tuple[float, float]:
    """(seconds per step, peak GiB) of ``steps`` steps after ``warmup`` steps."""
    cfg = TRAIN_CONFIGS[name].replace(batch_size=batch)
    ctx = DistContext(device=device)
    m = _build(cfg, ctx, build_generator)
    res = m.G.img_resolution
    source = ProceduralSource(res, 0, device) if data == "procedural" else MemorySource(res, batch, device)
    poses = PoseDistribution()
    period = math.lcm(max(cfg.r1_interval, 1), max(cfg.density_interval, 1))
    steps = max(period, steps // period * period)
    for s in range(warmup):
        _step(m, cfg, ctx, source, s, s * batch, poses)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for s in range(warmup, warmup + steps):
        _step(m, cfg, ctx, source, s, s * batch, poses)
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return dt, peak


def _fits(name: str, batch: int, device: torch.device) -> bool:
    try:
        time_steps(name, batch, device, "memory", steps=1, warmup=1)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--cpu-only", action="store_true")
    ap.add_argument("--cuda-only", action="store_true")
    ap.add_argument("--configs", default="default,paper", help="CUDA configs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU threads")
    if not args.cuda_only:
        print("\n| config | device | batch | data | s/step | images/s |\n|---|---|---|---|---|---|")
        cpu = torch.device("cpu")
        for batch in (4, 8):
            for data in ("memory", "procedural"):
                dt, _ = time_steps("tiny", batch, cpu, data, args.steps, warmup=2)
                print(f"| tiny | cpu | {batch} | {data} | {dt:.3f} | {batch / dt:.1f} |", flush=True)
    if args.cpu_only:
        return
    if not torch.cuda.is_available():
        print("\nno CUDA device: GPU section skipped")
        return
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True  # as training/commands/train.py sets them
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"\n{torch.cuda.get_device_name(dev)}")
    print("| config | batch | data | s/step | images/s | peak GiB |\n|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        largest = 32
        while _fits(name, largest * 2, dev) and largest < 1024:
            largest *= 2
        for batch in sorted({32, largest}):
            for data in ("memory", "procedural"):
                try:
                    dt, peak = time_steps(name, batch, dev, data, args.steps, warmup=3)
                except torch.OutOfMemoryError:
                    print(f"| {name} | {batch} | {data} | OOM | | |", flush=True)
                    torch.cuda.empty_cache()
                    continue
                print(f"| {name} | {batch} | {data} | {dt:.3f} | {batch / dt:.1f} | {peak:.1f} |", flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
