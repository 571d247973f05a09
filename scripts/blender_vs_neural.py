# SPDX-License-Identifier: GPL-3.0-or-later
"""The README's picture for the Blender workflow: real Blender rendering the textured head mesh of a
bundled-model portrait next to the neural render from the same cameras.

    .venv/bin/python scripts/blender_vs_neural.py --seed 0 --out docs/images/blender_vs_neural.png

Steps: the bundled generator's head of ``--seed`` (truncation 0.7) -> ``ide3d_core.mesh`` at the model's
calibrated surface level, 256^3 grid, texture baked from the super-resolved renders (1024^2), .glb ->
``ide3d_core.mesh.blender_render`` (Blender's own glTF importer, Workbench, flat-lit texture) from orbit
cameras at yaw -35/0/35 -> top row: neural renders (super-resolved RGB), bottom row: Blender.
Prints the silhouette IoU of each pair (neural opacity > 0.5 vs Blender's alpha).
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ide3d_core.cameras import orbit_camera, stack_labels  # noqa: E402
from ide3d_core.images import to_uint8_hwc  # noqa: E402
from ide3d_core.mesh import BakeConfig, CleanupConfig, GridConfig, MeshConfig, export_glb, extract_head_mesh  # noqa: E402
from ide3d_core.mesh.blender_render import render_in_subprocess  # noqa: E402
from ide3d_core.mesh.generator_field import GeneratorField, GeneratorRenderer  # noqa: E402
from ide3d_core.mesh.level import iou as silhouette_iou  # noqa: E402
from ide3d_core.model_loading import load_base_generator, surface_level  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--yaws", type=float, nargs="+", default=[-35.0, 0.0, 35.0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    g = load_base_generator("", torch.device("cpu"))
    ws = g.codes_from_seeds([args.seed], truncation_psi=0.7)
    field = GeneratorField(g, ws)
    cfg = MeshConfig(grid=GridConfig(resolution=256), level=surface_level(""),
                     cleanup=CleanupConfig(target_faces=60000), bake=BakeConfig(texture_size=1024))
    mesh = extract_head_mesh(field, cfg, GeneratorRenderer(field)).mesh
    cams = [orbit_camera(math.radians(y)) for y in args.yaws]
    labels = stack_labels(cams)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_glb(mesh, tmp / "head.glb")
        np.save(tmp / "cams.npy", labels)
        try:
            render_in_subprocess(tmp / "head.glb", tmp / "cams.npy", args.size, tmp / "b", transparent=True)
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        blender = [np.asarray(Image.open(tmp / "b" / f"blender_{i}.png").convert("RGBA")) for i in range(len(cams))]
    top, bottom = [], []
    with torch.no_grad():
        for cam, b in zip(cams, blender):
            out = g.render(field.planes, torch.as_tensor(cam.label())[None].float(), ws)
            img = F.interpolate(out.image, size=(args.size, args.size), mode="bilinear", align_corners=False,
                                antialias=out.image.shape[-1] > args.size)
            op = F.interpolate(out.opacity, size=(args.size, args.size), mode="bilinear", align_corners=False)
            rgb = to_uint8_hwc(img[0])
            iou = silhouette_iou(op[0, 0].numpy() > 0.5, b[..., 3] > 127)
            print(f"yaw {math.degrees(cam.yaw_pitch()[0]):+.0f}: silhouette IoU {iou:.3f}")
            top.append(rgb)
            a = b[..., 3:4].astype(np.float32) / 255  # Blender's render over mid grey
            bottom.append((b[..., :3] * a + 128 * (1 - a)).round().astype(np.uint8))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
