# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d train-autodecoder``: the CPU recipe of the bundled model (training/autodecoder), in sittings.

    ide3d train-autodecoder --out RUN [--minutes 150] [--threads 1] [--bank-size 512] [--init-from DIR]
                            [--init-codes encoder]   # a new run restarted from an exported model
    ide3d train-autodecoder --out RUN --decay-start 5600 --decay-steps 3000   # cosine LR decay from a step
    ide3d train-autodecoder --out RUN --polish-sr 15   # train only the super-resolution, on cached renders
    ide3d train-autodecoder --out RUN --polish-sr-adversarial 10   # the same with a patch discriminator
    ide3d train-autodecoder --out RUN --export DIR     # fit the code prior, write a generator folder

A run folder is resumed whenever it already holds a run (its own configuration wins; options that would
change it are refused, except the learning-rate schedule, which is a function of the step and may be set
on an existing run). Ctrl-C or SIGTERM ends the current step and writes a checkpoint.
"""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

from ide3d_core.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-autodecoder", help="train the bundled model's CPU recipe (auto-decoder + code prior)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run folder (keep it outside the work tree)")
    p.add_argument("--minutes", type=float, default=None, help="stop with a checkpoint after this wall time")
    p.add_argument("--steps", type=int, default=None, help="stop with a checkpoint at this step")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: leave a core free)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the tri-plane synthesis (needs a C compiler; minutes to compile, then "
                        "faster steps: scripts/bench_autodecoder.py)")
    p.add_argument("--bank-size", type=int, default=None, help="heads in the bank of a new run (default 512)")
    p.add_argument("--init-from", type=Path, default=None, help="generator folder a new run starts from")
    p.add_argument("--init-codes", choices=("mapping", "encoder"), default=None,
                   help="how a new run's codes start: the starting model's mapping of each latent (default) or "
                        "its standard encoder on each head's cached view (a restart from an exported model)")
    p.add_argument("--decay-start", type=int, default=None, metavar="STEP",
                   help="cosine learning-rate decay from this step (0: constant); may be set on an existing run")
    p.add_argument("--decay-steps", type=int, default=None, help="steps of the cosine decay (default 3000)")
    p.add_argument("--decay-floor", type=float, default=None, help="final learning-rate factor (default 0.05)")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="instead of training: fit the code prior and write a generator folder to DIR")
    p.add_argument("--polish-sr", type=float, default=None, metavar="MINUTES",
                   help="instead of training: train only the super-resolution on cached renders of the bank "
                        "heads for MINUTES (training/autodecoder/sr_polish.py), then checkpoint")
    p.add_argument("--polish-sr-adversarial", type=float, default=None, metavar="MINUTES",
                   help="instead of training: train only the super-resolution against a patch discriminator "
                        "(plus the L1 losses) for MINUTES (training/autodecoder/sr_adversarial.py), then checkpoint")
    p.add_argument("--prior-dim", type=int, default=None, help="PCA dimensions per code group of --export")
    p.add_argument("--prior-components", type=int, default=None, help="mixture components of --export")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from ide3d_core.progress import CancelToken
    from ide3d_core.atomic_file import write_atomic
    from training.autodecoder.loop import CONFIG_FILE, SCHEDULE_KEYS, AutoDecoderConfig, train

    torch.set_num_threads(max(1, args.threads))
    if args.export is not None:
        from training.autodecoder.prior import export_run

        kwargs = {k: v for k, v in (("dim", args.prior_dim), ("components", args.prior_components)) if v}
        folder = export_run(args.out, args.export, **kwargs)
        print(f"wrote {folder}")
        return 0
    if args.polish_sr is not None:
        from training.autodecoder.sr_polish import polish_superresolution

        print(polish_superresolution(args.out, args.polish_sr))
        return 0
    if args.polish_sr_adversarial is not None:
        from training.autodecoder.sr_adversarial import polish_superresolution_adversarial

        print(polish_superresolution_adversarial(args.out, args.polish_sr_adversarial))
        return 0
    new = not (args.out / CONFIG_FILE).exists()
    cfg = None
    if new:
        cfg = AutoDecoderConfig()
        if args.bank_size:
            cfg = dataclasses.replace(cfg, bank=dataclasses.replace(cfg.bank, size=args.bank_size))
        if args.init_from:
            cfg = dataclasses.replace(cfg, init_from=str(args.init_from))
        if args.init_codes:
            cfg = dataclasses.replace(cfg, init_codes=args.init_codes)
    elif args.bank_size or args.init_from or args.init_codes:
        raise UserError(f"{args.out} already holds a run: --bank-size/--init-from/--init-codes apply to new runs "
                        "only")
    schedule = {k: getattr(args, k) for k in SCHEDULE_KEYS if getattr(args, k) is not None}
    if schedule and new:
        cfg = dataclasses.replace(cfg, **schedule)
    elif schedule:  # the schedule of an existing run: rewrite its config (the step decides the rate)
        import json

        saved = args.out / CONFIG_FILE
        old = AutoDecoderConfig.from_dict(json.loads(saved.read_text()))
        write_atomic(saved, (json.dumps(dataclasses.replace(old, **schedule).to_dict(), indent=2) + "\n").encode())
        print(f"schedule of {args.out}: {schedule}")
    cancel = CancelToken()
    previous = signal.signal(signal.SIGTERM, lambda *_: cancel.cancel())

    def progress(done: int, total: int, message: str) -> None:
        if done % 50 == 0:
            print(f"[{done}] {message}", flush=True)

    try:
        path = train(args.out, cfg, minutes=args.minutes, max_steps=args.steps, progress=progress, cancel=cancel,
                     compile_synthesis=args.compile)
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)  # the caller's handler again (the CLI may run in-process)
    print(f"checkpoint {path}")
    return 0
