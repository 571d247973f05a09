#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Seconds per stage of head-mesh extraction (density grid, marching cubes, clean-up, labels/colours,
texture bake), on an analytic field and on the generator, on CPU (and CUDA when available).

    .venv/bin/python scripts/bench_mesh.py [--resolutions 256 512] [--texture 2048] [--threads 2]
                                           [--configs default] [--model FOLDER] [--no-bake]
                                           [--isosurface auto|mcubes|tetrahedra]
    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_mesh.py --compare --threads 1 [--repeats 3]

``--compare`` (issue 15): the 256^3 mesh without bake of the bundled model (or --model), the old paths
beside the new one in one run with their ratio, whole and per stage (:func:`compare_rows`, also the
mesh rows of scripts/bench_interactive.py).

The generator rows use untrained weights unless --model is given (the density level is then set at
the 70th percentile of a coarse sample so that a surface exists); the grid stage costs the same
either way, while marching cubes and clean-up depend on how complex the surface is. --isosurface picks
the extractor of the "mcubes" column (tetrahedra: the pure-numpy fallback; scripts/bench_isosurface.py
compares the two on one grid).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np
import torch

from ide3d_core.mesh.analytic import AnalyticField, SphereRenderer, sphere_sdf
from ide3d_core.mesh.bake import BakeConfig
from ide3d_core.mesh.cleanup import CleanupConfig
from ide3d_core.mesh.grid import GridConfig
from ide3d_core.mesh.pipeline import MeshConfig, extract_head_mesh

STAGES = ("grid", "marching_cubes", "cleanup", "attributes", "bake")


def _colour(p: torch.Tensor) -> torch.Tensor:
    return torch.stack([0.5 + 0.4 * torch.sin(6 * p[:, 0]), 0.5 + 0.4 * torch.cos(5 * p[:, 1]),
                        0.5 + 0.4 * torch.sin(4 * p[:, 2] + 1)], dim=-1)


def _label(p: torch.Tensor) -> torch.Tensor:
    return torch.where(p[:, 1] > 0.1, 13, 1)


def _row(name: str, res: int, block: int, result, total_no_bake: float) -> str:
    s = result.seconds
    cells = " | ".join(f"{s[k]:7.2f}" if k in s else "      -" for k in STAGES)
    frac = result.queried / res ** 3
    return (f"| {name:<22} | {res:4d} | {'dense' if block == 0 else f'sparse/{block}':>9} | {frac:6.1%} | "
            f"{cells} | {total_no_bake:7.2f} | {result.mesh.num_faces:6d} |")


def _run(field, renderer, res, block, level, texture, faces, isosurface="auto"):
    cfg = MeshConfig(grid=GridConfig(resolution=res, block=block), level=level, isosurface=isosurface,
                     cleanup=CleanupConfig(target_faces=faces),
                     bake=BakeConfig(texture_size=texture) if texture else None)
    if field.device.type == "cuda":
        torch.cuda.synchronize(field.device)
    result = extract_head_mesh(field, cfg, renderer)
    if field.device.type == "cuda":
        torch.cuda.synchronize(field.device)
    total = sum(v for k, v in result.seconds.items() if k != "bake")
    return result, total


def _timed(fn, repeats: int):
    """Median wall ms, median process CPU ms and the last result of ``fn()`` (after one warm-up)."""
    out = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3, out


class _PointsOnly:
    """A generator field without its lattice query (the oldest grid path: bilinear taps per point)."""

    def __init__(self, field):
        self.field, self.device = field, field.device

    def density(self, points):
        return self.field.density(points)

    def query(self, points):
        return self.field.query(points)


def _chamfer(a, b) -> float:
    """Symmetric mean nearest-vertex distance between two meshes' vertices (model units)."""
    from scipy.spatial import cKDTree

    va, vb = a.vertices.astype(np.float64), b.vertices.astype(np.float64)
    return 0.5 * (cKDTree(vb).query(va)[0].mean() + cKDTree(va).query(vb)[0].mean())


