# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d invert | edit | restyle | render``: portrait documents on the command line.

    ide3d invert PHOTO [PHOTO ...] [--mask M [M ...]] [--camera camera.json [...] | --yaw Y --pitch P]
                 [--prepare] [--steps N] [--tune-steps N] [--fixed-camera] [--thorough]
                 [--detail-strength global|class|off] --out P.ide3d
    ide3d edit P.ide3d (--mask painted.png [--mode residual|direct] | --undo | --redo) --out Q.ide3d
    ide3d restyle P.ide3d --regions hair,cloth (--style-seed 7 | --style-portrait R.ide3d) --out Q.ide3d
    ide3d render P.ide3d [--yaw 30 --pitch -5 | --canonical] [--orbit N] [--no-photo-projection] --out view.png

Models: ``--model`` takes a folder written by ``save_generator``, ``config:NAME`` for an untrained
generator (tests, demos), or nothing for the bundled model (``ide3d_core/models/default``); edit,
restyle and render default to the model the portrait was made with. Encoders: ``--encoders DIR`` with
``standard/`` and ``canonical/`` sub-folders (written by ``ide3d train-encoders``); default
``<model>/encoders``. Inversion without encoders starts from the average code (a warning says so); a
mask edit needs the canonical editor.

Several photos of one head (``ide3d invert front.jpg left.jpg right.jpg``) are inverted together into one
portrait (:func:`ide3d_core.operations.invert.invert_photos`): ``--mask`` and ``--camera`` then take one
entry per photo (``-`` for none). Photos are square aligned crops as ``ide3d prepare`` writes them, or, with
``--prepare``, any photo through the same pipeline (detect, align, pose, mask; a photo without a face is
skipped with a message).

Masks are read through :func:`ide3d_core.labels.decode_mask` (label ids, or palette colours with
anti-aliased fringes snapped). ``render`` writes, beside every image, ``<name>_labels.png`` (label ids)
and ``<name>_seg.png`` (palette colours); without a pose it renders from the portrait's source camera. A
portrait with photos renders with them laid over it where they saw the head
(:mod:`ide3d_core.photo_projection`); ``--no-photo-projection`` shows the model alone.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ide3d_core.atomic_file import file_stamp
from ide3d_core.cli import UserError
from ide3d_core.commands.model_args import device_arg, load_base, load_encoders, load_parser

# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------

def read_rgb(path: Path):
    """(H, W, 3) uint8 RGB of an image file, through the hardened photo loader
    (:func:`ide3d_core.photo.load.load_image`: bounded memory, EXIF orientation, any bit depth)."""
    from ide3d_core.photo.errors import PhotoError
    from ide3d_core.photo.load import load_image

    try:
        loaded = load_image(path)
    except PhotoError as exc:
        raise UserError(str(exc)) from None
    for note in loaded.warnings:
        print(f"ide3d: note: {path.name}: {note}", file=sys.stderr)
    return loaded.rgb


def read_mask(path: Path, size: tuple[int, int] | None):
    """(H, W) uint8 label ids of a painted/label mask; ``size`` (H, W) must match when given."""
    from ide3d_core.labels import decode_mask
    from ide3d_core.photo.errors import PhotoError
    from ide3d_core.photo.load import load_label_image

    try:
        arr = load_label_image(path)  # (H, W) label ids or (H, W, 3) palette colours
    except PhotoError as exc:
        raise UserError(f"cannot read the mask: {exc}") from None
    if size is not None and arr.shape[:2] != tuple(size):
        raise UserError(f"the mask {path.name} is {arr.shape[1]}x{arr.shape[0]} pixels; "
                        f"it must be {size[1]}x{size[0]}")
    try:
        ids = decode_mask(arr)
    except ValueError as exc:
        raise UserError(f"{path.name}: no recognisable labels ({exc})") from None
    if not (ids > 0).any():
        raise UserError(f"{path.name}: no recognisable labels (everything is background)")
    return ids


def _load(path: Path):
    from ide3d_core.portrait import PortraitError, load_portrait

    try:
        return load_portrait(path)
    except PortraitError as exc:
        raise UserError(str(exc)) from None


