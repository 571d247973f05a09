# SPDX-License-Identifier: GPL-3.0-or-later
"""A picture of refined mask edits (ide3d_core/shape_residual.py) on the bundled model.

    python scripts/mask_edit_sheet.py [--seeds 100,102] [--out docs/images/mask_edit_refine.png] [--threads 2]

Per seed (``ide3d generate``'s heads at the model's truncation) and per edit of ``scripts/eval_model.py``
(the hair painted out; a hat painted on), one row: the painted canonical map, the portrait before, the
editor's codes alone, then ``ide3d edit``'s default (the editor and the refined shape residual) at the front
and at yaw -40 / +40. The painted-vs-re-rendered mIoU of the editor alone and of the refined edit are printed.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from ide3d_core.cameras import orbit_camera  # noqa: E402
from ide3d_core.images import to_uint8_hwc  # noqa: E402
from ide3d_core.labels import colorize  # noqa: E402
from ide3d_core.metrics import mean_iou  # noqa: E402

TITLES = ["painted map", "before", "editor alone", "refined", "refined, yaw -40", "refined, yaw +40"]


@torch.no_grad()
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="100,102")
    p.add_argument("--model", default=str(ROOT / "ide3d_core" / "models" / "default"))
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "mask_edit_refine.png")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from eval_model import painted_edits
    from photo_projection_sheet import save_scaled, titled

    from ide3d_core.editing import canonical_labels, mask_edit, render_state
    from ide3d_core.encoders import load_encoder
    from ide3d_core.networks import load_generator
    from ide3d_core.portrait import EditRecord, Portrait, PortraitState, generator_fingerprint
    from ide3d_core.shape_residual import RefineConfig

    G = load_generator(args.model).eval().requires_grad_(False)
    editor = load_encoder(Path(args.model) / "encoders" / "canonical").eval()
    front = orbit_camera(0.0).label()
    sides = [orbit_camera(math.radians(y)).label() for y in (-40.0, 40.0)]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        ws = G.codes_from_seeds([seed], truncation_psi=G.default_truncation).cpu()
        portrait = Portrait(camera=front, generator_config=G.config.to_dict(), base_fingerprint=generator_fingerprint(G),
                            history=(EditRecord("seed", {"seed": seed}, PortraitState(ws)),))
        current = canonical_labels(G, portrait.state)
        for name, painted in painted_edits(current).items():
            alone = mask_edit(portrait, G, editor, painted, current=current)
            refined = mask_edit(portrait, G, editor, painted, current=current, refine=RefineConfig())
            shots = [render_state(G, portrait.state, front), render_state(G, alone.state, front),
                     *(render_state(G, refined.state, c) for c in (front, *sides))]
            ious = [mean_iou(shots[k].semantic[0].argmax(0), torch.from_numpy(painted).long()) for k in (1, 2)]
            print(f"seed {seed} {name}: painted-vs-re-rendered mIoU editor alone {ious[0]:.3f}, refined {ious[1]:.3f}")
            tiles = [colorize(painted)] + [to_uint8_hwc(s.image[0].clamp(-1, 1)) for s in shots]
            rows.append(titled(np.concatenate(tiles, 1), [f"{t}" if k else f"seed {seed}: {name}, {t}"
                                                          for k, t in enumerate(TITLES)]))
    save_scaled(np.concatenate(rows, 0), args.out, 0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
