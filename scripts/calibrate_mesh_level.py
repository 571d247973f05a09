# SPDX-License-Identifier: GPL-3.0-or-later
"""Measure a trained model's mesh surface level and store it beside its weights (mesh_level.json).

Prints the mean and minimum silhouette IoU (mesh at each candidate level vs the neural opacity mask > 0.5)
over the calibration seeds and yaws; see ide3d_core/mesh/level.py.

    .venv/bin/python scripts/calibrate_mesh_level.py --model ide3d_core/models/default --write
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ide3d_core.mesh.level import calibrate_level, write_level
from ide3d_core.model_loading import load_base_generator, model_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="model folder (default: the bundled model)")
    ap.add_argument("--seeds", default="100-105", help="calibration seeds, A-B (keep them apart from tests' 0..5)")
    ap.add_argument("--yaws", type=float, nargs="+", default=[-35.0, 0.0, 35.0])
    ap.add_argument("--grid", type=int, default=128)
    ap.add_argument("--write", action="store_true", help="write mesh_level.json into the model folder")
    args = ap.parse_args()
    a, b = (int(x) for x in args.seeds.split("-"))
    g = load_base_generator(args.model, torch.device("cpu"))
    t0 = time.perf_counter()
    cal = calibrate_level(g, range(a, b + 1), args.yaws, grid_resolution=args.grid)
    print(f"| level | mean IoU | min IoU |   ({len(cal.seeds)} seeds x {len(cal.yaws_deg)} yaws, "
          f"{time.perf_counter() - t0:.0f} s)")
    print("|---|---|---|")
    for lv, vals in cal.table.items():
        mark = " (chosen)" if lv == cal.level else ""
        print(f"| {lv:g}{mark} | {np.mean(vals):.3f} | {np.min(vals):.3f} |")
    if args.write:
        print(f"wrote {write_level(model_folder(args.model) or Path('.'), cal)}")


if __name__ == "__main__":
    main()
