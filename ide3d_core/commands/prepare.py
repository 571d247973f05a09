# SPDX-License-Identifier: GPL-3.0-or-later
"""``ide3d prepare PHOTO --out DIR``: import a real photo and write every step's output as pictures.

Files written to DIR: ``01_photo.png`` (as loaded, upright), ``02_faces.png`` (every face found, the chosen
one in green, its landmarks and the crop square), ``03_aligned.png`` (the model's input),
``04_mask.png`` (colourised labels), ``04_labels.png`` (label ids 0..18), ``05_overlay.png`` (mask over the
image), ``camera.json`` (25-float label, yaw/pitch/roll, warnings, timings).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ide3d_core.atomic_file import write_text_atomic
from ide3d_core.image_files import save_image

FILES = ("01_photo.png", "02_faces.png", "03_aligned.png", "04_mask.png", "04_labels.png", "05_overlay.png",
         "camera.json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="align a photo, estimate its camera and mask, write each step as pictures",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photo", type=Path, help="the photo (JPEG, PNG, WebP, TIFF, ...)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--face", type=int, default=None, metavar="K",
                   help="which face when there are several (0 = largest; default: the largest)")
    p.add_argument("--mask", type=Path, default=None, metavar="M",
                   help="your own label mask (ids 0..18 or palette colours), photo-sized or aligned-sized")
    p.add_argument("--size", type=int, default=512, help="side of the aligned image (default 512)")
    p.add_argument("--framing", choices=("model", "ffhq"), default="model",
                   help="crop for the project's cameras (default) or the original FFHQ alignment")
    p.add_argument("--domain", choices=("human", "procedural"), default="human",
                   help="3D landmark template for the head pose: a photo of a person (default) or an image "
                        "of the project's procedural heads")
    p.add_argument("--parser", type=Path, default=None, metavar="DIR",
                   help="face-parsing network folder (training/segnet.py) for the mask instead of the landmark "
                        "rules; for images of the procedural heads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ide3d_core.cli import UserError
    from ide3d_core.photo import PhotoError, PrepareOptions, prepare

    if not 64 <= args.size <= 4096:
        raise UserError(f"--size must be between 64 and 4096, got {args.size}")
    parser = None
    if args.parser is not None:
        if not (args.parser / "config.json").is_file():
            raise UserError(f"no parser at {args.parser} (expected config.json and segnet.safetensors)")
        from ide3d_core.commands.portrait_cli import image_parser

        parser = image_parser(args.parser)
    try:
        options = PrepareOptions(size=args.size, framing=args.framing, face_index=args.face, domain=args.domain)
        result = prepare(args.photo, options, mask=args.mask, parser=parser)
    except PhotoError as exc:
        raise UserError(str(exc)) from None
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{args.out}: cannot create the output folder ({exc.strerror})") from None
    written = write_pictures(result, args.out)
    for w in result.warnings:
        print(f"[prepare] warning: {w}")
    print(f"[prepare] yaw {result.yaw:+.1f} deg, pitch {result.pitch:+.1f} deg, roll {result.roll:+.1f} deg "
          f"(face {result.face_index} of {len(result.faces)}, mask from {result.mask_source})")
    print("[prepare] " + ", ".join(f"{k} {v:.0f} ms" for k, v in result.timings.items()))
    print(f"[prepare] wrote {len(written)} files to {args.out}/")
    return 0


def write_pictures(result, out: Path) -> list[Path]:
    """Write the files listed in :data:`FILES` for a :class:`ide3d_core.photo.PreparedPhoto`."""
    import cv2

    from ide3d_core.labels import colorize

    photo = result.photo.rgb
    faces = photo.copy()
    thick = max(1, round(max(photo.shape[:2]) / 400))
    for i, face in enumerate(result.faces):
        color = (0, 220, 0) if i == result.face_index else (230, 60, 60)
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(faces, (x0, y0), (x1, y1), color, thick)
        cv2.putText(faces, str(i), (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, color, thick)
        if i == result.face_index and face.landmarks is not None:
            for x, y in face.landmarks[:, :2]:
                cv2.circle(faces, (int(x), int(y)), max(1, thick // 2), (255, 255, 0), -1)
    s = result.image.shape[0]
    square = np.array([[0, 0], [s, 0], [s, s], [0, s]], dtype=np.float64)
    a, t = result.matrix[:, :2], result.matrix[:, 2]
    corners = (square - t) @ np.linalg.inv(a).T
    cv2.polylines(faces, [np.round(corners).astype(np.int32).reshape(-1, 1, 2)], True, (0, 220, 0), thick)
    color = colorize(result.mask)
    overlay = np.round(0.55 * result.image + 0.45 * color).astype(np.uint8)
    pictures = {"01_photo.png": photo, "02_faces.png": faces, "03_aligned.png": result.image,
                "04_mask.png": color, "04_labels.png": result.mask, "05_overlay.png": overlay}
    paths = []
    for name, arr in pictures.items():
        save_image(arr, out / name)
        paths.append(out / name)
    info = {
        "photo": result.name, "label": [float(v) for v in result.label()],
        "yaw_degrees": result.yaw, "pitch_degrees": result.pitch, "roll_degrees": result.roll,
        "framing": result.framing, "face_index": result.face_index, "faces_found": len(result.faces),
        "mask_source": result.mask_source, "warnings": list(result.warnings),
        "timings_ms": result.timings,
    }
    write_text_atomic(out / "camera.json", json.dumps(info, indent=2))
    paths.append(out / "camera.json")
    return paths
