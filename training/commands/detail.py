# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d train-detail``: give a model folder a surface detail stage fitted to procedural heads.

    ide3d train-detail --model DIR --out NEW_DIR [--heads 48] [--views 3] [--inverted-heads 0]
                       [--steps 3000] [--loss l1|l2] [--minutes M] [--threads 1]

Reads the model, adds (or continues) its surface detail (:mod:`ide3d_core.networks.detail`: a shared 3D
hash grid read at the visible surface), fits only that stage (:mod:`training.detail_fit`) and writes
``NEW_DIR``: a copy of the model folder whose generator has the detail (float16), plus ``detail_fit.json``
with the fit's figures. The source folder is never changed; ``NEW_DIR`` must not exist yet.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ide3d_core.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-detail", help="fit a model's surface detail to procedural heads",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model folder (generator, encoders/standard)")
    p.add_argument("--out", type=Path, required=True, help="new model folder to write (must not exist)")
    p.add_argument("--heads", type=int, default=48, help="procedural heads rendered exactly (default 48)")
    p.add_argument("--views", type=int, default=3, help="views per head (default 3)")
    p.add_argument("--inverted-heads", type=int, default=0,
                   help="heads inverted with the model (about 40 s each) whose novel views train it too")
    p.add_argument("--steps", type=int, default=3000, help="Adam steps (default 3000)")
    p.add_argument("--loss", choices=("l1", "l2"), default="l1", help="training loss (default l1)")
    p.add_argument("--minutes", type=float, default=None, help="stop earlier after this wall time")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from training.detail_fit import DetailFitConfig, fit_detail_folder

    torch.set_num_threads(max(1, args.threads))
    if args.out.exists():
        raise UserError(f"{args.out} exists; give a new folder")
    if not (args.model / "config.json").is_file():
        raise UserError(f"{args.model / 'config.json'} not found: --model must be a model folder")
    if args.inverted_heads and not (args.model / "encoders" / "standard" / "config.json").is_file():
        raise UserError("--inverted-heads needs the model's standard encoder (encoders/standard)")
    if args.heads < 0 or args.inverted_heads < 0 or args.views < 1 or args.heads + args.inverted_heads < 1:
        raise UserError("need --views >= 1 and at least one head (--heads or --inverted-heads)")
    try:
        cfg = DetailFitConfig(steps=args.steps, loss=args.loss)
    except ValueError as e:
        raise UserError(str(e)) from None

    def progress(done: int, total: int, message: str = "") -> None:
        print(f"[{done}/{total}] {message}", flush=True)

    stats = fit_detail_folder(args.model, args.out, cfg, heads=args.heads, views=args.views,
                              inverted_heads=args.inverted_heads, progress=progress, minutes=args.minutes)
    print(json.dumps(stats, indent=2))
    return 0
