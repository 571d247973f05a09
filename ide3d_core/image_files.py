# SPDX-License-Identifier: GPL-3.0-or-later
"""Writing image and array files atomically (through :mod:`ide3d_core.atomic_file`), so a killed or
failed write never leaves a truncated image over a good one.

The format follows the file's suffix (``.png``, ``.jpg``, ``.webp``, ...), as ``PIL.Image.save(path)``
would choose it; the temporary file's own name says nothing about the format.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ide3d_core.atomic_file import atomic_open


def save_image(image: Any, path: str | os.PathLike, mode: str | None = None, durable: bool = True,
               **params: Any) -> Path:
    """Write ``image`` (a ``PIL.Image`` or an array ``Image.fromarray`` accepts, with ``mode``) to
    ``path`` atomically (``durable``: see :func:`~ide3d_core.atomic_file.atomic_path`); ``params`` go to
    ``Image.save``. Returns the path."""
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image file type {path.suffix!r} ({path.name})")
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image), mode)
    with atomic_open(path, "wb", durable=durable) as f:
        img.save(f, format=fmt, **params)
    return path


def save_npy(array: np.ndarray, path: str | os.PathLike) -> Path:
    """``np.save`` to ``path`` (which should end in ``.npy``) atomically."""
    with atomic_open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return Path(path)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)
