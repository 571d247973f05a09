# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d generate``: portraits, label maps and codes for a list of seeds and views.

    ide3d generate --seeds 0-7 [--truncation PSI] [--yaw DEG ...] [--pitch DEG] [--model PATH]
                   [--config tiny|default|paper] --out DIR

Per seed: ``seed0003_ws.npy`` (the [num_ws, w_dim] float32 codes). Per seed and view
(``seed0003_yaw+30_pitch+0``): ``<name>.png`` (RGB), ``<name>_labels.png`` (single-channel label ids
0..18, :mod:`ide3d_core.labels`) and ``<name>_seg.png`` (the ids in the label palette). The default view
is the canonical front camera; yaw and pitch are degrees of :func:`ide3d_core.cameras.orbit_camera`.
The default model is the bundled one (``ide3d_core/models/default``); ``--model`` means what it means
for every command (a missing folder is an error); ``--config`` asks for an untrained generator of a
preset (weights seeded with 0, with a warning).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ide3d_core.cli import UserError
from ide3d_core.image_files import save_npy
from ide3d_core.commands.model_args import device_arg, load_base
from ide3d_core.operations import OperationError
from ide3d_core.operations.limits import check_truncation


def parse_seeds(spec: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]`` (order kept, duplicates dropped)."""
    out: list[int] = []
    for part in spec.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise UserError(f"bad seed list {spec!r}: use e.g. 0-7 or 1,5,9") from None
        if last < first:
            raise UserError(f"bad seed range {part.strip()!r}: the end is below the start")
        out.extend(range(first, last + 1))
    if not out or any(s < 0 for s in out):
        raise UserError(f"bad seed list {spec!r}: seeds are non-negative integers")
    return list(dict.fromkeys(out))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate portraits, label maps and codes from seeds",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0-7 or 1,5,9 (default 0)")
    p.add_argument("--truncation", type=float, default=None,
                   help="truncation in [0, 1]: 1 = full variety, 0 = the average face (default: the model's; "
                        "1 for a model with a code prior such as the bundled one, 0.7 for a mapping network)")
    p.add_argument("--yaw", type=float, nargs="+", default=[0.0], metavar="DEG",
                   help="one or more camera yaws in degrees (default 0: front)")
    p.add_argument("--pitch", type=float, default=0.0, metavar="DEG", help="camera pitch in degrees")
    p.add_argument("--model", type=Path, default=None,
                   help="model folder (config.json + generator.safetensors); default: the bundled model")
    p.add_argument("--config", choices=("tiny", "default", "paper"), default=None,
                   help="untrained generator of this preset (instead of --model)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _model_spec(args: argparse.Namespace) -> str:
    """The :mod:`ide3d_core.model_loading` spec of ``--model`` / ``--config`` (see the module docstring)."""
    if args.model is not None and args.config is not None:
        raise UserError("--config chooses an untrained generator; do not combine it with --model")
    if args.model is not None:
        return str(args.model)
    if args.config is not None:
        return f"config:{args.config}"
    return ""  # the bundled model; like every command, a missing one is an error naming --model


def run(args: argparse.Namespace) -> int:
    import torch

    from ide3d_core.cameras import orbit_camera
    from ide3d_core.images import to_uint8_hwc, write_view_triplet
    from ide3d_core.progress import TqdmProgress

    seeds = parse_seeds(args.seeds)
    if not -89.0 < args.pitch < 89.0:
        raise UserError(f"--pitch must be within (-89, 89) degrees, got {args.pitch}")
    try:
        if args.truncation is not None:
            check_truncation(args.truncation, "--truncation")
    except OperationError as exc:
        raise UserError(str(exc)) from None
    device = device_arg(args.device)
    G = load_base(_model_spec(args), device)
    truncation = G.default_truncation if args.truncation is None else args.truncation
    args.out.mkdir(parents=True, exist_ok=True)
    views = [(yaw, orbit_camera(math.radians(yaw), math.radians(args.pitch))) for yaw in args.yaw]
    written: list[Path] = []
    total = len(seeds) * len(views)
    with TqdmProgress("generate", disable=args.quiet) as progress, torch.no_grad():
        for k, seed in enumerate(seeds):
            ws = G.codes_from_seeds([seed], truncation_psi=truncation)
            planes = G.planes(ws)
            path = args.out / f"seed{seed:04d}_ws.npy"
            save_npy(ws[0].float().cpu().numpy(), path)
            written.append(path)
            for j, (yaw, cam) in enumerate(views):
                c = torch.from_numpy(cam.label()).to(device)[None]
                out = G.render(planes, c, ws)
                name = f"seed{seed:04d}_yaw{round(yaw):+d}_pitch{round(args.pitch):+d}"
                ids = out.semantic[0].argmax(0).to(torch.uint8).cpu().numpy()
                written += write_view_triplet(args.out / f"{name}.png", to_uint8_hwc(out.image[0]), ids)
                progress(k * len(views) + j + 1, total, name)
    print(f"wrote {len(written)} files for {len(seeds)} seed(s) x {len(views)} view(s) to {args.out}/")
    return 0
