# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d train``: train a generator on procedural heads or a dataset folder; resumable, multi-process.

    ide3d train --config tiny|default|paper --data procedural|DIR --out RUN_DIR [--batch N] [--kimg K] [--resume]
    ide3d train --data procedural --out RUN_DIR --resume-from TRANSFER_DIR --minutes 7 --transfer-out DEST
    torchrun --nproc_per_node=N -m training.commands.train --config default --data procedural --out RUN_DIR

Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a checkpoint and exits; ``--resume``
continues from the newest checkpoint exactly. A hard kill loses only the steps since the last
checkpoint (checkpoints are written atomically).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from ide3d_core.atomic_file import write_text_atomic
from ide3d_core.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a generator (procedural heads or a dataset folder)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", choices=("tiny", "tiny-distill", "default", "default-distill", "paper"), default=None,
                   help="training preset (required for a new run; a resumed run keeps its own)")
    p.add_argument("--data", required=True, help="'procedural' (heads drawn on the fly) or a dataset folder")
    p.add_argument("--out", type=Path, required=True, help="run folder (config, checkpoints, logs, generator)")
    p.add_argument("--batch", type=int, default=None, help="images per step over all processes")
    p.add_argument("--kimg", type=float, default=None, help="length of the run in thousands of images")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--seed", type=int, default=None, help="random seed of a new run (default 0)")
    p.add_argument("--lr", type=float, default=None, help="generator learning rate of a new run (default: the preset's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--no-xflip", action="store_true", help="do not mirror dataset-folder samples")
    p.add_argument("--checkpoint-steps", type=int, default=None, help="checkpoint period in steps")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="stop (with a checkpoint) once this many steps are done, e.g. to train in sittings")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop (with a checkpoint) after this much wall time, e.g. to fit a GPU lease")
    p.add_argument("--resume-from", type=Path, default=None, metavar="TRANSFER_DIR",
                   help="continue from a transfer checkpoint folder (training.transfer), e.g. one carried "
                        "to a GPU lease; imported into --out unless --out is already at or past its step")
    p.add_argument("--transfer-out", type=Path, default=None, metavar="DIR",
                   help="after the sitting, write the newest checkpoint as a compact transfer checkpoint")
    p.add_argument("--transfer-mib", type=float, default=50.0,
                   help="size budget of --transfer-out; Adam moments travel only if they fit (default 50)")
    p.add_argument("--init-from", type=Path, default=None, metavar="GENERATOR_DIR",
                   help="start a new run from a saved generator's weights (e.g. ide3d_core/models/default, "
                        "to continue training the bundled model when the old run folder is gone); "
                        "optimiser state starts afresh")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace):
    from training.config import TRAIN_CONFIGS, TrainConfig

    saved = args.out / "train_config.json"
    if args.resume and (saved.exists() or _checkpoint_config(args.out) is not None):
        try:
            cfg = TrainConfig.load(saved)
        except (ValueError, OSError) as exc:  # JSONDecodeError is a ValueError; a killed old write left it empty
            cfg = _checkpoint_config(args.out)
            if cfg is None:
                raise UserError(f"{saved}: {str(exc)[:120]} (and no checkpoint holds the config)") from None
            print(f"ide3d train: {saved.name} is unreadable; restored it from the newest checkpoint", file=sys.stderr)
            cfg.save(saved)
        if args.config is not None and TRAIN_CONFIGS[args.config].generator != cfg.generator:
            raise UserError(f"{args.out} trains generator {cfg.generator!r}, not {args.config!r}")
        if args.batch is not None and args.batch != cfg.batch_size:
            raise UserError(f"{args.out} was trained with batch {cfg.batch_size}; a resumed run keeps it")
        if args.seed is not None and args.seed != cfg.seed:
            raise UserError(f"{args.out} was trained with seed {cfg.seed}; a resumed run keeps it")
        if args.lr is not None and args.lr != cfg.lr_g:
            raise UserError(f"{args.out} was trained with lr {cfg.lr_g}; a resumed run keeps it")
    else:
        if args.config is None:
            raise UserError("--config is required for a new run")
        cfg = TRAIN_CONFIGS[args.config]
        changes = {}
        if args.batch is not None:
            changes["batch_size"] = args.batch
        if args.seed is not None:
            changes["seed"] = args.seed
        if args.lr is not None:
            if not args.lr > 0:
                raise UserError(f"--lr must be positive, got {args.lr}")
            changes["lr_g"] = args.lr
        if args.no_xflip:
            changes["xflip"] = False
        if args.checkpoint_steps is not None:
            changes["checkpoint_steps"] = args.checkpoint_steps
        try:
            cfg = cfg.replace(**changes)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if args.kimg is not None:
        try:
            cfg = cfg.replace(kimg=args.kimg)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return cfg


