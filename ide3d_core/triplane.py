# SPDX-License-Identifier: GPL-3.0-or-later
"""Tri-plane projection and bilinear sampling (pure functions).

A tri-plane is a tensor ``[B, 3, C, P, P]``: three axis-aligned feature images covering the cube
``[-box/2, box/2]^3`` of the model world (:mod:`ide3d_core.cameras`). Plane ``k`` is named by the two
world axes it sees, e.g. ``"yz"``: a point ``(x, y, z)`` reads that plane at
``width coordinate = y``, ``height coordinate = z`` (the first named axis runs along the last tensor
dimension W, the second along H). The project's planes are ``("xy", "yz", "xz")``; EG3D's are
``("xy", "xz", "zx")`` (its third plane repeats the x and z axes by accident).

Sampling is ``grid_sample`` bilinear with ``align_corners=False`` (texel centres at
``-box/2 + (i + 0.5) * box / P``, so a plane mirrored along an axis is exactly ``flip`` of the tensor)
and zero padding outside the cube. Features of the three planes are aggregated by "mean", "sum" or
"concat" (plane order). Sampling always runs in float32, also under bf16 autocast (bf16 coordinates
would snap points to half-texel steps).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

#: Plane name -> (world axis along the plane's width, world axis along its height).
PLANE_AXES = {"xy": (0, 1), "yz": (1, 2), "xz": (0, 2), "zx": (2, 0), "yx": (1, 0), "zy": (2, 1)}
AGGREGATIONS = ("mean", "sum", "concat")



def _no_autocast(device: torch.device):
    """Autocast switched off on devices that have autocast (the meta device, used to check shapes
    without computing, has none)."""
    if device.type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()

def project_onto_planes(points: torch.Tensor, plane_axes: tuple[str, ...] = ("xy", "yz", "xz"),
                        box_size: float = 1.0) -> torch.Tensor:
    """Normalised 2D coordinates of points on each plane.

    Args:
        points: [B, N, 3] model-world points.
        plane_axes: names of the planes (see module docstring).
        box_size: edge of the cube the planes cover.
    Returns:
        [B, n_planes, N, 2] coordinates in [-1, 1] inside the cube (grid_sample's (x=width, y=height)).
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be [B, N, 3], got {tuple(points.shape)}")
    idx = []
    for name in plane_axes:
        if name not in PLANE_AXES:
            raise ValueError(f"unknown plane {name!r}; known: {sorted(PLANE_AXES)}")
        idx.append(PLANE_AXES[name])
    coords = torch.stack([points[..., list(ij)] for ij in idx], dim=1)  # [B, 3, N, 2]
    return coords * (2.0 / box_size)


def sample_planes(planes: torch.Tensor, coords: torch.Tensor, aggregation: str = "mean") -> torch.Tensor:
    """Bilinearly sample tri-plane features.

    Args:
        planes: [B, n_planes, C, P, P].
        coords: [B, n_planes, N, 2] from :func:`project_onto_planes`.
        aggregation: "mean", "sum" or "concat".
    Returns:
        [B, N, C] (mean/sum) or [B, N, n_planes * C] (concat), float32 (float64 for float64 planes).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    b, n, c, h, w = planes.shape
    if coords.shape[:2] != (b, n) or coords.shape[-1] != 2:
        raise ValueError(f"coords {tuple(coords.shape)} do not match planes {tuple(planes.shape)}")
    # Sampling runs in (at least) float32: bf16 coordinates have 8 mantissa bits, i.e. steps of up to
    # half a texel of a 256 px plane, which would quantise the field under autocast.
    dtype = torch.promote_types(planes.dtype, torch.float32)
    grid = coords.reshape(b * n, 1, -1, 2).to(dtype)
    with _no_autocast(planes.device):
        out = F.grid_sample(planes.reshape(b * n, c, h, w).to(dtype), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=False)  # [B*n, C, 1, N]
    out = out.reshape(b, n, c, -1)  # [B, n, C, N]
    # Reduce before transposing (the result is a transposed view; linear layers take it as is).
    if aggregation == "mean":
        return out.mean(dim=1).transpose(1, 2)
    if aggregation == "sum":
        return out.sum(dim=1).transpose(1, 2)
    return out.reshape(b, n * c, -1).transpose(1, 2)


def sample_triplane(planes: torch.Tensor, points: torch.Tensor,
                    plane_axes: tuple[str, ...] = ("xy", "yz", "xz"), aggregation: str = "mean",
                    box_size: float = 1.0) -> torch.Tensor:
    """``[B, 3, C, P, P]`` planes at ``[B, N, 3]`` points -> ``[B, N, C or 3C]`` features."""
    return sample_planes(planes, project_onto_planes(points, plane_axes, box_size), aggregation)


def mirror_planes(planes: torch.Tensor, plane_axes: tuple[str, ...] = ("xy", "yz", "xz")) -> torch.Tensor:
    """Tri-planes of the field mirrored through ``x = 0`` (``f'(x, y, z) = f(-x, y, z)``).

    A plane that sees x along its width (height) is flipped along W (H); the others are unchanged.
    Exact because texel centres are symmetric about the cube centre (``align_corners=False``).
    """
    out = []
    for k, name in enumerate(plane_axes):
        p = planes[:, k]
        i, j = PLANE_AXES[name]
        if i == 0:
            p = p.flip(-1)
        elif j == 0:
            p = p.flip(-2)
        out.append(p)
    return torch.stack(out, dim=1)