def _generator_for(portrait, args, device):
    from ide3d_core.portrait import PortraitError

    spec = args.model if args.model is not None else (portrait.model_hint or "")
    base = load_base(spec, device)
    try:
        return base, portrait.generator(base), spec
    except PortraitError as exc:
        raise UserError(f"{exc} (pass --model)") from None


def _save(portrait, out: Path, stamp: tuple | None = None) -> None:
    """Save to ``out``; ``stamp``: :func:`~ide3d_core.atomic_file.file_stamp` of ``out`` when the command
    began, so that of two commands writing the same file, the later one fails instead of silently
    replacing the earlier one's result."""
    from ide3d_core.atomic_file import WriteConflict
    from ide3d_core.portrait import SUFFIX, save_portrait

    if out.suffix != SUFFIX:
        raise UserError(f"--out must end in {SUFFIX}, got {out.name!r}")
    try:
        save_portrait(portrait, out, expect=stamp)
    except WriteConflict as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {out}")


def _common(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# ------------------------------------------------------------------------------------------------
# Sub-commands
# ------------------------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("invert", help="invert a portrait photo into an .ide3d document",
                       description=__doc__, formatter_class=fmt)
    p.add_argument("photo", type=Path, nargs="+", help="square portrait image(s) (RGB) of one head")
    p.add_argument("--mask", type=Path, nargs="+", default=None,
                   help="label mask(s) (ids or palette colours), same size; one per photo, '-' for none")
    p.add_argument("--yaw", type=float, default=None, help="camera yaw in degrees (default: predicted; one photo)")
    p.add_argument("--pitch", type=float, default=0.0, help="camera pitch in degrees (with --yaw)")
    p.add_argument("--camera", type=Path, nargs="+", default=None,
                   help="camera.json written by `ide3d prepare` (its 25-float \"label\"); one per photo, '-' for none")
    p.add_argument("--prepare", action="store_true",
                   help="run every photo through the photo pipeline first (any size and framing)")
    p.add_argument("--steps", type=int, default=None, help="code optimisation steps (default 24)")
    p.add_argument("--tune-steps", type=int, default=None, help="pivotal tuning steps (default 6)")
    p.add_argument("--fixed-camera", action="store_true",
                   help="keep every camera as given or estimated (default: refine each view's camera, a few "
                        "degrees along its orbit, together with the codes)")
    p.add_argument("--thorough", action="store_true",
                   help="the earlier slow schedule (200 + 100 steps at full resolution, no early stop)")
    p.add_argument("--code-space", choices=("w", "group", "w+"), default=None,
                   help="code space of the optimisation (default: the policy's)")
    p.add_argument("--detail-strength", choices=("global", "class", "off"), default=None,
                   help="the surface detail's strength for this portrait, solved at the photos: one per class "
                        "(class, the default), one for the head (global), or off (as trained)")
    p.add_argument("--encoders", type=Path, default=None, help="encoder folder (default <model>/encoders)")
    p.add_argument("--parser", type=Path, default=None,
                   help="face-parsing network folder (training/segnet.py) used without --mask "
                        "(default <model>/segnet when present)")
    p.add_argument("--lpips", type=Path, default=None,
                   help="LPIPS-VGG16 weights (.safetensors, see ide3d_core/inversion/lpips.py) to add LPIPS to the loss")
    p.add_argument("--out", type=Path, required=True, help="output .ide3d file")
    _common(p, "model folder, config:NAME (untrained) or nothing for the bundled model")
    p.set_defaults(func=run_invert)

    p = sub.add_parser("edit", help="mask edit (canonical editor), undo or redo of an .ide3d portrait",
                       description=__doc__, formatter_class=fmt)
    p.add_argument("portrait", type=Path)
    act = p.add_mutually_exclusive_group(required=True)
    act.add_argument("--mask", type=Path, help="painted canonical-view label map (from render --canonical)")
    act.add_argument("--undo", action="store_true", help="step back one edit")
    act.add_argument("--redo", action="store_true", help="step forward one edit")
    p.add_argument("--mode", choices=("residual", "direct"), default="residual",
                   help="residual: move w_s by E(painted) - E(current map) (default); direct: w_s = E(painted)")
    p.add_argument("--refine-steps", type=int, default=None, metavar="N",
                   help="steps fitting the shape residual to the painted map after the editor (default: "
                        "ide3d_core.shape_residual.RefineConfig's, about a second each on a laptop CPU; "
                        "0: the editor alone)")
    p.add_argument("--encoders", type=Path, default=None, help="encoder folder (default <model>/encoders)")
    p.add_argument("--out", type=Path, required=True)
    _common(p, "base model (default: the one the portrait was made with)")
    p.set_defaults(func=run_edit)

    p = sub.add_parser("restyle", help="give chosen regions the texture of another seed or portrait",
                       description=__doc__, formatter_class=fmt)
    p.add_argument("portrait", type=Path)
    p.add_argument("--regions", required=True, help="classes or groups, e.g. hair,cloth")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--style-seed", type=int, help="seed of the texture source")
    src.add_argument("--style-portrait", type=Path, help=".ide3d portrait giving the texture")
    p.add_argument("--truncation", type=float, default=None,
                   help="truncation of --style-seed (default: the model's, 1 for the bundled model)")
    p.add_argument("--out", type=Path, required=True)
    _common(p, "base model (default: the one the portrait was made with)")
    p.set_defaults(func=run_restyle)

    p = sub.add_parser("render", help="render an .ide3d portrait with its label maps",
                       description=__doc__, formatter_class=fmt)
    p.add_argument("portrait", type=Path)
    pose = p.add_mutually_exclusive_group()
    pose.add_argument("--yaw", type=float, default=None, help="yaw in degrees")
    pose.add_argument("--canonical", action="store_true", help="the canonical front camera")
    p.add_argument("--pitch", type=float, default=None, help="pitch in degrees (default 0 with --yaw)")
    p.add_argument("--orbit", type=int, default=0, metavar="N", help="a turntable of N frames (yaw 0..360)")
    p.add_argument("--out", type=Path, required=True, help="output .png (frames get _000, _001, ...)")
    p.add_argument("--no-photo-projection", action="store_true",
                   help="the generator's render alone, without the portrait's photos laid over it")
    _common(p, "base model (default: the one the portrait was made with)")
    p.set_defaults(func=run_render)


