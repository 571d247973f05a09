# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d train-encoders``: train the inversion encoders and the canonical editor on a generator's samples.

    ide3d train-encoders [--model DIR | --model config:tiny] --out DIR [--steps N] [--preset default]
                         [--which standard,canonical] [--batch 4] [--views 2] [--lr 1e-4]

Writes ``DIR/standard`` and ``DIR/canonical`` (``config.json`` + ``encoder.safetensors`` each). Put
them at ``<model>/encoders`` for ``ide3d invert`` and ``ide3d edit`` to find them, or pass ``--encoders``.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ide3d_core.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-encoders", help="train the inversion encoders and the canonical editor",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model folder, config:NAME (untrained) or nothing (bundled)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--steps", type=int, default=20000, help="training steps per encoder (default 20000)")
    p.add_argument("--preset", choices=("tiny", "default", "paper"), default="default", help="encoder size")
    p.add_argument("--which", default="standard,canonical", help="standard, canonical or both (default)")
    p.add_argument("--batch", type=int, default=4, help="codes per step (default 4)")
    p.add_argument("--views", type=int, default=2, help="views per code for the standard pair (default 2)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--bank", type=int, default=0,
                   help="render this many codes once and train on them (much faster on a CPU; 0 = render every step)")
    p.add_argument("--autodecoder-run", type=Path, default=None, metavar="RUN",
                   help="also put every head of this auto-decoder run in the bank (exact procedural renders "
                        "-> the head's learned codes); --bank N adds N generator samples beside them")
    p.add_argument("--bank-source", choices=("generator", "procedural"), default="generator",
                   help="what the bank holds: the generator's renders, or the procedural heads of the latents "
                        "(for a model distilled from them; about 10x cheaper on a CPU)")
    p.add_argument("--max-channels", type=int, default=0,
                   help="cap on the encoder's channels (default: the preset's; smaller = smaller file)")
    p.add_argument("--resolution", type=int, default=0,
                   help="encoder input resolution (default: the preset's; lower is cheaper on a CPU)")
    p.add_argument("--init", type=Path, default=None, metavar="DIR",
                   help="continue from the encoders in DIR (DIR/standard, DIR/canonical; e.g. MODEL/encoders) "
                        "instead of fresh weights; their config wins over --preset/--resolution/--max-channels")
    p.add_argument("--truncation", type=float, default=None,
                   help="truncation of the generator samples in --bank (default 0.8; 1 matches what a code "
                        "prior's `ide3d generate` draws)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ide3d_core.commands.model_args import device_arg, load_base
    from ide3d_core.encoders import HybridEncoder, config_for_generator, load_encoder, save_encoder
    from ide3d_core.progress import TqdmProgress
    from training.encoders import (EncoderTrainingPolicy, concat_banks, render_autodecoder_bank, render_bank,
                                   render_procedural_bank, train_encoders)

    which = [w.strip() for w in args.which.split(",") if w.strip()]
    if not which or set(which) - {"standard", "canonical"}:
        raise UserError(f"--which takes standard and/or canonical, got {args.which!r}")
    if args.steps < 0 or args.batch < 1 or args.views < 1 or not args.lr > 0 or args.bank < 0:
        raise UserError("--steps >= 0, --batch >= 1, --views >= 1, --bank >= 0 and --lr > 0 are required")
    if args.resolution and (args.resolution < 8 or args.resolution & (args.resolution - 1)):
        raise UserError(f"--resolution must be a power of two >= 8, got {args.resolution}")
    device = device_arg(args.device)
    g = load_base(args.model, device)
    extra = {} if args.truncation is None else {"truncation_psi": args.truncation}
    if args.truncation is not None and not 0.0 <= args.truncation <= 1.0:
        raise UserError(f"--truncation must be in [0, 1], got {args.truncation}")
    policy = EncoderTrainingPolicy(steps=args.steps, batch_codes=args.batch, views=args.views, lr=args.lr,
                                   seed=args.seed, **extra)
    for name in which:
        if args.init is not None:  # the saved encoder's own config
            if not (args.init / name / "config.json").is_file():
                raise UserError(f"--init: no {name} encoder at {args.init / name}")
            enc = load_encoder(args.init / name, device=device).float().train()
            cfg = enc.config
            if bool(cfg.canonical) != (name == "canonical") or cfg.num_shape_ws != g.num_shape_ws:
                raise UserError(f"--init: the encoder at {args.init / name} does not fit this model as its {name} encoder")
        else:
            cfg = config_for_generator(g, args.preset, canonical=name == "canonical")
            if args.resolution:
                cfg = replace(cfg, resolution=args.resolution)
            if args.max_channels:
                cfg = replace(cfg, max_channels=args.max_channels)
            enc = HybridEncoder(cfg, g.mapping.w_avg, seed=args.seed).to(device)
        banks = []
        if args.autodecoder_run:
            with TqdmProgress(f"auto-decoder bank {name}", disable=args.quiet) as progress:
                banks.append(render_autodecoder_bank(g, args.autodecoder_run, args.views, cfg.resolution,
                                                     cfg.canonical, policy, progress=progress))
        if args.bank:
            with TqdmProgress(f"bank {name}", disable=args.quiet) as progress:
                make = render_procedural_bank if args.bank_source == "procedural" else render_bank
                banks.append(make(g, args.bank, args.views, cfg.resolution, cfg.canonical, policy, progress=progress))
        bank = concat_banks(*banks) if banks else None
        with TqdmProgress(f"train {name}", disable=args.quiet) as progress:
            res = train_encoders(g, enc, policy, progress=progress, bank=bank)
        folder = save_encoder(enc, args.out / name)
        last = res.history[-1] if res.history else {}
        terms = "  ".join(f"{k} {v:.4f}" for k, v in last.items())
        print(f"{name}: {args.steps} steps in {res.seconds:.1f} s -> {folder}  ({terms})")
    return 0
