# SPDX-License-Identifier: GPL-3.0-or-later
"""Every user-facing option range of the operations, in one place (standard library only).

The command line, the worker service and the add-on's fields all mean these ranges; lower layers
(``GridConfig``, ``BakeConfig``) check only what is structurally required. Each ``check_*`` returns the
value as the type it names and raises :class:`~.errors.OperationError` with a one-line message that
names the option as ``what``.
"""
from __future__ import annotations

from ide3d_core.operations.errors import OperationError

#: Density-grid samples per axis of a head mesh (inclusive). 128..512 is the useful range for heads;
#: 16 is the smallest grid that still closes a head, 1024^3 floats are 4 GiB.
MESH_RESOLUTION = (16, 1024)
MESH_RESOLUTION_RECOMMENDED = (128, 512)
#: Baked texture edge in texels (0 = no texture, vertex colours only).
TEXTURE_SIZE = (64, 8192)
TEXTURE_SIZE_RECOMMENDED = (1024, 4096)
#: Fewest triangles decimation may aim for (0 = no decimation).
MIN_FACES = 100
#: Truncation psi: 0 = the average face, 1 = no truncation.
TRUNCATION = (0.0, 1.0)
#: Longest side of a rendered view in pixels.
RENDER_SIDE = (1, 8192)
#: Global-style mixing weights (0 keeps the portrait's codes, 1 takes the style's, outside extrapolates).
STYLE_ALPHA = (-1.0, 2.0)


def _in(value, lo, hi, what: str, note: str = "") -> None:
    if not lo <= value <= hi:
        raise OperationError(f"{what} must be in {lo}..{hi}{note}, got {value}")


def check_mesh_resolution(value: int, what: str = "mesh resolution") -> int:
    lo, hi = MESH_RESOLUTION
    _in(int(value), lo, hi, what, " ({}..{} recommended)".format(*MESH_RESOLUTION_RECOMMENDED))
    return int(value)


def check_texture_size(value: int, what: str = "texture size") -> int:
    if int(value) != 0:
        lo, hi = TEXTURE_SIZE
        _in(int(value), lo, hi, what, " or 0 for none ({}..{} recommended)".format(*TEXTURE_SIZE_RECOMMENDED))
    return int(value)


def check_faces(value: int, what: str = "target face count") -> int:
    if int(value) != 0 and int(value) < MIN_FACES:
        raise OperationError(f"{what} must be 0 (no decimation) or at least {MIN_FACES}, got {value}")
    return int(value)


def check_truncation(value: float, what: str = "truncation") -> float:
    _in(float(value), *TRUNCATION, what)
    return float(value)


def check_render_size(width: int, height: int) -> tuple[int, int]:
    lo, hi = RENDER_SIDE
    if min(width, height) < lo or max(width, height) > hi:
        raise OperationError(f"render size must be {lo}..{hi} pixels per side, got {width}x{height}")
    return int(width), int(height)


def check_style_alpha(value: float, what: str) -> float:
    _in(float(value), *STYLE_ALPHA, what)
    return float(value)


def check_steps(value: int, what: str = "step count") -> int:
    if int(value) < 0:
        raise OperationError(f"{what} must be >= 0, got {value}")
    return int(value)


def check_level(value: float, what: str = "surface level") -> float:
    if not float(value) > 0:
        raise OperationError(f"{what} must be positive, got {value}")
    return float(value)