def _per_photo(values, n: int, flag: str) -> list:
    """``--mask``/``--camera`` values: None, or one per photo ('-' = none for that photo)."""
    if values is None:
        return [None] * n
    if len(values) != n:
        raise UserError(f"{flag} takes one entry per photo ({n}), got {len(values)} (use '-' for none)")
    return [None if str(v) == "-" else v for v in values]


def run_invert(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ide3d_core.cameras import orbit_camera
    from ide3d_core.inversion import THOROUGH_POLICY, InversionPolicy
    from ide3d_core.operations import OperationError
    from ide3d_core.operations.invert import PhotoInput, invert_photos
    from ide3d_core.portrait import generator_config
    from ide3d_core.segnet import array_parser
    from ide3d_core.progress import TqdmProgress

    stamp = file_stamp(args.out)
    if args.out.suffix != ".ide3d":
        raise UserError(f"--out must end in .ide3d, got {args.out.name!r}")
    device = device_arg(args.device)
    n = len(args.photo)
    masks = _per_photo(args.mask, n, "--mask")
    cameras = [None if c is None else _read_camera(c) for c in _per_photo(args.camera, n, "--camera")]
    if args.camera is not None and args.yaw is not None:
        raise UserError("give either --camera or --yaw/--pitch, not both")
    if args.yaw is not None:
        if n > 1:
            raise UserError("--yaw/--pitch describe one photo; give several photos their --camera files")
        if not -89 < args.pitch < 89:
            raise UserError("--pitch must be within (-89, 89) degrees")
        cameras = [orbit_camera(math.radians(args.yaw), math.radians(args.pitch)).label()]
    photos = []
    for path, mask, cam in zip(args.photo, masks, cameras):
        if args.prepare:
            photos.append(PhotoInput(path, mask, cam, path.name))
            continue
        photo = read_rgb(path)
        h, w = photo.shape[:2]
        if abs(h - w) > 1:
            raise UserError(f"{path.name} is {w}x{h}; it must be square (crop it with `ide3d prepare`, "
                            "or pass --prepare)")
        photos.append(PhotoInput(photo, read_mask(mask, (h, w)) if mask is not None else None, cam, path.name))
    spec = args.model or ""
    base = load_base(spec, device)
    encoder = load_encoders(args.encoders, spec, "standard", device)
    if encoder is None:
        print("ide3d invert: warning: no encoders found; codes start at the average code "
              "(train them with `ide3d train-encoders`)", file=sys.stderr)
    policy = THOROUGH_POLICY if args.thorough else InversionPolicy()
    kw = {"code_space": args.code_space} if args.code_space else {}
    if args.fixed_camera:
        kw["refine_pose"] = False
    if args.detail_strength:
        kw["detail_strength"] = args.detail_strength
    for name, value in (("optimise_steps", args.steps), ("tune_steps", args.tune_steps)):
        if value is not None:
            if value < 0:
                raise UserError("step counts must be >= 0")
            kw[name] = value
    policy = replace(policy, **kw)
    no_masks = all(m is None for m in masks)
    if args.prepare:
        net = load_parser(args.parser, spec, device)  # --parser, else the model's own (as the service)
        parser = None if net is None else array_parser(net)
    else:
        parser = None if not no_masks and all(m is not None for m in masks) else _parser(args.parser, spec, device)
    lpips = None
    if args.lpips is not None:
        from ide3d_core.inversion.lpips import LPIPS

        try:
            lpips = LPIPS.from_file(args.lpips, device=device)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    try:
        with TqdmProgress("invert", disable=args.quiet) as progress:
            out = invert_photos(base, photos, encoder=encoder, policy=policy,
                                preparation="photo" if args.prepare else "square", lpips=lpips, parser=parser,
                                model_hint=spec, generator_config=generator_config(base), progress=progress)
    except OperationError as exc:
        raise UserError(str(exc)) from None
    for note in out.notes:
        print(f"ide3d invert: note: {note}", file=sys.stderr)
    _save(out.portrait, args.out, stamp)
    res = out.result
    for stage, m in res.stages.items():
        print(f"  {stage:9s} PSNR {m['psnr']:6.2f} dB  loss {m['loss']:.4f}  {m['seconds']:.1f} s  "
              f"{int(m.get('steps', 0))} steps")
    if len(res.views) > 1:
        for v in res.views:
            final = list(v.psnr)[-1] if v.psnr else None
            print(f"  view {v.name}: " + (f"yaw {v.yaw:+.0f} pitch {v.pitch:+.0f}  weight {v.weight:.2f}  "
                                          f"residual PSNR {v.psnr[final]:.2f} dB" if v.used else v.note)
                  + ("  (primary)" if v.index == res.primary else ""))
    return 0


def _read_camera(path: Path):
    import json

    import numpy as np

    from ide3d_core.cameras import Camera

    try:
        label = np.asarray(json.loads(path.read_text())["label"], dtype=np.float32)
        Camera.from_label(label)  # validates: 25 numbers, rigid pose, sane intrinsics
    except FileNotFoundError:
        raise UserError(f"no such camera file {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path.name} is not a camera file with a 25-float \"label\" ({exc})") from None
    return label


def _parser(folder: Path | None, model_spec: str, device):
    """A callable image [1, 3, R, R] -> (R, R) uint8 label ids from the project's SegNet
    (``--parser DIR`` or ``<model>/segnet``), or None when there is none."""
    from ide3d_core.segnet import tensor_parser

    net = load_parser(folder, model_spec, device)
    return None if net is None else tensor_parser(net)


def image_parser(folder: Path, device="cpu"):
    """A SegNet folder -> callable ``(S, S, 3) uint8 -> (S, S) uint8`` label ids (for ``prepare(parser=)``)."""
    from ide3d_core.segnet import array_parser

    return array_parser(load_parser(Path(folder), "", device))


def run_edit(args: argparse.Namespace) -> int:
    stamp = file_stamp(args.out)
    from ide3d_core import editing

    if args.refine_steps is not None and args.refine_steps < 0:  # before any model is loaded
        raise UserError(f"--refine-steps must be >= 0, got {args.refine_steps}")
    portrait = _load(args.portrait)
    if args.undo or args.redo:
        try:
            portrait = editing.undo(portrait) if args.undo else editing.redo(portrait)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        _save(portrait, args.out, stamp)
        return 0
    device = device_arg(args.device)
    base, g, spec = _generator_for(portrait, args, device)
    editor = load_encoders(args.encoders, spec, "canonical", device)
    if editor is None:
        raise UserError("no canonical editor found; pass --encoders DIR (written by `ide3d train-encoders`)")
    size = int(g.img_resolution)
    mask = read_mask(args.mask, (size, size))
    from ide3d_core.photo_projection import portrait_projection

    # the map subtracted is the one `render --canonical` showed: the portrait's photos laid over it
    from ide3d_core.progress import TqdmProgress
    from ide3d_core.shape_residual import RefineConfig

    refine = (RefineConfig() if args.refine_steps is None
              else RefineConfig(steps=args.refine_steps) if args.refine_steps else None)
    with TqdmProgress("refine", disable=args.quiet or refine is None) as progress:
        portrait = editing.mask_edit(portrait, g, editor, mask, mode=args.mode,
                                     projection=portrait_projection(g, portrait) if args.mode == "residual" else None,
                                     refine=refine, progress=progress)
    _save(portrait, args.out, stamp)
    changed = portrait.history[-1].params["pixels_changed"]
    if changed is not None:
        print(f"  {changed} label pixels changed")
    return 0


def run_restyle(args: argparse.Namespace) -> int:
    stamp = file_stamp(args.out)
    from ide3d_core import editing
    from ide3d_core.labels import parse_classes
    from ide3d_core.operations import OperationError
    from ide3d_core.operations.limits import check_truncation

    try:
        classes = parse_classes(args.regions)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    portrait = _load(args.portrait)
    device = device_arg(args.device)
    _, g, _ = _generator_for(portrait, args, device)
    if args.style_seed is not None:
        try:
            truncation = g.default_truncation if args.truncation is None else args.truncation
            truncation = check_truncation(truncation, "--truncation")
        except OperationError as exc:
            raise UserError(str(exc)) from None
        style = editing.codes_from_seed(g, args.style_seed, truncation)
        source = {"kind": "seed", "seed": args.style_seed, "truncation_psi": truncation}
    else:
        other = _load(args.style_portrait)
        style, source = other.ws, {"kind": "portrait", "file": args.style_portrait.name}
    try:
        portrait = editing.restyle(portrait, classes, style, source)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _save(portrait, args.out, stamp)
    return 0


def run_render(args: argparse.Namespace) -> int:
    import torch

    from ide3d_core.cameras import Camera, canonical_camera, orbit_camera
    from ide3d_core.operations.render import render_inputs, render_view, write_view
    from ide3d_core.photo_projection import portrait_projection
    from ide3d_core.progress import TqdmProgress

    if args.out.suffix.lower() != ".png":
        raise UserError(f"--out must end in .png, got {args.out.name!r}")
    if args.orbit < 0:
        raise UserError("--orbit must be >= 0")
    portrait = _load(args.portrait)
    device = device_arg(args.device)
    _, g, _ = _generator_for(portrait, args, device)
    pitch = math.radians(args.pitch or 0.0)
    if not -math.pi / 2 < pitch < math.pi / 2:
        raise UserError("--pitch must be within (-90, 90) degrees")
    if args.canonical:
        cams = [canonical_camera().label()]
    elif args.yaw is not None or args.pitch is not None:
        cams = [orbit_camera(math.radians(args.yaw or 0.0), pitch).label()]
    else:
        cams = [portrait.camera]
    if args.orbit:
        if args.yaw is None and args.pitch is None and not args.canonical:
            pitch = Camera.from_label(portrait.camera).yaw_pitch()[1]
        cams = [orbit_camera(2 * math.pi * i / args.orbit, pitch).label() for i in range(args.orbit)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with TqdmProgress("render", disable=args.quiet or len(cams) == 1) as progress, torch.no_grad():
        inputs = render_inputs(g, portrait.state, next(g.parameters()).device)  # one state, every camera
        projection = None if args.no_photo_projection else portrait_projection(g, portrait)
        for i, cam in enumerate(cams):
            path = args.out if not args.orbit else args.out.with_name(f"{args.out.stem}_{i:03d}.png")
            written += write_view(render_view(g, portrait.state, cam, inputs=inputs, projection=projection), path)
            progress(i + 1, len(cams), "")
    print(f"wrote {len(written)} files ({written[0]} ...)")
    return 0
