# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d train-background``: give a model folder an environment background fitted to a head bank.

    ide3d train-background --model DIR --bank RUN/bank --out NEW_DIR [--hidden 64] [--steps 3000]
                           [--minutes M] [--threads 1]

Reads the model (generator and standard encoder), adds (or continues) its environment background
(:mod:`ide3d_core.networks.background`), fits only that network to the bank heads' backdrops
(:mod:`training.autodecoder.background_fit`) and writes ``NEW_DIR``: a copy of the model folder whose
generator has the background (float16), plus ``background_fit.json`` with the fit's figures. The source
folder is never changed; ``NEW_DIR`` must not exist yet.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ide3d_core.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-background", help="fit a model's environment background to a head bank",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model folder (generator + encoders/standard)")
    p.add_argument("--bank", type=Path, required=True, help="an auto-decoder run's bank folder (RUN/bank)")
    p.add_argument("--out", type=Path, required=True, help="new model folder to write (must not exist)")
    p.add_argument("--hidden", type=int, default=64, help="hidden width of a new background network (default 64)")
    p.add_argument("--steps", type=int, default=3000, help="Adam steps (default 3000)")
    p.add_argument("--minutes", type=float, default=None, help="stop earlier after this wall time")
    p.add_argument("--holdout", type=int, default=32, help="bank heads kept out of the fit (default 32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from training.autodecoder.background_fit import BackgroundFitConfig, fit_background_folder

    torch.set_num_threads(max(1, args.threads))
    if args.out.exists():
        raise UserError(f"{args.out} exists; give a new folder")
    for need in (args.model / "config.json", args.model / "encoders" / "standard" / "config.json"):
        if not need.is_file():
            raise UserError(f"{need} not found: --model must be a model folder with a standard encoder")
    if not args.bank.is_dir():
        raise UserError(f"{args.bank}: no such bank folder")
    try:
        cfg = BackgroundFitConfig(steps=args.steps, holdout=args.holdout)
    except ValueError as e:
        raise UserError(str(e)) from None

    def progress(done: int, total: int, message: str = "") -> None:
        print(f"[{done}/{total}] {message}", flush=True)

    stats = fit_background_folder(args.model, args.bank, args.out, cfg, hidden=args.hidden, progress=progress,
                                  minutes=args.minutes)
    print(json.dumps(stats, indent=2))
    return 0
