# SPDX-License-Identifier: GPL-3.0-or-later
"""What a neural rendering resolution allows at best: the procedural heads' *exact* renders at a low
resolution, upsampled to the output resolution, scored against their exact output renders.

    python scripts/resolution_ceiling.py [--heads 12] [--resolutions 32,64,128] [--output 256]

A generator that renders its field at ``r`` px and upsamples without adding information can at best
reach these numbers; issue 14's targets (novel-view mIoU 0.80, sharpness 0.6) are read against them.
Per low resolution ``r``: mIoU of the exact ``r``-px label map (nearest upsampling) against the exact
output label map, the same with the exact class fractions of the ``r``-px pixels (the output map
area-averaged down to ``r``, then bilinear, then argmax: the best a soft ``r``-px map can do), and the
sharpness ratio (mean |Laplacian|, :func:`eval_model.sharpness`) of the exact ``r``-px image upsampled
bicubically against the exact output image, on the whole image and inside the head, with the PSNR inside
the head of that image; then the same image with *invented* detail: the exact image's own detail above
``r`` px (exact minus its area-averaged, bicubically upsampled copy) added back shifted by ``--shift`` px,
i.e. detail of exactly the right amount and kind that is not where the truth has it -- what a
super-resolution that draws plausible detail it cannot know gives (its sharpness and what it costs in
PSNR: the perception-distortion trade-off issue 14's targets sit across). Heads: ``sample_heads`` drawn from seed 777 (neither the bank nor the evaluation heads), yaw -40 / 0 / +40.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ide3d_core.cameras import orbit_camera  # noqa: E402
from ide3d_core.labels import NUM_CLASSES  # noqa: E402
from ide3d_core.metrics import mean_iou  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--resolutions", default="32,64,128")
    p.add_argument("--output", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shift", type=int, default=5, help="px the invented detail is moved by")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from eval_model import sharpness
    from training.procedural import render_heads, sample_heads

    heads = sample_heads(args.heads, torch.Generator().manual_seed(777), "cpu")
    out = args.output
    rows = {int(r): {"nearest": [], "fractions": [], "sharp": []}
            for r in args.resolutions.split(",")}
    for i in range(args.heads):
        for yaw in (-40.0, 0.0, 40.0):
            cam = torch.from_numpy(orbit_camera(math.radians(yaw), 0.0).label())[None]
            hi = render_heads(heads.index(i), cam, out)
            onehot = F.one_hot(hi.labels.long(), NUM_CLASSES).permute(0, 3, 1, 2).float()
            head = hi.labels > 0
            for r, acc in rows.items():
                lo = render_heads(heads.index(i), cam, r)
                near = F.interpolate(lo.labels[:, None].float(), size=out, mode="nearest")[:, 0].long()
                acc["nearest"].append(mean_iou(near.numpy(), hi.labels.numpy()))
                frac = F.interpolate(F.avg_pool2d(onehot, out // r), size=out, mode="bilinear", align_corners=False)
                acc["fractions"].append(mean_iou(frac.argmax(1).numpy(), hi.labels.numpy()))
                up = F.interpolate(lo.image.float(), size=out, mode="bicubic", align_corners=False)
                exact = hi.image.float()
                low = F.interpolate(F.avg_pool2d(exact, out // r), size=out, mode="bicubic", align_corners=False)
                invented = up + torch.roll(exact - low, args.shift, dims=-1)
                acc["sharp"].append((up, exact, head, invented))
    print(f"\n### Exact renders at r px upsampled to {out} px ({args.heads} heads x yaw -40/0/+40)\n")
    print("| r | mIoU, exact labels, nearest | mIoU, exact class fractions, bilinear | sharpness ratio, bicubic "
          "(head only) | head PSNR, bicubic | sharpness ratio with invented detail (head only) | head PSNR with "
          "invented detail |\n|---|---|---|---|---|---|---|")

    def head_psnr(x, exact, head):
        m = head[:, None].float()
        return 10 * math.log10(4.0 / float(((x.clamp(-1, 1) - exact).pow(2) * m).sum() / (3 * m.sum())))

    for r, acc in rows.items():
        up, exact, head, inv = (torch.cat(t) for t in zip(*acc["sharp"]))  # ratios over the set, as eval_model
        inv = inv.clamp(-1, 1)
        print(f"| {r} | {np.mean(acc['nearest']):.3f} | {np.mean(acc['fractions']):.3f} | "
              f"{sharpness(up) / sharpness(exact):.3f} ({sharpness(up, head) / sharpness(exact, head):.3f}) | "
              f"{head_psnr(up, exact, head):.2f} | {sharpness(inv) / sharpness(exact):.3f} "
              f"({sharpness(inv, head) / sharpness(exact, head):.3f}) | {head_psnr(inv, exact, head):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
