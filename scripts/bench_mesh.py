#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Seconds per stage of head-mesh extraction (density grid, marching cubes, clean-up, labels/colours,
texture bake), on an analytic field and on the generator, on CPU (and CUDA when available).

    .venv/bin/python scripts/bench_mesh.py [--resolutions 256 512] [--texture 2048] [--threads 2]
                                           [--configs default] [--model FOLDER] [--no-bake]
                                           [--isosurface auto|mcubes|tetrahedra]

The generator rows use untrained weights unless --model is given (the density level is then set at
the 70th percentile of a coarse sample so that a surface exists); the grid stage costs the same
either way, while marching cubes and clean-up depend on how complex the surface is. --isosurface picks
the extractor of the "mcubes" column (tetrahedra: the pure-numpy fallback; scripts/bench_isosurface.py
compares the two on one grid).
"""
from __future__ import annotations

import argparse
import math
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
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
