# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d dataset``: build training datasets (``procedural``: rendered procedural heads)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ide3d_core.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="build a training dataset (procedural heads with exact labels)",
                       description=__doc__)
    kinds = p.add_subparsers(dest="dataset_kind", metavar="KIND")
    proc = kinds.add_parser(
        "procedural", help="render procedural 3D heads with exact label masks and camera labels",
        description="Render COUNT procedural heads (one FFHQ-like view each) into DIR in the EG3D/IDE-3D "
                    "layout: images/, images/dataset.json (25-float camera labels), masks/ (label ids "
                    "0..18) and masks_color/.")
    proc.add_argument("--count", type=int, required=True, help="number of images")
    proc.add_argument("--resolution", type=int, required=True, help="image size in pixels (square)")
    proc.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    proc.add_argument("--out", type=Path, required=True, help="output folder")
    proc.add_argument("--device", default="cpu", help="torch device (default cpu)")
    proc.add_argument("--batch-size", type=int, default=16, help="heads rendered together (default 16)")
    proc.add_argument("--antialias", type=int, default=2, help="rays per pixel side for RGB (default 2)")
    proc.add_argument("--no-color-masks", action="store_true", help="skip the colourised masks")
    proc.set_defaults(func=run_procedural)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def run_procedural(args: argparse.Namespace) -> int:
    import torch

    from ide3d_core.progress import TqdmProgress
    from training.procedural.dataset import write_dataset

    if args.count < 1:
        raise UserError(f"--count must be positive, got {args.count}")
    if not 8 <= args.resolution <= 4096:
        raise UserError(f"--resolution must be within 8..4096, got {args.resolution}")
    if args.batch_size < 1 or args.antialias < 1:
        raise UserError("--batch-size and --antialias must be positive")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    if (args.out / "images" / "dataset.json").exists():
        raise UserError(f"{args.out} already holds a dataset (images/dataset.json); choose another --out")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise UserError(f"bad --device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    with TqdmProgress("procedural heads") as bar:
        result = write_dataset(args.out, args.count, args.resolution, args.seed, device, args.batch_size,
                               args.antialias, color_masks=not args.no_color_masks, progress=bar)
    print(f"wrote {result.count} images to {result.out}")
    return 0