def compare_rows(G, ws, level: float, repeats: int, resolution: int = 256) -> list:
    """Issue 15's mesh rows: ``(name, old wall ms, old CPU ms, new wall ms, new CPU ms, notes, target)``.

    Old paths: blocks of 8 with per-point queries and the "dilate" rule (the first sparse grid); blocks
    of 4, "dilate", the lattice query in PyTorch (the default before "grow", though with today's floored
    softplus: the unfloored one cost about 2x more on this CPU's denormals); new: blocks of 4, "grow",
    the fused kernel (``GeneratorField`` impl "auto"). Per-stage rows time each stage alone on the
    previous stage's output; the end-to-end row includes the tri-planes and the kernel's packing.
    """
    from ide3d_core.mesh.attributes import attach_field_attributes
    from ide3d_core.mesh.cleanup import clean
    from ide3d_core.mesh.extract import marching_cubes
    from ide3d_core.mesh.generator_field import GeneratorField
    from ide3d_core.mesh.grid import sample_density_grid

    new_field = GeneratorField(G, ws)
    torch_field = GeneratorField(G, ws, impl="torch")
    configs = {
        "oldest": (_PointsOnly(new_field), MeshConfig(grid=GridConfig(resolution, block=8, refine="dilate"), level=level)),
        "previous": (torch_field, MeshConfig(grid=GridConfig(resolution, block=4, refine="dilate"), level=level)),
        "grow, torch": (torch_field, MeshConfig(grid=GridConfig(resolution, block=4), level=level)),
        "new": (new_field, MeshConfig(grid=GridConfig(resolution, block=4), level=level)),
    }
    res = {k: _timed(lambda f=f, c=c: extract_head_mesh(f, c), repeats) for k, (f, c) in configs.items()}
    n = res["new"]
    frac = lambda k: 100.0 * res[k][2].queried / resolution ** 3  # noqa: E731
    faces = lambda k: res[k][2].mesh.num_faces  # noqa: E731
    rows = [
        (f"{resolution}^3 mesh without bake", res["oldest"][0], res["oldest"][1], n[0], n[1],
         f"blocks of 8, point queries, 'dilate' -> blocks of 4, 'grow', fused kernel; queried {frac('oldest'):.1f} % "
         f"-> {frac('new'):.1f} %; {faces('oldest')} / {faces('new')} faces; Chamfer "
         f"{_chamfer(res['oldest'][2].mesh, n[2].mesh):.2g}", "mesh"),
        ("  previous default: blocks of 4, 'dilate', lattice in PyTorch (softplus floored as now) (old) vs new", res["previous"][0],
         res["previous"][1], n[0], n[1], f"queried {frac('previous'):.1f} %; {faces('previous')} faces; Chamfer "
         f"{_chamfer(res['previous'][2].mesh, n[2].mesh):.2g}", "mesh"),
        ("  'grow' with the lattice in PyTorch (no compiler) (old) vs fused kernel (new)", res["grow, torch"][0],
         res["grow, torch"][1], n[0], n[1], f"{faces('grow, torch')} faces", "mesh"),
    ]
    # stages alone: previous default vs new
    for key in ("previous", "new"):
        f, c = configs[key]
        g = _timed(lambda: sample_density_grid(f, c.grid, c.level), repeats)
        m = _timed(lambda: marching_cubes(g[2], c.level, c.isosurface), repeats)
        cl = _timed(lambda: clean(m[2], c.cleanup), repeats)
        at = _timed(lambda: attach_field_attributes(cl[2], f, chunk=c.grid.chunk), repeats)
        res[key + " stages"] = (g, m, cl, at)
    for i, stage in enumerate(("density grid", "marching cubes (PyMCubes when installed)", "clean-up (floaters, decimation)",
                               "labels and colours")):
        o, w = res["previous stages"][i], res["new stages"][i]
        rows.append((f"  part: {stage}", o[0], o[1], w[0], w[1], "", ""))

    def from_codes():
        with torch.no_grad():
            field = GeneratorField(G, ws)
        return extract_head_mesh(field, configs["new"][1])

    e = _timed(from_codes, repeats)
    rows.append(("  new, end to end from codes (tri-planes + kernel packing + mesh)", float("nan"), float("nan"),
                 e[0], e[1], "", "mesh"))
    return rows


