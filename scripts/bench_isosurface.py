#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Iso-surface extraction: PyMCubes beside the pure-numpy marching tetrahedra fallback
(ide3d_core.mesh.isosurface, what Python 3.13 / Blender 5.1+ get), on the same density grid.

    .venv/bin/python scripts/bench_isosurface.py [--model FOLDER] [--resolution 256] [--repeats 3]
                                                 [--target-faces 50000] [--grid-cache FILE.npy]

Rows: a 256^3 grid of the model (seed 0, its calibrated surface level, block-sparse sampling as in
Import Head Mesh) and of an analytic sphere. Columns: the iso-surface stage (best of --repeats, CPU
seconds of this process and wall seconds), its output size, then the clean-up the pipeline runs next
(floaters, smoothing, decimation to --target-faces; it sees the fallback's ~3x more triangles), and
the ratios of the fallback's CPU seconds to PyMCubes' (iso-surface stage; iso-surface + clean-up).
CPU seconds are what to compare on a loaded machine (wall seconds there include waiting for a core).
Use OMP_NUM_THREADS=1 for one core.
--grid-cache keeps the model's sampled grid in a .npy file (delete it after changing the model).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ide3d_core.mesh.cleanup import CleanupConfig, clean
from ide3d_core.mesh.extract import marching_cubes
from ide3d_core.mesh.grid import DensityGrid, GridConfig, sample_density_grid
from ide3d_core.mesh.isosurface import mcubes_available


def _model_grid(folder: str, cfg: GridConfig, cache: str) -> tuple[DensityGrid, float, float]:
    from ide3d_core.mesh.generator_field import GeneratorField
    from ide3d_core.model_loading import BUNDLED_MODEL_DIR, surface_level
    from ide3d_core.networks import load_generator

    level = surface_level(folder)
    if cache and Path(cache).is_file():
        return DensityGrid(np.load(cache), cfg), level, 0.0
    g = load_generator(folder or BUNDLED_MODEL_DIR).eval().requires_grad_(False)
    t = time.perf_counter()
    with torch.no_grad():
        grid = sample_density_grid(GeneratorField(g, g.codes_from_seeds([0], truncation_psi=0.7)), cfg, level)
    seconds = time.perf_counter() - t
    if cache:
        np.save(cache, grid.density)
    return grid, level, seconds


def _time(grid: DensityGrid, level: float, method: str, repeats: int):
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        mesh = marching_cubes(grid, level, method)
        best_wall, best_cpu = min(best_wall, time.perf_counter() - w), min(best_cpu, time.process_time() - c)
    return mesh, best_wall, best_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="model folder (default: the bundled model)")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target-faces", type=int, default=50000)
    ap.add_argument("--grid-cache", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = (["mcubes"] if mcubes_available() else []) + ["tetrahedra"]
    cfg = GridConfig(resolution=args.resolution)
    grids = []
    grid, level, secs = _model_grid(args.model, cfg, args.grid_cache)
    grids.append((f"model {args.model or 'bundled'} seed 0", grid, level))
    from ide3d_core.mesh.analytic import AnalyticField, sphere_sdf

    sphere = AnalyticField(sphere_sdf((0.0, 0.02, 0.08), 0.22))
    grids.append(("analytic sphere r 0.22",
                  sample_density_grid(sphere, GridConfig(resolution=args.resolution, block=0), 10.0), 10.0))
    print(f"numpy {np.__version__}, grid {args.resolution}^3 (model grid sampled in {secs:.1f} s), "
          f"best of {args.repeats}, clean-up to {args.target_faces} faces")
    print("| grid | extractor | iso-surface CPU s | wall s | vertices | faces | clean-up CPU s | wall s | "
          "faces after | ratio iso | ratio iso + clean-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, grid, level in grids:
        base = None
        for method in methods:
            mesh, wall, cpu = _time(grid, level, method, args.repeats)
            w, c = time.perf_counter(), time.process_time()
            cleaned = clean(mesh, CleanupConfig(target_faces=args.target_faces))
            clean_wall, clean_cpu = time.perf_counter() - w, time.process_time() - c
            base = (cpu, cpu + clean_cpu) if base is None else base
            print(f"| {name} | {method} | {cpu:.2f} | {wall:.2f} | {mesh.num_vertices} | {mesh.num_faces} | "
                  f"{clean_cpu:.2f} | {clean_wall:.2f} | {cleaned.num_faces} | {cpu / base[0]:.2f} | "
                  f"{(cpu + clean_cpu) / base[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
