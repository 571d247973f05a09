# SPDX-License-Identifier: GPL-3.0-or-later
"""Generator benchmark: prints tables (CPU always; GPU when CUDA is available).

    .venv/bin/python scripts/bench_generator.py [--threads 2] [--repeats 5] [--skip-gpu]

CPU (``default`` config, batch 1): ms per 256 px frame (mapping + tri-planes + rendering + SR), ms per
re-render with cached tri-planes (a camera change), ms for the tri-planes alone, field queries per
second, parameter counts of every config.
GPU (``paper`` config): ms per 512 px image at batch 1 and 8, neural rendering 64 and 128, cached
re-render frames/s, field queries/s; eager and CUDA graphs, fp32 (TF32) and bf16 autocast.
Reference (official EG3D generator, random weights, its CUDA ops, fp32, same H100): 29.8 ms per 512 px
image at batch 1, 109 images/s at batch 8 with 128 px rendering, 197 images/s at batch 8 with 64 px,
75 frames/s re-rendering with cached planes.
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch

from ide3d_core.cameras import orbit_camera, stack_labels
from ide3d_core.networks import CONFIGS, Generator


def cameras(batch: int, device) -> torch.Tensor:
    yaws = [0.4 * ((i % 5) - 2) / 2 for i in range(batch)]
    return torch.from_numpy(stack_labels([orbit_camera(y, 0.05) for y in yaws])).to(device)


def cpu_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock ms and median process CPU ms (all threads) of ``fn``. On a shared machine the
    wall time grows with the load; the CPU time much less."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, p0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - p0)
    return statistics.median(wall) * 1000.0, statistics.median(cpu) * 1000.0


def param_table() -> None:
    print("\n| config | parameters | float16 size | output | neural | planes | samples |")
    print("|---|---|---|---|---|---|---|")
    for name, cfg in CONFIGS.items():
        with torch.device("meta"):
            n = sum(p.numel() for p in Generator(cfg).parameters())
        print(f"| {name} | {n:,} | {n * 2 / 1e6:.1f} MB | {cfg.img_resolution} | {cfg.neural_resolution} | "
              f"{cfg.plane_resolution} | {cfg.coarse_samples}+{cfg.fine_samples} |")


@torch.no_grad()
def cpu_section(repeats: int) -> None:
    print(f"\n## CPU ({torch.get_num_threads()} threads), config 'default', batch 1, median of {repeats}")
    G = Generator("default").eval()
    c = cameras(1, "cpu")
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0))
    ws = G.mapping(z, G.canonical_labels(1))
    planes = G.planes(ws)
    pts = torch.rand(1, 1 << 16, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    rows = [
        ("full frame 256 px (mapping + planes + render + SR)",
         cpu_time(lambda: G(G.mapping(z, G.canonical_labels(1)), c), repeats)),
        ("tri-planes only", cpu_time(lambda: G.planes(ws), repeats)),
        ("re-render with cached tri-planes (camera change)", cpu_time(lambda: G.render(planes, c, ws), repeats)),
    ]
    q_ms = cpu_time(lambda: G.query(planes, pts), repeats)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows.append(("full frame, bf16 autocast", cpu_time(lambda: G(ws, c), repeats)))
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"(1-minute load average {load:.1f} on {os.cpu_count()} cores)")
    print("| measurement | wall ms | process CPU ms |")
    print("|---|---|---|")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall:.0f} | {cpu:.0f} |")
    print(f"| field queries, {pts.shape[1]:,} points per call | {q_ms[0]:.0f} "
          f"({pts.shape[1] / q_ms[0] * 1000 / 1e6:.2f} M points/s) | {q_ms[1]:.0f} |")


def gpu_time(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


@torch.no_grad()
def gpu_section(repeats: int) -> None:
    from ide3d_core.networks.cuda_graph import GraphedForward, GraphedRender

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    print(f"\n## GPU: {torch.cuda.get_device_name(dev)}, config 'paper' (512 px), median of {repeats}")
    G = Generator("paper").to(dev).eval()
    print("| batch | neural | mode | ms / batch | ms / image | images/s | re-render frames/s (cached planes) |")
    print("|---|---|---|---|---|---|---|")
    for batch in (1, 8):
        for neural in (64, 128):
            z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(0)).to(dev)
            c = cameras(batch, dev)
            ws = G.mapping(z, G.canonical_labels(batch))
            planes = G.planes(ws)
            for graph in (False, True):
                for dtype in (None, torch.bfloat16):
                    mode = ("graph" if graph else "eager") + (" bf16" if dtype else " fp32")
                    try:
                        if graph:
                            full = GraphedForward(G, ws, c, neural, autocast_dtype=dtype)
                            rer = GraphedRender(G, planes, c, ws, neural, autocast_dtype=dtype)
                            f_ms = gpu_time(lambda: full(), repeats)
                            r_ms = gpu_time(lambda: rer(), repeats)
                            del full, rer
                        else:
                            ctx = (lambda: torch.autocast("cuda", dtype=dtype)) if dtype else nullcontext

                            def f():
                                with ctx():
                                    G(ws, c, neural_resolution=neural)

                            def r():
                                with ctx():
                                    G.render(planes, c, ws, neural_resolution=neural)

                            f_ms, r_ms = gpu_time(f, repeats), gpu_time(r, repeats)
                    except torch.cuda.OutOfMemoryError:
                        print(f"| {batch} | {neural} | {mode} | out of memory | | | |")
                        torch.cuda.empty_cache()
                        continue
                    print(f"| {batch} | {neural} | {mode} | {f_ms:.1f} | {f_ms / batch:.2f} | "
                          f"{1000 * batch / f_ms:.0f} | {1000 * batch / r_ms:.0f} |")
                    torch.cuda.empty_cache()
    planes = G.planes(G.codes_from_seeds([0]))
    pts = (torch.rand(1, 1 << 21, 3, generator=torch.Generator().manual_seed(1)) - 0.5).to(dev)
    for dtype in (None, torch.bfloat16):
        ctx = torch.autocast("cuda", dtype=dtype) if dtype else nullcontext()
        with ctx:
            ms = gpu_time(lambda: G.query(planes, pts), repeats)
        print(f"field queries ({'bf16' if dtype else 'fp32'}): {pts.shape[1] / ms * 1000 / 1e6:.0f} M points/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-gpu", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    param_table()
    if not args.skip_cpu:
        cpu_section(args.repeats)
    if torch.cuda.is_available() and not args.skip_gpu:
        gpu_section(args.repeats)
    elif not args.skip_gpu:
        print("\n(no CUDA device: GPU section skipped)")


if __name__ == "__main__":
    main()