def _compare(args) -> None:
    from ide3d_core.model_loading import BUNDLED_MODEL_DIR, surface_level
    from ide3d_core.networks.io import load_generator

    model = args.model or str(BUNDLED_MODEL_DIR)
    G = load_generator(model).requires_grad_(False)
    with torch.no_grad():
        ws = G.codes_from_seeds([args.seed], truncation_psi=0.7)
    rows = compare_rows(G, ws, surface_level(model), args.repeats, args.resolutions[0])
    print(f"\nmodel {model}, torch {torch.__version__}, {torch.get_num_threads()} threads, seed {args.seed}, "
          f"median of {args.repeats}, 1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print("| measurement | old wall ms | new wall ms | old / new | old CPU ms | new CPU ms | old / new CPU | target |"
          " notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    fmt = lambda x: "" if x != x else f"{x:.0f}"  # noqa: E731
    ratio = lambda a, b: "" if a != a else f"{a / b:.2f}x"  # noqa: E731
    for name, ow, oc, nw, nc, note, target in rows:
        print(f"| {name} | {fmt(ow)} | {fmt(nw)} | {ratio(ow, nw)} | {fmt(oc)} | {fmt(nc)} | {ratio(oc, nc)} | "
              f"{'<= 1000' if target else ''} | {note} |")
    print("\n(process CPU = all threads of this process; on a shared machine closer than the wall time to an "
          "idle machine's cost)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--texture", type=int, default=2048)
    ap.add_argument("--faces", type=int, default=50000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", nargs="*", default=["default"], help="generator presets to time")
    ap.add_argument("--model", default="", help="a trained model folder instead of presets")
    ap.add_argument("--no-bake", action="store_true")
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--isosurface", default="auto", choices=["auto", "mcubes", "tetrahedra"])
    ap.add_argument("--compare", action="store_true", help="issue 15: old paths beside the new one (see above)")
    ap.add_argument("--repeats", type=int, default=3, help="--compare: median of this many runs")
    ap.add_argument("--seed", type=int, default=0, help="--compare: the head's seed (truncation 0.7)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare:
        if args.resolutions == [256, 512]:
            args.resolutions = [256]
        return _compare(args)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    texture = 0 if args.no_bake else args.texture
    print(f"torch {torch.__version__}, {args.threads} CPU threads, texture {texture or 'off'}, "
          f"target {args.faces} faces, iso-surface {args.isosurface}")
    print("| field                  | res  | sampling  | queried | grid    | mcubes  | cleanup | attribs | "
          "bake    | no-bake | faces  |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dev_name in devices:
        dev = torch.device(dev_name)
        center, radius = (0.0, 0.02, 0.08), 0.22
        analytic = AnalyticField(sphere_sdf(center, radius), label=_label, color=_colour, device=dev)
        renderer = SphereRenderer(center, radius, _colour, 256, 256)
        for res in args.resolutions:
            for block in (0, 8):
                result, total = _run(analytic, renderer, res, block, 10.0, texture, args.faces, args.isosurface)
                print(_row(f"analytic sphere {dev_name}", res, block, result, total), flush=True)
        gens = []
        if args.model:
            from ide3d_core.networks import load_generator
            from ide3d_core.mesh.level import read_level

            gens.append(("model", load_generator(args.model, device=dev_name), read_level(args.model)))
        else:
            from ide3d_core.networks import CONFIGS, Generator
            gens += [(name, Generator(CONFIGS[name], seed=0).to(dev), "auto") for name in args.configs]
        from ide3d_core.mesh.generator_field import GeneratorField, GeneratorRenderer
        for name, g, level in gens:
            g = g.eval().requires_grad_(False)
            t = time.perf_counter()
            field = GeneratorField(g, g.codes_from_seeds([1], truncation_psi=0.7))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            planes_s = time.perf_counter() - t
            if level == "auto":
                probe = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0)) * 0.9 - 0.45
                level = float(np.quantile(field.density(probe.to(dev)).cpu().numpy(), 0.7))
            print(f"| {name} {dev_name}: tri-planes once {planes_s:.2f} s, level {level:.3g} | | | | | | | | | | |")
            for res in args.resolutions:
                for block in (0, 8):
                    if block == 0 and res > 256 and dev.type == "cpu":
                        continue  # dense 512^3 of the generator on 2 CPU cores takes minutes
                    result, total = _run(field, GeneratorRenderer(field), res, block, level, texture, args.faces,
                                         args.isosurface)
                    print(_row(f"{name} {dev_name}", res, block, result, total), flush=True)


if __name__ == "__main__":
    main()
