# SPDX-License-Identifier: GPL-3.0-or-later
"""Limits and checks of portrait documents (``.ide3d``) read from untrusted files.

Artists trade portrait files, so :func:`ide3d_core.portrait.decode_portrait` treats every byte as
hostile. Everything here is checked *before* the expensive step it protects:

* sizes: the file, each zip member's declared *and actual* decompressed size (a member is read in
  chunks and refused the moment it passes its limit, so a 3 GiB deflate bomb costs one chunk), the
  total over members, and the pixel count of embedded images (from the PNG header, before decoding);
* JSON: the header's nesting depth and record counts;
* values: shapes, dtypes, finiteness and ranges of every tensor and field (codes, restyle codes,
  restyle classes, weight deltas, the camera, the cursor);
* the camera must see the head: a label that is not a rigid camera, puts the head behind or outside
  the frame, or sits inside the head, is an error rather than a black image.

Every failure is a :class:`PortraitError` with one line.
"""
from __future__ import annotations

import math
import zipfile
from typing import Any

import numpy as np

#: Largest ``.ide3d`` file read at all (bytes).
MAX_FILE_BYTES = 512 * 2**20
#: Largest decompressed size of each member (bytes).
MAX_MEMBER_BYTES = {"portrait.json": 16 * 2**20, "tensors.safetensors": 320 * 2**20,
                    "source.png": 64 * 2**20, "source_mask.png": 16 * 2**20}
#: Most source views of a multi-view inversion (``views/{i}.png``, each bounded like ``source.png``,
#: its mask like ``source_mask.png``).
MAX_VIEWS = 16
#: Largest decompressed size of all members together (bytes).
MAX_TOTAL_BYTES = 384 * 2**20
#: Deepest nesting of the JSON header (the real header is 5 deep; edit parameters add a few).
MAX_JSON_DEPTH = 32
#: Most edit records in one document.
MAX_HISTORY = 10_000
#: Largest side of the embedded source image and mask (pixels).
MAX_IMAGE_SIDE = 4096
#: Largest magnitude of a latent code entry (real codes stay within a few tens).
MAX_CODE_ABS = 1e4
#: Camera distance from the head's centre (model units; the canonical camera is at 2.7).
CAMERA_DISTANCE = (1.0, 100.0)
#: Normalised focal lengths accepted (the canonical camera has 4.26).
FOCAL_RANGE = (0.05, 100.0)
_CHUNK = 1 << 20


class PortraitError(ValueError):
    """A portrait file could not be read or written; the message is one line for the user."""


def require(cond: bool, what: str) -> None:
    if not cond:
        raise PortraitError(what)


# ------------------------------------------------------------------------------------------------
# Bounded reading
# ------------------------------------------------------------------------------------------------

