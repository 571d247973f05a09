# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d demo``: runs every capability that works today end to end and writes pictures to --out.

Steps (each prints what it wrote; open ``OUT/index.txt`` for the list):

1. ``procedural``  procedural heads and their exact semantic masks from several poses (the project's
   own training data), and a small dataset folder through ``ide3d dataset procedural``.
2. ``mesh``        a procedural head through the product's mesh path (density grid, marching cubes,
   clean-up, per-vertex labels, UV unwrap, texture baked from renders) -> textured ``.glb`` with one
   part per semantic class, plus ``.obj``/``.ply``.
3. ``blender``     real Blender (the bpy module) imports that ``.glb`` and renders it from the same
   cameras as the procedural renderer: the two rows must line up; and the add-on zip is built.
4. ``photo``       a real portrait photo through ``ide3d prepare`` (landmarks, alignment, head pose,
   semantic mask).
5. ``generator``   ``ide3d generate``, ``invert``, ``restyle``, ``render`` and ``mesh`` with the bundled
   model (``ide3d_core/models/default``, see its MODEL_CARD.md); the inverted portrait at a new view with
   its photo laid over it and, beside it, the model alone (``--no-photo-projection``); the same head from
   three photos (yaw -30, 0, +30) inverted into one portrait and rendered at yaw +15 between them (its
   photos laid over it through the photo stereo) beside the model alone. Without one (a stripped install),
   these run on untrained weights (noise pictures, clearly labelled) so the wiring is exercised.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ide3d_core.atomic_file import write_text_atomic
from ide3d_core.image_files import save_image, save_npy
from ide3d_core.model_loading import BUNDLED_MODEL_DIR

DemoStep = Callable[[Path, argparse.Namespace], list[Path]]
# The bundled model (owned by ide3d_core.model_loading; this module moved out of the core once and
# its own relative path then pointed at nothing, so the demo fell back to untrained weights).
BUNDLED_MODEL = BUNDLED_MODEL_DIR / "config.json"
YAWS = (-35.0, 0.0, 35.0)


def _cli(*argv: str) -> None:
    from ide3d_core.cli import main

    rc = main([str(a) for a in argv])
    if rc != 0:
        raise RuntimeError(f"ide3d {' '.join(map(str, argv))} exited with {rc}")


def _save(path: Path, image: np.ndarray) -> Path:
    save_image(image, path)
    return path


def _labels(yaws=YAWS, pitch: float = 0.0) -> np.ndarray:
    from ide3d_core.cameras import orbit_labels

    return orbit_labels(np.radians([(y, pitch) for y in yaws]))


def step_procedural(out: Path, args: argparse.Namespace) -> list[Path]:
    from training.procedural import contact_sheet

    sheet = contact_sheet(seed=args.seed, n_heads=4, yaws_deg=YAWS, resolution=128)
    files = [_save(out / "01_procedural_heads.png", sheet)]
    # The demo's own output from an earlier run: `ide3d dataset` refuses to write over a dataset, and the
    # README promises that the demo command can be run again.
    shutil.rmtree(out / "01_dataset", ignore_errors=True)
    _cli("dataset", "procedural", "--count", "16", "--resolution", "64", "--seed", str(args.seed),
         "--out", out / "01_dataset")
    return files + [out / "01_dataset" / "images" / "dataset.json"]


def _demo_head(args: argparse.Namespace):
    import torch

    from training.procedural import sample_heads

    return sample_heads(1, torch.Generator().manual_seed(args.seed + 4), "cpu")  # a head with long hair at seed 0


def step_mesh(out: Path, args: argparse.Namespace) -> list[Path]:
    from ide3d_core.mesh import BakeConfig, CleanupConfig, GridConfig, MeshConfig, export_mesh, extract_head_mesh
    from ide3d_core.progress import TqdmProgress
    from training.procedural.mesh_field import ProceduralField, ProceduralRenderer

    head = _demo_head(args)
    config = MeshConfig(grid=GridConfig(resolution=128), cleanup=CleanupConfig(target_faces=20000),
                        bake=BakeConfig(texture_size=1024))
    with TqdmProgress("mesh") as bar:
        result = extract_head_mesh(ProceduralField(head), config, ProceduralRenderer(head, 256, 1), progress=bar)
    files = export_mesh(result.mesh, out / "02_head.glb", parts=True)
    files += export_mesh(result.mesh, out / "02_head.obj")
    files += export_mesh(result.mesh, out / "02_head.ply")
    print(f"[demo] mesh: {len(result.mesh.vertices)} vertices, {len(result.mesh.faces)} faces; seconds "
          + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    return files


def step_blender(out: Path, args: argparse.Namespace) -> list[Path]:
    import importlib.util

    import torch
    from PIL import Image

    from ide3d_core.mesh.blender_render import render_in_subprocess
    from training.procedural import render_heads
    from ide3d_core.images import to_uint8_hwc

    _cli("addon", "build", "--out", out / "03_addon")
    files = sorted((out / "03_addon").glob("*.zip"))
    if importlib.util.find_spec("bpy") is None:
        print("[demo] blender: the bpy module is not installed (pip install -e .[blender]); skipping the render")
        return files
    glb = out / "02_head.glb"
    if not glb.exists():
        raise RuntimeError("the blender step needs the mesh step's 02_head.glb")
    labels = _labels()
    save_npy(labels, out / "03_cameras.npy")
    home = out / "03_blender_home"
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home), XDG_CACHE_HOME=str(home),
               BLENDER_USER_RESOURCES=str(home))
    size = 256
    render_in_subprocess(glb, out / "03_cameras.npy", size, out / "03_blender", env=env)
    head = _demo_head(args)
    r = render_heads(head.index(torch.zeros(len(labels), dtype=torch.long)), torch.from_numpy(labels), size, 2)
    top = np.concatenate(list(to_uint8_hwc(r.image)), axis=1)
    bottom = np.concatenate([np.asarray(Image.open(out / "03_blender" / f"blender_{i}.png").convert("RGB"))
                             for i in range(len(labels))], axis=1)
    files.append(_save(out / "03_blender_vs_render.png", np.concatenate([top, bottom], axis=0)))
    return files


