# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the procedural-head renderer, and the class-frequency table of docs/procedural_heads.md.

Usage:
    .venv/bin/python scripts/bench_procedural.py                 # images/s at 64, 128, 256 px (CPU, CUDA if any)
    .venv/bin/python scripts/bench_procedural.py --frequencies 500 --freq-resolution 64

Images/s counts complete training samples: fresh heads + cameras drawn, RGB (antialias 2), labels, depth
and mask rendered (what ProceduralStream delivers). CPU runs use ``--threads`` torch threads (default 2).
Wall time and process CPU time are both printed: on a shared machine the wall figure includes waiting
for the CPU (the load average is printed too). On an oversubscribed CPU, two threads can be much slower
than one (OpenMP spin-waiting); try ``--threads 1`` or ``OMP_WAIT_POLICY=PASSIVE``.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from ide3d_core.labels import NAMES, NUM_CLASSES
from training.procedural import ProceduralStream


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(device: torch.device, resolution: int, batch: int, seconds: float, antialias: int) -> tuple[float, float]:
    """(images per second of wall time, images per second of process CPU time)."""
    stream = ProceduralStream(batch, resolution, seed=0, device=device, antialias=antialias)
    next(stream)  # warm-up
    _sync(device)
    n, w0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < seconds or n == 0:
        next(stream)
        n += batch
    _sync(device)
    return n / (time.perf_counter() - w0), n / max(time.process_time() - c0, 1e-9)


def frequencies(count: int, resolution: int, batch: int, device: torch.device) -> None:
    """Markdown table: share of images showing each class and its mean area."""
    stream = ProceduralStream(batch, resolution, seed=1234, device=device)
    images = torch.zeros(NUM_CLASSES, dtype=torch.int64)
    pixels = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    done = 0
    while done < count:
        r = next(stream)
        lab = r.labels[: count - done].cpu()
        for i in range(lab.shape[0]):
            c = torch.bincount(lab[i].reshape(-1), minlength=NUM_CLASSES)
            images += c > 0
            pixels += c.double() / lab[i].numel()
        done += lab.shape[0]
    print(f"\nClass frequencies over {count} procedural views (seed 1234, {resolution} px, FFHQ-like poses)\n")
    print("| id | class | images showing it | mean area (% of image) |")
    print("|---:|---|---:|---:|")
    for i, name in enumerate(NAMES):
        print(f"| {i} | {name} | {100.0 * images[i] / count:.1f} % | {100.0 * pixels[i] / count:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    ap.add_argument("--resolutions", default="64,128,256")
    ap.add_argument("--antialias", type=int, default=2)
    ap.add_argument("--cpu-batch", type=int, default=8)
    ap.add_argument("--cuda-batch", type=int, default=256)
    ap.add_argument("--frequencies", type=int, default=0, help="also print the class table over N views")
    ap.add_argument("--freq-resolution", type=int, default=64)
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if not args.skip_speed:
        print(f"torch {torch.__version__}, CPU threads {args.threads}, load average {os.getloadavg()[0]:.1f}, "
              f"antialias {args.antialias}")
        print("| device | resolution | batch | images/s (wall) | images/s (CPU time) |")
        print("|---|---:|---:|---:|---:|")
        for dev in devices:
            name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
            batch = args.cuda_batch if dev.type == "cuda" else args.cpu_batch
            for res in (int(x) for x in args.resolutions.split(",")):
                b = batch if dev.type == "cuda" else max(1, batch * 64 * 64 // (res * res))
                wall, cpu = bench(dev, res, b, args.seconds, args.antialias)
                cpu_txt = f"{cpu:.1f}" if dev.type == "cpu" else "-"
                print(f"| {name} | {res} | {b} | {wall:.1f} | {cpu_txt} |", flush=True)
    if args.frequencies:
        frequencies(args.frequencies, args.freq_resolution, 32 if devices[-1].type == "cuda" else 16, devices[-1])


if __name__ == "__main__":
    main()
