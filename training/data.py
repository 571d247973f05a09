# SPDX-License-Identifier: GPL-3.0-or-later
"""Training data: a dataset folder reader, procedural heads on the fly, and flip augmentation.

Dataset folder layout (EG3D/IDE-3D, written by ``ide3d dataset procedural`` or prepared from FFHQ)::

    DIR/images/dataset.json          {"labels": [["00000/img00000000.png", [25 floats]], ...]}
    DIR/images/00000/img00000000.png RGB uint8, square
    DIR/masks/00000/img00000000.png  single-channel uint8 label ids 0..18, same relative path and size

Camera labels follow :mod:`ide3d_core.cameras` (OpenCV cam2world + normalised intrinsics). Every
error names the offending file.

Sources are *stateless*: ``source.batch(step, rank, batch_size)`` is a pure function of
``(seed, step, rank)``, so a resumed run draws exactly the batches the uninterrupted run would have.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from ide3d_core.cameras import LABEL_DIM, PoseDistribution, mirror_label
from ide3d_core.images import from_uint8_hwc
from ide3d_core.labels import NUM_CLASSES, mirror_labels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DatasetError(ValueError):
    """A dataset folder is missing a file or holds inconsistent data (the message names the file)."""


@dataclass
class DataBatch:
    """A batch of real training data on one device.

    Attributes:
        image: [B, 3, R, R] float32 in [-1, 1].
        labels: [B, R, R] int64 class ids 0..18.
        cameras: [B, 25] float32 packed camera labels.
    """

    image: torch.Tensor
    labels: torch.Tensor
    cameras: torch.Tensor


class DataSource(Protocol):
    resolution: int

    def batch(self, step: int, rank: int, batch_size: int) -> DataBatch: ...


def step_rng(seed: int, step: int, rank: int, stream: int = 0) -> np.random.Generator:
    """The numpy generator of one (seed, step, rank, stream): independent draws for every step/rank."""
    return np.random.default_rng([int(seed), int(step), int(rank), int(stream)])


# ----------------------------------------------------------------------------------------------
# Flip augmentation
# ----------------------------------------------------------------------------------------------

def flip_sample(image: np.ndarray, labels: np.ndarray, camera: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror one sample horizontally: image (H, W, 3) and labels (H, W) are flipped left-right, l_/r_
    classes swapped (:func:`ide3d_core.labels.mirror_labels`) and the camera mirrored through the
    face's symmetry plane (:func:`ide3d_core.cameras.mirror_label`), so the flipped image is what the
    mirrored camera sees of the mirrored head."""
    return (np.ascontiguousarray(image[:, ::-1]), mirror_labels(labels),
            mirror_label(np.asarray(camera, dtype=np.float32)))


# ----------------------------------------------------------------------------------------------
# Dataset folder
# ----------------------------------------------------------------------------------------------

