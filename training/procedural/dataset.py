# SPDX-License-Identifier: GPL-3.0-or-later
"""Writes a procedural-head dataset folder in the EG3D/IDE-3D layout.

Layout (``DIR``)::

    images/00000/img00000000.png     RGB uint8
    images/dataset.json              {"labels": [["00000/img00000000.png", [25 floats]], ...]}
    masks/00000/img00000000.png      single-channel uint8 label ids 0..18 (same relative path)
    masks_color/00000/img00000000.png colourised masks (optional, for people to look at)

Labels are the packed cameras of ide3d_core.cameras (OpenCV cam2world + normalised intrinsics).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ide3d_core.atomic_file import atomic_open
from ide3d_core.cameras import PoseDistribution
from ide3d_core.image_files import save_image
from ide3d_core.images import to_uint8_hwc
from ide3d_core.labels import NUM_CLASSES, colorize
from ide3d_core.progress import CancelToken, ProgressFn, report

from .anatomy import sample_heads
from .heads import HeadBatch
from .render import render_heads
from .stream import sample_cameras

IMAGES_PER_FOLDER = 1000


@dataclass(frozen=True)
class DatasetResult:
    """What :func:`write_dataset` wrote.

    Attributes: out: the dataset folder; count: images written; class_pixels: (19,) int64 pixel count
    per class over all masks; class_images: (19,) int64 number of images in which each class appears.
    """

    out: Path
    count: int
    class_pixels: np.ndarray
    class_images: np.ndarray


def image_seed(seed: int, index: int) -> int:
    """Seed of image ``index`` of a dataset with ``seed`` (a fixed 64-bit mix of the two)."""
    h = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & (2**64 - 1)
    h ^= h >> 31
    return h & (2**63 - 1)


def relative_name(index: int) -> str:
    """EG3D naming: ``00000/img00000000.png`` (1000 images per sub-folder)."""
    return f"{index // IMAGES_PER_FOLDER:05d}/img{index:08d}.png"


def write_dataset(out: Path | str, count: int, resolution: int, seed: int = 0, device: torch.device | str = "cpu",
                  batch_size: int = 16, antialias: int = 2, poses: PoseDistribution = PoseDistribution(),
                  color_masks: bool = True, progress: Optional[ProgressFn] = None,
                  cancel: Optional[CancelToken] = None) -> DatasetResult:
    """Render ``count`` fresh heads (one view each) and write them to ``out``.

    Head and camera of image ``i`` are drawn from their own generator seeded with
    ``image_seed(seed, i)``, so they depend only on ``seed`` and ``i`` (not on the batch size or the
    device). ``dataset.json`` is written last, so an interrupted run leaves no index.
    Raises ``ValueError`` on bad arguments and ``ide3d_core.progress.Cancelled`` when cancelled.
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if not 8 <= resolution <= 4096:
        raise ValueError(f"resolution must be within 8..4096, got {resolution}")
    out = Path(out)
    labels: list[list] = []
    class_pixels = np.zeros(NUM_CLASSES, np.int64)
    class_images = np.zeros(NUM_CLASSES, np.int64)
    report(progress, 0, count, "rendering", cancel)
    done = 0
    while done < count:
        n = min(batch_size, count - done)
        gens = [torch.Generator().manual_seed(image_seed(seed, done + j)) for j in range(n)]
        heads = HeadBatch.concat([sample_heads(1, g, device) for g in gens])
        cams = torch.cat([sample_cameras(1, g, poses) for g in gens])
        r = render_heads(heads, cams.to(heads.device), resolution, antialias)
        rgb = to_uint8_hwc(r.image)
        ids = r.labels.to(torch.uint8).cpu().numpy()
        for j in range(n):
            name = relative_name(done + j)
            _save(out / "images" / name, rgb[j])
            _save(out / "masks" / name, ids[j])
            if color_masks:
                _save(out / "masks_color" / name, colorize(ids[j]))
            counts = np.bincount(ids[j].reshape(-1), minlength=NUM_CLASSES)
            class_pixels += counts
            class_images += counts > 0
            labels.append([name, [float(v) for v in cams[j].tolist()]])
        done += n
        report(progress, done, count, f"{done}/{count} images", cancel)
    (out / "images").mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "images" / "dataset.json", "w") as f:
        json.dump({"labels": labels}, f)
    return DatasetResult(out=out, count=count, class_pixels=class_pixels, class_images=class_images)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(array, path, durable=False)  # thousands of files: atomic, without an fsync each