def step_photo(out: Path, args: argparse.Namespace) -> list[Path]:
    try:
        from matplotlib import cbook

        photo = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except Exception as exc:  # matplotlib's sample data is optional
        print(f"[demo] photo: no sample portrait available ({exc}); skipping")
        return []
    _cli("prepare", photo, "--out", out / "04_photo", "--size", "256")
    return sorted((out / "04_photo").glob("*.png"))


def step_generator(out: Path, args: argparse.Namespace) -> list[Path]:
    trained = BUNDLED_MODEL.is_file()
    model = [] if trained else ["--model", "config:default"]
    if not trained:
        print("[demo] generator: no trained model is bundled yet (training needs a GPU session); running "
              "generate / invert / restyle / render on UNTRAINED weights to exercise the wiring only")
    gen = out / "05_generate"
    _cli("generate", "--seeds", f"{args.seed}-{args.seed + 1}", "--yaw", *map(str, YAWS), "--out", gen,
         *([] if trained else ["--config", "default"]), "--quiet")
    # Invert a procedural head with its exact mask and camera, restyle its hair, render new views.
    import torch

    from ide3d_core.labels import colorize
    from training.procedural import render_heads
    from ide3d_core.images import to_uint8_hwc

    head = _demo_head(args)
    label = _labels((20.0,))
    r = render_heads(head, torch.from_numpy(label), 256, 2)
    _save(out / "05_target.png", to_uint8_hwc(r.image)[0])
    _save(out / "05_target_mask.png", colorize(r.labels[0].numpy()))
    steps = ["--steps", "40", "--tune-steps", "20"] if trained else ["--steps", "3", "--tune-steps", "2"]
    _cli("invert", out / "05_target.png", "--mask", out / "05_target_mask.png", "--yaw", "20", "--pitch", "0",
         *steps, *model, "--out", out / "05_portrait.ide3d", "--quiet")
    _cli("restyle", out / "05_portrait.ide3d", "--regions", "hair", "--style-seed", "7",
         "--out", out / "05_restyled.ide3d", "--quiet")
    _cli("render", out / "05_restyled.ide3d", "--yaw", "-30", "--out", out / "05_restyled_yaw-30.png", "--quiet")
    # the portrait at a new view with its photo laid over it (as it renders everywhere) and the model alone
    _cli("render", out / "05_portrait.ide3d", "--yaw", "-30", "--out", out / "05_portrait_yaw-30.png", "--quiet")
    _cli("render", out / "05_portrait.ide3d", "--yaw", "-30", "--no-photo-projection",
         "--out", out / "05_portrait_yaw-30_model_alone.png", "--quiet")
    extra = [out / "05_portrait_yaw-30.png", out / "05_portrait_yaw-30_model_alone.png"]
    if trained:
        extra += _three_photos(out, head)
    if trained and (BUNDLED_MODEL.parent / "encoders" / "canonical" / "config.json").is_file():
        extra += _mask_edit(out)
    if trained:  # a head mesh of the generated seed (vertex colours and labels; docs/mesh.md)
        _cli("mesh", "--seed", str(args.seed), "--resolution", "128", "--texture", "0",
             "--out", out / "05_generated_head.glb", "--quiet")
        extra.append(out / "05_generated_head.glb")
    return sorted(gen.glob("*.png"))[:6] + [out / "05_portrait.ide3d", out / "05_restyled.ide3d",
                                            out / "05_restyled_yaw-30.png"] + extra