class DatasetFolder:
    """Reader of a dataset folder (see the module docstring); checks the layout when opened.

    Opening checks that ``dataset.json`` parses, every label has 25 numbers, every listed image and
    its mask exist, every image in ``images/`` has a label, and all images and masks share one square
    size (from the file headers). Mask ids are checked when a mask is read (or by
    :meth:`validate`), since that needs the pixels.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder not found")
        self.image_dir = self.root / "images"
        self.mask_dir = self.root / "masks"
        meta = self.image_dir / "dataset.json"
        if not meta.is_file():
            raise DatasetError(f"{meta}: missing (the camera labels of the dataset)")
        try:
            entries = json.loads(meta.read_text())["labels"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(f"{meta}: not a dataset.json with a 'labels' list ({exc})") from None
        if not isinstance(entries, list) or not entries:
            raise DatasetError(f"{meta}: 'labels' is empty")
        files: list[str] = []
        cams = np.zeros((len(entries), LABEL_DIM), np.float32)
        for i, entry in enumerate(entries):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
                raise DatasetError(f"{meta}: entry {i} is not [relative_path, [25 numbers]]")
            rel, lab = entry
            if lab is None:
                raise DatasetError(f"{self.image_dir / rel}: missing camera label in {meta}")
            arr = np.asarray(lab, dtype=np.float64)
            if arr.shape != (LABEL_DIM,) or not np.isfinite(arr).all():
                raise DatasetError(f"{self.image_dir / rel}: camera label in {meta} must be "
                                   f"{LABEL_DIM} finite numbers, got shape {arr.shape}")
            files.append(rel)
            cams[i] = arr
        self.files = files
        self.cameras = cams
        self._check_files(meta)

    def _check_files(self, meta: Path) -> None:
        listed = set(self.files)
        for path in sorted(self.image_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                rel = path.relative_to(self.image_dir).as_posix()
                if rel not in listed:
                    raise DatasetError(f"{path}: image has no camera label in {meta}")
        size = None
        for rel in self.files:
            img_path, mask_path = self.image_dir / rel, self.mask_dir / rel
            if not img_path.is_file():
                raise DatasetError(f"{img_path}: listed in {meta} but missing")
            if not mask_path.is_file():
                raise DatasetError(f"{mask_path}: label mask missing (every image needs one)")
            with Image.open(img_path) as im:
                isize = im.size
            with Image.open(mask_path) as mk:
                msize, mmode = mk.size, mk.mode
            if isize[0] != isize[1]:
                raise DatasetError(f"{img_path}: images must be square, got {isize[0]}x{isize[1]}")
            if size is None:
                size = isize
            if isize != size:
                raise DatasetError(f"{img_path}: size {isize[0]}x{isize[1]} differs from the dataset's "
                                   f"{size[0]}x{size[1]}")
            if msize != isize:
                raise DatasetError(f"{mask_path}: mask size {msize[0]}x{msize[1]} differs from its image's "
                                   f"{isize[0]}x{isize[1]}")
            if mmode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"{mask_path}: masks must be single-channel label ids, got mode {mmode}")
        self.resolution = int(size[0])

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, resolution: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample ``index`` -> image (R, R, 3) uint8, labels (R, R) uint8, camera (25,) float32.

        A ``resolution`` other than the stored one resizes the image (Lanczos) and the mask (nearest)."""
        rel = self.files[index]
        img_path, mask_path = self.image_dir / rel, self.mask_dir / rel
        with Image.open(img_path) as im:
            im = im.convert("RGB")
            if resolution and resolution != im.size[0]:
                im = im.resize((resolution, resolution), Image.LANCZOS)
            image = np.asarray(im, dtype=np.uint8)
        with Image.open(mask_path) as mk:
            if resolution and resolution != mk.size[0]:
                mk = mk.resize((resolution, resolution), Image.NEAREST)
            labels = np.asarray(mk)
        if labels.ndim != 2:
            raise DatasetError(f"{mask_path}: masks must be single-channel label ids")
        if labels.size and int(labels.max()) >= NUM_CLASSES:
            raise DatasetError(f"{mask_path}: unknown label id {int(labels.max())} "
                               f"(ids are 0..{NUM_CLASSES - 1})")
        return image, labels.astype(np.uint8), self.cameras[index].copy()

    def validate(self) -> None:
        """Read every mask once and raise :class:`DatasetError` on the first unknown label id."""
        for i in range(len(self)):
            self.load(i)


