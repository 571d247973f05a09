# SPDX-License-Identifier: GPL-3.0-or-later
"""Render an exported head mesh (.glb) in real Blender (the ``bpy`` module, headless) from cameras
given as packed 25-float labels of :mod:`ide3d_core.cameras`: an outside check of the mesh and camera
conventions (``ide3d demo``, ``tests/test_procedural_mesh_alignment.py``, ``scripts/blender_vs_neural.py``).

    python -m ide3d_core.mesh.blender_render --mesh head.glb --cameras cams.npy --size 256 --out DIR

Writes ``DIR/blender_<i>.png`` (Workbench, flat-lit baked texture, Standard view transform) for every
camera. Blender's own glTF importer places the mesh (glTF Y-up metres -> Blender Z-up), and the
cameras go through :func:`ide3d_core.cameras.blender_from_camera`, so the pictures line up with the
neural/procedural renders from the same labels only if every convention agrees: that is the point.
Run it in its own process (:func:`render_in_subprocess`): it imports bpy and never torch (bpy 4.5 hangs
at exit in a process that imported torch and ran the glTF code, docs/blender.md).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ide3d_core import cameras  # numpy only


def render_in_subprocess(mesh: Path, cameras_file: Path, size: int, out: Path, transparent: bool = False,
                         env: dict | None = None, timeout: float = 600.0) -> list[Path]:
    """Run this module with this interpreter in a fresh process; returns the written PNGs in camera order.
    Raises ``RuntimeError`` with the last line of Blender's error output when it fails."""
    argv = [sys.executable, "-m", __name__, "--mesh", str(mesh), "--cameras", str(cameras_file),
            "--size", str(int(size)), "--out", str(out)] + (["--transparent"] if transparent else [])
    proc = subprocess.run(argv, env=env if env is not None else dict(os.environ), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"Blender render failed ({proc.returncode}): {last}")
    return [Path(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mesh", type=Path, required=True)
    ap.add_argument("--cameras", type=Path, required=True, help=".npy of (N, 25) camera labels")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--transparent", action="store_true",
                    help="transparent film (RGBA PNG): the alpha channel is the mesh's silhouette")
    args = ap.parse_args(argv)

    import bpy
    import mathutils

    labels = np.load(args.cameras).reshape(-1, cameras.LABEL_DIM)
    args.out.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(args.mesh))
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "FLAT"
    scene.display.shading.color_type = "TEXTURE"
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.film_transparent = bool(args.transparent)
    scene.render.image_settings.color_mode = "RGBA" if args.transparent else "RGB"
    scene.world = bpy.data.worlds.new("ide3d_world") if scene.world is None else scene.world
    cam_data = bpy.data.cameras.new("ide3d_cam")
    cam_obj = bpy.data.objects.new("ide3d_cam", cam_data)
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    for i, label in enumerate(labels):
        bc = cameras.blender_from_camera(cameras.Camera.from_label(label), args.size, args.size)
        cam_obj.matrix_world = mathutils.Matrix(bc.matrix_world.tolist())
        cam_data.lens, cam_data.sensor_width, cam_data.sensor_height = bc.lens, bc.sensor_width, bc.sensor_height
        cam_data.sensor_fit, cam_data.shift_x, cam_data.shift_y = bc.sensor_fit, bc.shift_x, bc.shift_y
        cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
        r = scene.render
        r.resolution_x, r.resolution_y, r.resolution_percentage = bc.resolution_x, bc.resolution_y, 100
        r.pixel_aspect_x, r.pixel_aspect_y = bc.pixel_aspect_x, bc.pixel_aspect_y
        r.filepath = str(args.out / f"blender_{i}.png")
        bpy.ops.render.render(write_still=True)
        print(f"RESULT {r.filepath}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