class MemberReader:
    """Reads zip members with per-member and total decompressed-size limits (declared sizes are
    checked first, actual sizes while reading, since a crafted directory may lie)."""

    def __init__(self, zf: zipfile.ZipFile, name: str) -> None:
        self.zf, self.name, self.total = zf, name, 0

    def read(self, member: str) -> bytes:
        key = member if member in MAX_MEMBER_BYTES else \
            ("source_mask.png" if member.endswith("_mask.png") else "source.png")
        limit = MAX_MEMBER_BYTES[key]
        info = self.zf.getinfo(member)
        require(info.file_size <= limit, f"{self.name}: member {member} declares {info.file_size} bytes "
                f"(limit {limit})")
        chunks, size = [], 0
        try:
            with self.zf.open(info) as f:
                while True:
                    chunk = f.read(_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    require(size <= limit, f"{self.name}: member {member} decompresses to more than "
                            f"{limit} bytes")
                    require(self.total + size <= MAX_TOTAL_BYTES, f"{self.name}: members decompress to "
                            f"more than {MAX_TOTAL_BYTES} bytes in total")
                    chunks.append(chunk)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError, NotImplementedError, RuntimeError) as exc:
            if isinstance(exc, PortraitError):
                raise
            raise PortraitError(f"{self.name} is damaged: member {member} ({short(exc)})") from None
        self.total += size
        return b"".join(chunks)


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion limit to hit)."""
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        depth = max(depth, d)
        if d > MAX_JSON_DEPTH:
            return d
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return depth


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when ``data`` is no PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# ------------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------------

def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_codes(t: Any, shape: tuple[int, ...] | None, what: str) -> None:
    """``t``: a float32 [1, num_ws, w_dim] tensor, finite, entries within +-MAX_CODE_ABS, of ``shape``
    when given."""
    import torch

    require(isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.ndim == 3 and t.shape[0] == 1
            and t.shape[1] >= 1 and t.shape[2] >= 1,
            f"{what} must be a float32 [1, num_ws, w_dim] tensor, got {getattr(t, 'dtype', '?')} "
            f"{tuple(getattr(t, 'shape', ()))}")
    if shape is not None:
        require(tuple(t.shape) == tuple(shape), f"{what} have shape {tuple(t.shape)}, expected {tuple(shape)}")
    require(bool(torch.isfinite(t).all()), f"{what} hold NaN or infinite values")
    require(float(t.abs().max()) <= MAX_CODE_ABS, f"{what} hold values beyond +-{MAX_CODE_ABS:g}")


#: the largest edge of a shape residual's grid (:mod:`ide3d_core.shape_residual`; 32 by default)
MAX_RESIDUAL_SIDE = 512
#: the largest magnitude of a shape residual's entries (plane-feature units)
MAX_RESIDUAL_ABS = 6e4


def check_residual(t: Any, what: str) -> None:
    """``t``: a float16 [1, 3, C, r, r] tensor (a shape residual), 1 <= r <= MAX_RESIDUAL_SIDE, finite,
    entries within +-MAX_RESIDUAL_ABS."""
    import torch

    require(isinstance(t, torch.Tensor) and t.dtype == torch.float16 and t.ndim == 5 and t.shape[:2] == (1, 3)
            and t.shape[2] >= 1 and 1 <= t.shape[3] == t.shape[4] <= MAX_RESIDUAL_SIDE,
            f"{what} must be a float16 [1, 3, C, r, r] tensor, got {getattr(t, 'dtype', '?')} "
            f"{tuple(getattr(t, 'shape', ()))}")
    require(bool(torch.isfinite(t).all()), f"{what} hold NaN or infinite values")
    require(float(t.abs().max()) <= MAX_RESIDUAL_ABS, f"{what} hold values beyond +-{MAX_RESIDUAL_ABS:g}")


def check_classes(value: Any, what: str, num_classes: int) -> tuple[int, ...]:
    """A non-empty list of distinct class ids in ``0..num_classes-1``."""
    require(isinstance(value, list) and 0 < len(value) <= num_classes and all(is_int(c) for c in value),
            f"{what} must be a list of 1..{num_classes} integer class ids")
    require(all(0 <= c < num_classes for c in value) and len(set(value)) == len(value),
            f"{what} must be distinct class ids in 0..{num_classes - 1}, got {value[:num_classes]}")
    return tuple(value)


def check_camera(label: Any, what: str = "camera") -> np.ndarray:
    """A 25-float label of a rigid camera with sane intrinsics that sees the head: the head's centre
    (the world origin) in front of it, inside the frame, at a distance in :data:`CAMERA_DISTANCE`."""
    from ide3d_core.cameras import Camera

    require(isinstance(label, (list, tuple)) and len(label) == 25
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in label),
            f"{what} must be a list of 25 numbers")
    cam_label = np.asarray(label, dtype=np.float64)
    require(bool(np.isfinite(cam_label).all()), f"{what} holds NaN or infinite values")
    try:
        cam = Camera.from_label(cam_label)
    except ValueError as exc:
        raise PortraitError(f"{what} is not a valid camera ({short(exc)})") from None
    k = cam.intrinsics
    require(FOCAL_RANGE[0] <= k[0, 0] <= FOCAL_RANGE[1] and FOCAL_RANGE[0] <= k[1, 1] <= FOCAL_RANGE[1]
            and abs(k[0, 1]) < 1e-6 and -1.0 <= k[0, 2] <= 2.0 and -1.0 <= k[1, 2] <= 2.0,
            f"{what} has implausible intrinsics (normalised focal {k[0, 0]:.3g}, {k[1, 1]:.3g})")
    dist = float(np.linalg.norm(cam.position))
    require(CAMERA_DISTANCE[0] <= dist <= CAMERA_DISTANCE[1], f"{what} cannot see the head: it is "
            f"{dist:.3g} units from the head's centre (allowed {CAMERA_DISTANCE[0]:g}..{CAMERA_DISTANCE[1]:g})")
    uv, z = cam.project(np.zeros(3), 1, 1)
    require(float(z) > 0, f"{what} cannot see the head: the head is behind the camera")
    u, v = (float(x) for x in uv)
    require(math.isfinite(u) and math.isfinite(v) and 0.0 <= u <= 1.0 and 0.0 <= v <= 1.0,
            f"{what} cannot see the head: its centre projects outside the frame ({u:.2f}, {v:.2f})")
    return cam_label.astype(np.float32)