class FolderSource:
    """Random batches (with replacement) from a :class:`DatasetFolder`, optional x-flip, at ``resolution``.

    Images of a batch are decoded by ``workers`` threads (PNG decoding releases the GIL), and the
    batches of the next ``prefetch`` steps are prepared in the background while the current step
    trains; both keep the result a pure function of ``(seed, step, rank)``."""

    def __init__(self, folder: DatasetFolder, resolution: int, seed: int, device: torch.device,
                 xflip: bool = True, workers: int = 4, prefetch: int = 2) -> None:
        self.folder, self.resolution, self.seed = folder, int(resolution), int(seed)
        self.device, self.xflip, self.prefetch = torch.device(device), xflip, int(prefetch)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ide3d-data")
        self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ide3d-prefetch")
        self._pending: dict[tuple[int, int, int], Future] = {}

    def batch(self, step: int, rank: int, batch_size: int) -> DataBatch:
        key = (step, rank, batch_size)
        fut = self._pending.pop(key, None)
        for k in [k for k in self._pending if k[0] < step]:  # a resumed or restarted sequence
            self._pending.pop(k).cancel()
        for ahead in range(1, self.prefetch + 1):
            nxt = (step + ahead, rank, batch_size)
            if nxt not in self._pending:
                self._pending[nxt] = self._ahead.submit(self._load_batch, *nxt)
        return fut.result() if fut is not None else self._load_batch(step, rank, batch_size)

    def _load_one(self, index: int, flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img, lab, cam = self.folder.load(index, self.resolution)
        return flip_sample(img, lab, cam) if flip else (img, lab, cam)

    def _load_batch(self, step: int, rank: int, batch_size: int) -> DataBatch:
        rng = step_rng(self.seed, step, rank)
        idx = rng.integers(0, len(self.folder), size=batch_size)
        flips = rng.random(batch_size) < 0.5 if self.xflip else np.zeros(batch_size, bool)
        samples = list(self._pool.map(self._load_one, [int(i) for i in idx], [bool(f) for f in flips]))
        images, labels, cams = zip(*samples)
        image = from_uint8_hwc(np.stack(images))
        return DataBatch(image.to(self.device), torch.from_numpy(np.stack(labels).astype(np.int64)).to(self.device),
                         torch.from_numpy(np.stack(cams)).to(self.device))


# ----------------------------------------------------------------------------------------------
# Procedural heads
# ----------------------------------------------------------------------------------------------

def random_cameras(rng: np.random.Generator, n: int, poses: PoseDistribution,
                   device: torch.device) -> torch.Tensor:
    """[n, 25] labels of cameras drawn from the pose prior ``poses`` (host draw, copied to ``device``).

    Uses the procedural heads' vectorised ``orbit_labels`` (tested there against
    :func:`ide3d_core.cameras.orbit_camera`, which stays the definition)."""
    from training.procedural import orbit_labels

    labels = orbit_labels(poses.sample_angles(rng, n), poses.radius, poses.focal)
    return torch.from_numpy(labels).to(device)


class ProceduralSource:
    """Fresh procedural heads and cameras every batch, rendered on ``device`` (GPU when training there).

    Batch ``(step, rank)`` uses heads drawn with a CPU torch generator and cameras drawn with a numpy
    generator, both seeded from ``(seed, step, rank)``, so the data do not depend on the device."""

    def __init__(self, resolution: int, seed: int, device: torch.device,
                 poses: PoseDistribution = PoseDistribution(), antialias: int = 2) -> None:
        self.resolution, self.seed, self.device = int(resolution), int(seed), torch.device(device)
        self.poses, self.antialias = poses, antialias

    def batch(self, step: int, rank: int, batch_size: int) -> DataBatch:
        from training.procedural import render_heads, sample_heads

        rng = step_rng(self.seed, step, rank)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))  # CPU: same heads on any device
        heads = sample_heads(batch_size, gen, self.device)
        cams = random_cameras(rng, batch_size, self.poses, self.device)
        r = render_heads(heads, cams, self.resolution, antialias=self.antialias)
        return DataBatch(r.image.float(), r.labels.long(), r.cameras.float())


def open_source(spec: str, resolution: int, seed: int, device: torch.device,
                xflip: bool = True) -> DataSource:
    """``"procedural"`` -> :class:`ProceduralSource`; anything else is a dataset folder path."""
    if spec == "procedural":
        return ProceduralSource(resolution, seed, device)
    return FolderSource(DatasetFolder(spec), resolution, seed, device, xflip=xflip)
