# SPDX-License-Identifier: GPL-3.0-or-later
"""The views of a (multi-view) inversion: input checks, the primary view, robust view weights, odd views.

A view is one picture of the head: an image, an optional label mask and an optional camera
(:class:`InversionView`). :func:`~ide3d_core.inversion.procedure.invert_views` fits one set of codes and
one pivotal-tuned generator to all of them; this module holds the pure functions it uses on the views:

* :func:`prepare_target` -- an image in any accepted form -> [1, 3, R, R] float32 in [-1, 1] at the
  generator's resolution (bilinear, antialiased when shrinking);
* :func:`check_labels` / :func:`has_face` -- a mask -> (R, R) uint8 ids; whether it shows a face at all
  (a view without one is skipped with a note, never fitted);
* :func:`primary_view` -- the most frontal view (smallest angle between its camera and the canonical
  front direction): the encoders initialise from it and the document keeps it as *the* source view;
* :func:`robust_weights` -- Cauchy weights of the per-view losses, so one bad view (another person, a
  wrong camera, an occluded photo) cannot dominate the shared codes;
* :func:`odd_views` -- views whose final fit is far worse than the other views' (apparently a different
  person), named in a warning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ide3d_core.cameras import Camera
from ide3d_core.images import from_uint8_hwc
from ide3d_core.labels import ID, NUM_CLASSES

#: Classes that make a face: a view whose mask has fewer than :data:`MIN_FACE_FRACTION` of its pixels
#: in these classes shows no face (the back of a head, an empty frame) and is skipped.
FACE_CLASSES = tuple(ID[n] for n in ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "mouth",
                                     "u_lip", "l_lip"))
MIN_FACE_FRACTION = 0.01


class NoUsableViews(ValueError):
    """Every view given to the inversion was unusable (no face, or none given); one line for the user."""


@dataclass(frozen=True, eq=False)
class InversionView:
    """One picture of the head to invert.

    Attributes:
        image: (H, W, 3) uint8 RGB, or [3, H, W] / [1, 3, H, W] float in [-1, 1]; any square size
            (resized to the generator's resolution).
        mask: (H, W) uint8 label ids (:mod:`ide3d_core.labels`) of the image, or None.
        camera: (25,) packed camera label of the image, or None (predicted by the encoder).
        name: how messages name this view (a file name; default "view <i>").
    """

    image: np.ndarray | torch.Tensor
    mask: np.ndarray | None = None
    camera: np.ndarray | None = None
    name: str = ""


@dataclass(frozen=True)
class ViewReport:
    """What the inversion did with one view.

    Attributes:
        name: the view's name. index: its position in the input list.
        used: False when the view was skipped (``note`` says why); the other fields are then empty.
        camera: (25,) label the view was fitted with (given or predicted), or None.
        yaw, pitch: that camera's yaw and pitch in degrees (:meth:`Camera.yaw_pitch`).
        mask_source: "given", "parser" or "self".
        weight: the view's final robust weight (:func:`robust_weights`, normalised to sum to 1).
        psnr: per stage name -> PSNR (dB) of the render against this view: its residual.
        loss: per stage name -> this view's loss.
        note: why a view was skipped, or a warning about it ("" when none).
    """

    name: str
    index: int
    used: bool
    camera: np.ndarray | None = None
    yaw: float = 0.0
    pitch: float = 0.0
    mask_source: str = ""
    weight: float = 0.0
    psnr: dict[str, float] | None = None
    loss: dict[str, float] | None = None
    note: str = ""

    def summary(self) -> dict:
        """JSON-able fields (for the portrait document's records)."""
        return {"name": self.name, "index": self.index, "used": self.used, "yaw": round(self.yaw, 3),
                "pitch": round(self.pitch, 3), "mask_source": self.mask_source, "weight": round(self.weight, 4),
                "psnr": {k: round(v, 3) for k, v in (self.psnr or {}).items()},
                "loss": {k: round(v, 6) for k, v in (self.loss or {}).items()}, "note": self.note}


def image_to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> [1, 3, H, W] float32 in [-1, 1]; tensors [3,H,W]/[1,3,H,W] pass through."""
    if torch.is_tensor(image):
        t = image.float()
        return t[None] if t.ndim == 3 else t
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {arr.dtype} {arr.shape}")
    return from_uint8_hwc(arr)


def prepare_target(image: np.ndarray | torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """An image (see :class:`InversionView`) -> [1, 3, size, size] float32 in [-1, 1] on ``device``."""
    t = image_to_tensor(image).to(device)
    if t.ndim != 4 or t.shape[:2] != (1, 3):
        raise ValueError(f"image must be one RGB picture, got a tensor of shape {tuple(t.shape)}")
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=t.shape[-1] > size)
    return t


def check_labels(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) label ids -> (size, size) uint8 ids (nearest neighbour: never invents a class)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W) label ids, got shape {m.shape}")
    if m.size and (m.min() < 0 or m.max() >= NUM_CLASSES):
        raise ValueError(f"mask ids must be in 0..{NUM_CLASSES - 1}")
    t = torch.from_numpy(m.astype(np.int64))[None, None].float()
    return F.interpolate(t, size=(size, size), mode="nearest")[0, 0].to(torch.uint8).numpy()


def has_face(labels: np.ndarray, min_fraction: float = MIN_FACE_FRACTION) -> bool:
    """Whether at least ``min_fraction`` of the pixels of an (H, W) id map are face classes."""
    return bool(np.isin(labels, FACE_CLASSES).mean() >= min_fraction)


def yaw_pitch_deg(camera: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees of a packed camera label (:meth:`Camera.yaw_pitch`)."""
    yaw, pitch = Camera.from_label(np.asarray(camera, dtype=np.float32)).yaw_pitch()
    return math.degrees(yaw), math.degrees(pitch)


def primary_view(angles: Sequence[tuple[float, float]]) -> int:
    """Index of the most frontal of (yaw, pitch) degree pairs: the smallest angle between the camera's
    direction from the head and the front direction (ties: the first)."""
    if not angles:
        raise NoUsableViews("no views")
    cos = [math.cos(math.radians(y)) * math.cos(math.radians(p)) for y, p in angles]
    return int(np.argmax(cos))


def robust_weights(losses: torch.Tensor, scale: float) -> torch.Tensor:
    """Cauchy weights of per-view losses [N] -> [N], summing to 1 (no gradient).

    ``w_i ∝ 1 / (1 + (l_i / (scale * median(l)))^2)``: views near the median count fully; a view whose
    loss is many times the median counts as ``(scale * median / l_i)^2`` of one, so its pull on the
    shared codes stays bounded however bad it is (with plain averaging a view with 5x the loss of the
    others would get 5x their gradient). ``scale <= 0`` gives equal weights. One view always gets 1.
    """
    l = losses.detach().float().clamp_min(1e-12)
    if scale <= 0 or l.numel() == 1:
        return torch.full_like(l, 1.0 / l.numel())
    w = 1.0 / (1.0 + (l / (scale * l.median())) ** 2)
    return w / w.sum()


def odd_views(psnr_db: Sequence[float], margin_db: float) -> list[int]:
    """Indices of views whose PSNR is more than ``margin_db`` below the median of the *other* views
    (a fit far worse than the rest: apparently another person, or a wrong camera). Needs >= 2 views; with
    two, only the worse one can be named."""
    out = []
    p = np.asarray(psnr_db, dtype=np.float64)
    if p.size < 2:
        return out
    for i in range(p.size):
        others = np.delete(p, i)
        if p[i] < np.median(others) - margin_db and (p.size > 2 or p[i] < others.max()):
            out.append(i)
    return out
