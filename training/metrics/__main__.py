# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m training.metrics --generator DIR --data procedural|DIR [--segnet DIR] [--n 1000] [--json OUT]``

Evaluates a saved generator (a ``save_generator`` folder, e.g. ``RUN_DIR/generator``) against real data
and prints the metrics next to the real-vs-real values (what a perfect generator would score).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ide3d_core.atomic_file import write_text_atomic


def main(argv: list[str] | None = None) -> int:
    from ide3d_core.networks import load_generator
    from training.data import open_source
    from training.metrics.evaluate import evaluate_generator, evaluate_real
    from training.segnet import load_segnet

    ap = argparse.ArgumentParser(prog="python -m training.metrics", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", type=Path, required=True)
    ap.add_argument("--data", default="procedural")
    ap.add_argument("--segnet", type=Path, default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--multiview-heads", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--front-conditioning", action="store_true",
                    help="condition the mapping on the front camera (the project's inference paths) "
                         "instead of each image's camera")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    G = load_generator(args.generator, device=dev).eval()
    segnet = load_segnet(args.segnet, dev) if args.segnet else None
    source = open_source(args.data, G.img_resolution, args.seed, dev, xflip=False)
    fake = evaluate_generator(G, source, args.n, args.batch, args.seed, dev, segnet, args.multiview_heads,
                              front_conditioning=args.front_conditioning)
    real = evaluate_real(source, args.n, args.batch, args.seed, dev, segnet, args.multiview_heads)
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"| metric ({args.n} images) | generator | real vs real |\n|---|---|---|")
    for key in ("swd", "semantic_miou", "multiview_error", "multiview_psnr", "multiview_coverage",
                "label_frequency_tv"):
        print(f"| {key} | {fmt(getattr(fake, key))} | {fmt(getattr(real, key))} |")
    if args.json:
        write_text_atomic(args.json, json.dumps({"generator": fake.to_dict(), "real": real.to_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
