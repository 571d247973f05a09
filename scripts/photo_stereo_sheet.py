# SPDX-License-Identifier: GPL-3.0-or-later
"""A picture of photo stereo (ide3d_core/photo_stereo.py) on a held-out procedural head seen by three photos.

    python scripts/photo_stereo_sheet.py [--head 2] [--views=-30,0,30] [--yaws=15,45]
        [--out docs/images/photo_stereo.png] [--threads 1]

The head (eval_inversion's multi-view heads: three drawn) is inverted from its exact photos at ``--views``
(exact masks and cameras, the default ``ide3d invert`` policy, as the evaluation does). For every novel yaw
one row: the exact render, the portrait with its photos laid through the fitted surface only, and with the
photo stereo (the default), then the absolute error of each (x4, white = large). The PSNR of each against
the exact render is printed and written under the images.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--head", type=int, default=2, help="held-out head index (of the three multi-view heads)")
    p.add_argument("--views", default="-30,0,30", help="photo yaws in degrees")
    p.add_argument("--yaws", default="15,45", help="novel yaws in degrees")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "photo_stereo.png")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import eval_inversion as E
    from photo_projection_sheet import save_scaled, titled
    from ide3d_core.images import to_uint8_hwc
    from ide3d_core.inversion import InversionView, invert_views, psnr
    from ide3d_core.photo_projection import ProjectionConfig

    pool = max(3, args.head + 1)  # issue 17's evaluation draws three heads (a head depends on how many)
    eargs = E.parse_args(["--heads", str(pool), "--threads", str(args.threads)])
    g, desc, _ = E.load_model(eargs, "cpu")
    enc = E.load_encoders(eargs, g, desc, "cpu")
    truth = E.HeldOutHeads(pool, 256)
    views = []
    for y in (float(v) for v in args.views.split(",")):
        img, lab, cam = truth.view(args.head, y)
        views.append(InversionView(img, lab[0].numpy().astype(np.uint8), cam, f"yaw {y:+.0f}"))
    res = invert_views(g, views, encoder=enc["standard"])
    stereo = res.photo_projection([(v.image, v.mask) for v in views])
    fitted = stereo.without_stereo()
    assert stereo.config == ProjectionConfig()  # the default is what is shown
    rows, notes = [], []
    for y in (float(v) for v in args.yaws.split(",")):
        img_t, _, cam_t = truth.view(args.head, y)
        tiles, errors, line = [to_uint8_hwc(img_t[0])], [], [f"exact, yaw {y:+.0f}"]
        for name, proj in (("fitted surface", fitted), ("photo stereo", stereo)):
            im, _ = E.render_view(res.generator, res.ws, cam_t, "cpu", proj)
            im = im.clamp(-1, 1)
            err = (im - img_t).abs().mean(1)[0] * 4.0 / 2.0  # x4 in units of the image range
            tiles.append(to_uint8_hwc(im[0]))
            errors.append(np.repeat((err.clamp(0, 1) * 255).round().byte().numpy()[..., None], 3, -1))
            db = float(psnr(im, img_t))
            line.append(f"{name}: {db:.2f} dB")
            print(f"yaw {y:+.0f} photos through the {name}: PSNR {db:.2f} dB", flush=True)
        rows.append(np.concatenate(tiles + errors, 1))
        notes.append(line + ["error, fitted surface (x4)", "error, photo stereo (x4)"])
    save_scaled(np.concatenate([titled(row, line) for row, line in zip(rows, notes)], 0), args.out, 0.75)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
