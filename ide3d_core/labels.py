# SPDX-License-Identifier: GPL-3.0-or-later
"""The 19-class semantic label map (CelebAMask-HQ order), its palette, and mask encoding/decoding.

This is the only module that knows the label ids, names and colours. It needs only numpy, so the
Blender add-on can import it inside Blender's Python.

Sides: ``l_`` / ``r_`` mean the **subject's own** left / right. In the model world the subject's left
is ``+x``; in a frontal view it appears on the *image's right*. Mirroring an image horizontally
(or mirroring a camera, :meth:`ide3d_core.cameras.Camera.mirrored`) swaps ``l_`` and ``r_`` classes
(:data:`MIRROR_PERMUTATION`).

Label images are single-channel uint8 arrays of ids 0..18 (``_labels.png`` files); colourised masks
use :data:`PALETTE` (sRGB bytes, the CelebAMask-HQ/IDE-3D colours).
"""
from __future__ import annotations

import numpy as np

NAMES: tuple[str, ...] = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
NUM_CLASSES = len(NAMES)  # 19
ID = {name: i for i, name in enumerate(NAMES)}

#: Human-readable names for user interfaces.
DISPLAY_NAMES: tuple[str, ...] = (
    "Background", "Skin", "Nose", "Glasses", "Left eye", "Right eye", "Left brow", "Right brow",
    "Left ear", "Right ear", "Mouth (inside)", "Upper lip", "Lower lip", "Hair", "Hat", "Earring",
    "Necklace", "Neck", "Clothes",
)

#: (19, 3) uint8 sRGB colour of each class.
PALETTE = np.array([
    (0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204),
    (0, 255, 255), (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0), (255, 255, 0),
    (0, 0, 153), (0, 0, 204), (255, 51, 153), (0, 204, 204), (0, 51, 0), (255, 153, 51), (0, 204, 0),
], dtype=np.uint8)
PALETTE.setflags(write=False)

#: Class id -> class id after a horizontal mirror (l_* <-> r_*).
MIRROR_PERMUTATION = np.arange(NUM_CLASSES, dtype=np.int64)
for _a, _b in (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear")):
    MIRROR_PERMUTATION[ID[_a]], MIRROR_PERMUTATION[ID[_b]] = ID[_b], ID[_a]
MIRROR_PERMUTATION.setflags(write=False)

#: Coarse groups (IDE-3D's 5-region grouping): background, complexion, eyes & mouth, hair, wearing.
REGION_GROUPS: dict[str, tuple[int, ...]] = {
    "background": (0,),
    "complexion": (1, 2, 8, 9, 17),
    "eyes_mouth": (4, 5, 6, 7, 10, 11, 12),
    "hair": (13,),
    "wearing": (3, 14, 15, 16, 18),
}


def parse_classes(spec: str | list[str] | tuple[str, ...]) -> tuple[int, ...]:
    """Class ids from names or ids (``"hair,cloth"``, ``["hair", "18"]``) or group names
    (:data:`REGION_GROUPS`). Raises ``ValueError`` naming an unknown entry."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[int] = []
    for raw in items:
        item = str(raw).strip()
        if not item:
            continue
        if item in ID:
            out.append(ID[item])
        elif item in REGION_GROUPS:
            out.extend(REGION_GROUPS[item])
        elif item.isdigit() and int(item) < NUM_CLASSES:
            out.append(int(item))
        else:
            raise ValueError(f"unknown class {item!r}; known: {', '.join(NAMES)} "
                             f"or groups {', '.join(REGION_GROUPS)}")
    if not out:
        raise ValueError("no classes given")
    return tuple(sorted(set(out)))


def colorize(labels: np.ndarray) -> np.ndarray:
    """(..., H, W) integer ids -> (..., H, W, 3) uint8 palette colours."""
    ids = np.asarray(labels)
    if ids.size and (ids.min() < 0 or ids.max() >= NUM_CLASSES):
        raise ValueError(f"label ids must be in 0..{NUM_CLASSES - 1}")
    return PALETTE[ids.astype(np.int64)]


def decode_colors(rgb: np.ndarray, max_distance: float | None = None) -> np.ndarray:
    """Snap an RGB mask to the nearest palette colour and return (H, W) uint8 label ids.

    Exact palette pixels are decoded by table look-up; only the rest (anti-aliased fringes, JPEG noise)
    go through the nearest-colour search, so a clean 512 x 512 mask decodes in milliseconds.

    Args:
        rgb: (H, W, 3) or (H, W, 4) uint8 (alpha ignored) or float in [0, 1].
        max_distance: if given, raise ``ValueError`` when more than half of the pixels are farther
            than this (Euclidean, 0..255 units) from every palette colour (the image is not a mask).
    """
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"a colour mask must be (H, W, 3|4), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    arr = arr[..., :3]
    keys = (arr[..., 0].astype(np.int32) << 16) | (arr[..., 1].astype(np.int32) << 8) | arr[..., 2]
    pal_keys = (PALETTE[:, 0].astype(np.int32) << 16) | (PALETTE[:, 1].astype(np.int32) << 8) | PALETTE[:, 2]
    order = np.argsort(pal_keys)
    pos = np.clip(np.searchsorted(pal_keys[order], keys), 0, NUM_CLASSES - 1)
    out = order[pos].astype(np.uint8)
    inexact = pal_keys[order][pos] != keys
    if inexact.any():
        px = arr[inexact].astype(np.float32)
        d2 = ((px[:, None, :] - PALETTE[None].astype(np.float32)) ** 2).sum(-1)
        out[inexact] = d2.argmin(1).astype(np.uint8)
        if max_distance is not None:
            far = np.sqrt(d2.min(1)) > max_distance
            if far.sum() > 0.5 * keys.size:
                raise ValueError("the image does not look like a label mask: most pixels are far "
                                 "from every palette colour")
    return out


def decode_mask(image: np.ndarray) -> np.ndarray:
    """A mask in any supported form -> (H, W) uint8 ids.

    Single-channel images are taken as ids (values must be < 19); RGB(A) images are snapped to the
    palette (:func:`decode_colors`)."""
    arr = np.asarray(image)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        ids = arr.reshape(arr.shape[0], arr.shape[1])
        if ids.size and (ids.min() < 0 or ids.max() >= NUM_CLASSES):
            raise ValueError(f"a single-channel label image must hold ids 0..{NUM_CLASSES - 1}, "
                             f"found {int(ids.max())}")
        return ids.astype(np.uint8)
    return decode_colors(arr, max_distance=60.0)


def mirror_labels(labels: np.ndarray) -> np.ndarray:
    """Horizontally mirror a (..., H, W) label image, swapping l_/r_ classes."""
    ids = np.asarray(labels)
    return MIRROR_PERMUTATION[ids[..., ::-1].astype(np.int64)].astype(ids.dtype)


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (19, H, W) float32 one-hot."""
    ids = np.asarray(labels).astype(np.int64)
    return (np.arange(NUM_CLASSES)[:, None, None] == ids[None]).astype(np.float32)
