# SPDX-License-Identifier: GPL-3.0-or-later
"""The one owner of the image value conventions.

* The generator's images are float in [-1, 1] (``x = v / 127.5 - 1`` for an 8-bit value ``v``), channels
  first: ``[B, 3, H, W]``. 8-bit images are sRGB ``uint8``; files and numpy arrays are channels last
  ``(H, W, 3)``. Conversion to 8 bits clamps to [-1, 1] and rounds to the nearest value (ties to even)
  (``round((x + 1) * 127.5)``), so ``from_uint8`` followed by ``to_uint8`` is the identity.
* Opacities, mesh colours and baked textures are float in [0, 1]; :func:`unit_to_uint8` rounds
  ``x * 255`` after clamping.
* The view file triplet: ``NAME.png`` (the image), ``NAME_labels.png`` (8-bit label ids,
  :mod:`ide3d_core.labels`) and ``NAME_seg.png`` (the ids in the label palette), written by
  :func:`write_view_triplet`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

Array = Union[np.ndarray, "torch.Tensor"]


def to_uint8(image: "torch.Tensor") -> "torch.Tensor":
    """Float in [-1, 1], any shape -> uint8 0..255 of the same shape, on the CPU."""
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to("cpu").byte()


def to_uint8_hwc(image: "torch.Tensor") -> np.ndarray:
    """``[3, H, W]`` or ``[B, 3, H, W]`` float in [-1, 1] -> ``(H, W, 3)`` / ``(B, H, W, 3)`` uint8 numpy."""
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"expected [3, H, W] or [B, 3, H, W], got {tuple(image.shape)}")
    return np.ascontiguousarray(to_uint8(image).movedim(-3, -1).numpy())


def from_uint8(image: "torch.Tensor") -> "torch.Tensor":
    """uint8 0..255 tensor, any shape -> float32 in [-1, 1] of the same shape (and device)."""
    return image.float() / 127.5 - 1.0


def from_uint8_hwc(image: Array) -> "torch.Tensor":
    """``(H, W, 3)`` or ``(B, H, W, 3)`` uint8 (numpy or tensor) -> ``[1, 3, H, W]`` / ``[B, 3, H, W]``
    float32 in [-1, 1] (CPU for numpy input)."""
    import torch

    if isinstance(image, np.ndarray):
        a = np.ascontiguousarray(image)
        t = torch.from_numpy(a if a.flags.writeable else a.copy())  # read-only arrays (PIL's) warn in torch
    else:
        t = image
    if t.ndim not in (3, 4) or t.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) or (B, H, W, 3) uint8, got {tuple(t.shape)}")
    t = t[None] if t.ndim == 3 else t
    return from_uint8(t.permute(0, 3, 1, 2)).contiguous()


def unit_to_uint8(values: Array) -> np.ndarray:
    """Float in [0, 1] (numpy or tensor) -> uint8 numpy of the same shape (clamped, rounded)."""
    if not isinstance(values, np.ndarray):
        values = values.detach().float().cpu().numpy()
    scaled = np.asarray(values, dtype=np.float32) * np.float32(255.0)  # float32: a 4096^2 texture stays small
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def view_triplet_paths(path: Path) -> tuple[Path, Path, Path]:
    """``(NAME.png, NAME_labels.png, NAME_seg.png)`` for ``path`` = ``NAME.png``."""
    path = Path(path)
    stem = path.with_suffix("")
    return path, Path(f"{stem}_labels.png"), Path(f"{stem}_seg.png")


def write_view_triplet(path: Path, image: np.ndarray, ids: np.ndarray, seg: bool = True) -> list[Path]:
    """Write ``image`` ((H, W, 3) RGB or (H, W, 4) RGBA uint8) to ``path``, the label ids ((H, W) uint8) to
    ``NAME_labels.png`` and, with ``seg``, their palette colours to ``NAME_seg.png``. Returns the paths."""
    from ide3d_core.image_files import save_image  # each file atomically
    from ide3d_core.labels import colorize

    files = list(view_triplet_paths(path))[: 3 if seg else 2]
    files[0].parent.mkdir(parents=True, exist_ok=True)
    image = np.ascontiguousarray(image)
    save_image(image, files[0], "RGBA" if image.shape[-1] == 4 else "RGB")
    ids = np.ascontiguousarray(ids, dtype=np.uint8)
    save_image(ids, files[1], "L")
    if seg:
        save_image(colorize(ids), files[2], "RGB")
    return files