def _three_photos(out: Path, head) -> list[Path]:
    """The same head from three photos (yaw -30, 0, +30, exact masks and cameras) inverted into one portrait
    (`ide3d invert A B C --mask ... --camera ...`, the default schedule), rendered at yaw +15 between them
    (its photos laid over it through the photo stereo) and beside it the model alone."""
    import json

    import torch

    from ide3d_core.images import to_uint8_hwc
    from ide3d_core.labels import colorize
    from training.procedural import render_heads

    folder = out / "05_three_photos"
    folder.mkdir(parents=True, exist_ok=True)
    photos, masks, cams = [], [], []
    for yaw, label in zip((-30, 0, 30), _labels((-30.0, 0.0, 30.0))):
        r = render_heads(head, torch.from_numpy(label)[None], 256, 2)
        photos.append(_save(folder / f"photo_yaw{yaw:+d}.png", to_uint8_hwc(r.image)[0]))
        masks.append(_save(folder / f"mask_yaw{yaw:+d}.png", colorize(r.labels[0].numpy())))
        cams.append(folder / f"camera_yaw{yaw:+d}.json")
        cams[-1].write_text(json.dumps({"label": [float(v) for v in label]}))
    _cli("invert", *photos, "--mask", *masks, "--camera", *cams, "--out", out / "05_three_photos.ide3d", "--quiet")
    _cli("render", out / "05_three_photos.ide3d", "--yaw", "15", "--out", out / "05_three_photos_yaw15.png",
         "--quiet")
    _cli("render", out / "05_three_photos.ide3d", "--yaw", "15", "--no-photo-projection",
         "--out", out / "05_three_photos_yaw15_model_alone.png", "--quiet")
    return [out / "05_three_photos.ide3d", out / "05_three_photos_yaw15.png",
            out / "05_three_photos_yaw15_model_alone.png"]


def _mask_edit(out: Path) -> list[Path]:
    """Paint on the portrait's canonical label map (with numpy: a hat over the top of the head), send it
    through the canonical editor and its refinement (`ide3d edit`'s default: a shape residual fitted to the
    painted map, docs/editing.md), render the edited portrait at the front and at yaw 30."""
    from PIL import Image

    from ide3d_core.labels import ID, colorize

    _cli("render", out / "05_portrait.ide3d", "--canonical", "--out", out / "05_canonical.png", "--quiet")
    ids = np.array(Image.open(out / "05_canonical_labels.png"))
    h = ids.shape[0]
    top = int(np.nonzero(ids != ID["background"])[0].min())
    cols = np.nonzero(ids[top + h // 8] != ID["background"])[0]
    cx, half = 0.5 * (cols.min() + cols.max()), 0.65 * (cols.max() - cols.min() + 1)
    yy, xx = np.mgrid[:h, : ids.shape[1]]
    dome = ((xx - cx) / half) ** 2 + ((yy - top - 0.2 * h) / (0.27 * h)) ** 2 < 1  # a hat over the crown
    painted = ids.copy()
    painted[dome & (yy < top + 0.2 * h) & np.isin(ids, (ID["hair"], ID["background"]))] = ID["hat"]
    _save(out / "05_painted_mask.png", colorize(painted))
    _cli("edit", out / "05_portrait.ide3d", "--mask", out / "05_painted_mask.png", "--out",
         out / "05_edited.ide3d", "--quiet")
    _cli("render", out / "05_edited.ide3d", "--canonical", "--out", out / "05_edited_canonical.png", "--quiet")
    _cli("render", out / "05_edited.ide3d", "--yaw", "30", "--out", out / "05_edited_yaw30.png", "--quiet")
    return [out / "05_painted_mask.png", out / "05_edited_canonical.png", out / "05_edited_yaw30.png"]


STEPS: dict[str, DemoStep] = {
    "procedural": step_procedural,
    "mesh": step_mesh,
    "blender": step_blender,
    "photo": step_photo,
    "generator": step_generator,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline end to end and write pictures",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the demo heads (default 0)")
    p.add_argument("--steps", default=",".join(STEPS),
                   help=f"comma-separated subset of: {', '.join(STEPS)} (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ide3d_core.cli import UserError

    names = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in names if s not in STEPS]
    if unknown:
        raise UserError(f"unknown demo step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    failed: list[str] = []
    for name in names:
        t0 = time.perf_counter()
        print(f"[demo] {name} ...", flush=True)
        try:
            files = STEPS[name](args.out, args)
        except Exception as exc:  # report and go on: one broken step must not hide the others
            failed.append(name)
            print(f"[demo] {name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        print(f"[demo] {name}: {len(files)} file(s) in {time.perf_counter() - t0:.1f} s")
        written += [f"{name}: {f}" for f in files]
        for f in files:
            print(f"         {f}")
    write_text_atomic(args.out / "index.txt", "\n".join(written) + "\n")
    if failed:
        print(f"[demo] finished with failed step(s): {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"[demo] done; pictures in {args.out}/ (list in {args.out / 'index.txt'})")
    return 0