def _checkpoint_config(run_dir: Path):
    """The training config stored in the newest readable checkpoint of ``run_dir``, or None."""
    from training import checkpoint as ckpt
    from training.config import TrainConfig

    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        return None
    try:
        return TrainConfig.from_dict(ckpt.load_checkpoint(latest)[1]["config"])
    except (ckpt.CheckpointError, KeyError, TypeError, ValueError):
        return None


def _init_factory(folder: Path | None, run_dir: Path):
    """None, or a generator factory that loads ``folder``'s weights (``--init-from``); the folder is
    recorded in ``RUN_DIR/init_from.json``."""
    if folder is None:
        return None

    def factory(cfg):
        import json

        from ide3d_core.networks import CONFIGS, load_generator

        try:
            G = load_generator(folder).float()
        except (OSError, ValueError) as exc:
            raise UserError(f"--init-from {folder}: {exc}") from None
        if G.config != CONFIGS[cfg.generator]:
            raise UserError(f"--init-from {folder}: its generator config differs from {cfg.generator!r}")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "init_from.json", json.dumps({"generator": str(Path(folder).resolve())}) + "\n")
        return G

    return factory


def run(args: argparse.Namespace) -> int:
    import torch

    from ide3d_core.networks import CONFIGS
    from ide3d_core.progress import CancelToken, TqdmProgress
    from training.data import DatasetError, open_source
    from training.distributed import init_distributed, shutdown
    from training.loop import TrainingError, train

    if args.resume_from is not None:
        _import_transfer(args)
    cfg = _config(args)
    try:
        ctx = init_distributed(args.device)
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    try:
        if ctx.device.type == "cpu":
            torch.set_num_threads(max(1, torch.get_num_threads() // max(ctx.world_size, 1)))
        else:  # process-wide speed settings belong to the entry point, not to the library
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        try:
            source = open_source(args.data, CONFIGS[cfg.generator].img_resolution, cfg.seed, ctx.device,
                                 xflip=cfg.xflip)
        except DatasetError as exc:
            raise UserError(str(exc)) from None
        cancel = CancelToken()
        timer = None
        if args.minutes is not None:
            timer = threading.Timer(max(args.minutes, 0.0) * 60.0, cancel.cancel)
            timer.daemon = True
            timer.start()
        handler = lambda signum, frame: cancel.cancel()  # noqa: E731
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with TqdmProgress(f"train {cfg.generator}", disable=args.quiet or not ctx.is_main) as bar:
                result = train(cfg, source, args.out, ctx=ctx, resume=args.resume, progress=bar,
                               cancel=cancel, stop_at_step=args.stop_at_step,
                               generator_factory=_init_factory(args.init_from, args.out))
        except (TrainingError, DatasetError) as exc:
            raise UserError(str(exc)) from None
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if timer is not None:
                timer.cancel()
        if ctx.is_main:
            state = "finished" if result.finished else "stopped"
            print(f"[train] {state} at step {result.step} ({result.images_seen} images); "
                  f"checkpoint {result.checkpoint}")
            if result.generator_dir is not None:
                print(f"[train] EMA generator: {result.generator_dir}")
            if args.transfer_out is not None:
                from training.transfer import MIB, TransferError, describe, export_run
                try:
                    info = export_run(args.out, args.transfer_out, budget_bytes=int(args.transfer_mib * MIB))
                except TransferError as exc:
                    raise UserError(str(exc)) from None
                print(f"[train] wrote {describe(info)}")
    finally:
        shutdown(ctx)
    return 0


def _import_transfer(args: argparse.Namespace) -> None:
    """Seed ``args.out`` from ``--resume-from`` (one process does it; others wait on the file)."""
    import os

    from training.transfer import TransferError, describe, import_transfer

    if int(os.environ.get("RANK", "0")) != 0:
        raise UserError("--resume-from runs in one process; import first with "
                        "'python -m training.transfer import SRC RUN_DIR', then use --resume under torchrun")
    try:
        info, imported = import_transfer(args.resume_from, args.out)
    except TransferError as exc:
        raise UserError(str(exc)) from None
    if imported:
        print(f"[train] resuming from {describe(info)}")
        if not info.has_moments:
            print("[train] the transfer checkpoint holds no optimiser moments: Adam is re-initialised")
    else:
        print(f"[train] {args.out} is already at or past step {info.step}; resuming from its own checkpoint")
    args.resume = True


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m training.commands.train`` (what torchrun launches)."""
    parser = argparse.ArgumentParser(prog="training.commands.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
