# SPDX-License-Identifier: GPL-3.0-or-later
"""A picture of photo projection (ide3d_core/photo_projection.py) on held-out procedural heads.

    python scripts/photo_projection_sheet.py [--heads 0,3] [--source-yaw 20] [--yaws=-40,0,40]
        [--out docs/images/photo_projection.png] [--threads 1]

Each head (eval_inversion's held-out heads) is inverted from one photo with the default ``ide3d invert``
policy (exact mask and camera, as the evaluation does). Per head, two rows: RGB and labels. Columns: the
photo, then for every novel yaw the exact render, the portrait's render without its photo and with it.
The PSNR / mIoU of each render against the exact one are printed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def titled(row: np.ndarray, titles: list[str], tile: int = 256) -> np.ndarray:
    """``row (H, W, 3)`` uint8 of ``tile``-wide images under a white bar with one title per image."""
    header = Image.new("RGB", (row.shape[1], 22), "white")
    draw = ImageDraw.Draw(header)
    for k, t in enumerate(titles):
        draw.text((k * tile + 6, 5), t, fill="black")
    return np.concatenate([np.asarray(header), row], 0)


def save_scaled(sheet: np.ndarray, out: Path, scale: float) -> None:
    """Write ``sheet`` (H, W, 3) uint8 to ``out``, resized by ``scale`` (Lanczos)."""
    image = Image.fromarray(sheet)
    small = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    small.save(out)
    print(f"wrote {out} ({small.width}x{small.height})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", default="0,3", help="held-out head indices")
    p.add_argument("--source-yaw", type=float, default=20.0)
    p.add_argument("--yaws", default="-40,0,40")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "photo_projection.png")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import eval_inversion as E
    from ide3d_core.images import to_uint8_hwc
    from ide3d_core.inversion import invert, psnr
    from ide3d_core.labels import colorize
    from ide3d_core.metrics import mean_iou

    heads = [int(h) for h in args.heads.split(",")]
    yaws = [float(y) for y in args.yaws.split(",")]
    pool = max(8, max(heads) + 1)  # the evaluation draws 8 heads (a head depends on how many are drawn)
    eargs = E.parse_args(["--heads", str(pool), "--threads", str(args.threads)])
    g, desc, _ = E.load_model(eargs, "cpu")
    enc = E.load_encoders(eargs, g, desc, "cpu")
    truth = E.HeldOutHeads(pool, 256)
    rows = []
    for i in heads:
        img, lab, cam = truth.view(i, args.source_yaw)
        mask = lab[0].numpy().astype(np.uint8)
        res = invert(g, img, mask=mask, camera=cam, encoder=enc["standard"])
        projection = res.photo_projection([(img, mask)])
        rgb = [to_uint8_hwc(img[0])]
        labs = [colorize(mask)]
        for y in yaws:
            img_t, lab_t, cam_t = truth.view(i, y)
            rgb.append(to_uint8_hwc(img_t[0]))
            labs.append(colorize(lab_t[0].numpy().astype(np.uint8)))
            for name, proj in (("without", None), ("with", projection)):
                im, lb = E.render_view(res.generator, res.ws, cam_t, "cpu", proj)
                rgb.append(to_uint8_hwc(im[0].clamp(-1, 1)))
                labs.append(colorize(lb[0].numpy().astype(np.uint8)))
                print(f"head {i} yaw {y:+.0f} {name:7s} photo: PSNR {float(psnr(im.clamp(-1, 1), img_t)):.2f} dB, "
                      f"mIoU {mean_iou(lb[0].numpy(), lab_t[0].numpy()):.3f}", flush=True)
        rows += [np.concatenate(rgb, 1), np.concatenate(labs, 1)]
    titles = [f"photo (yaw {args.source_yaw:+.0f})"] + [t for y in yaws for t in
                                                       (f"exact, yaw {y:+.0f}", "model alone", "with the photo")]
    save_scaled(titled(np.concatenate(rows, 0), titles), args.out, 0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
