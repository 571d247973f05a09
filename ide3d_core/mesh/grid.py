# SPDX-License-Identifier: GPL-3.0-or-later
"""Sampling a field's density on a regular grid, in bounded chunks.

Grid layout: ``density[i, j, k]`` is the density at the model-world point
``(x_i, y_j, z_k)`` with ``x_i = -bound + i * spacing``, ``spacing = 2 * bound / (resolution - 1)``
(axis 0 is x, axis 1 is y, axis 2 is z; the grid's corner samples lie on the box faces). The outermost
layer of samples is set to 0 (empty) so that every iso-surface is closed even where the head touches
the box (the neck), which makes the extracted mesh watertight.

The field is queried slab by slab (whole x-slices, at most ``chunk`` points per query) and the result
is written into one preallocated tensor on the field's device, so memory is the grid itself plus one
chunk, and there is a single host transfer at the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ide3d_core.mesh.field import Field
from ide3d_core.progress import CancelToken, ProgressFn, report


@dataclass(frozen=True)
class GridConfig:
    """Where and how densely to sample.

    Attributes:
        resolution: samples per axis (128 to 512 for heads; at least 8).
        bound: half size of the sampled cube in model units (the head box is 0.5).
        chunk: most points per field query (bounds memory: about chunk * 1 KiB for the generator).
    """

    resolution: int = 256
    bound: float = 0.5
    chunk: int = 1 << 18

    def __post_init__(self) -> None:
        if not 8 <= self.resolution <= 1024:
            raise ValueError(f"grid resolution must be in 8..1024, got {self.resolution}")
        if self.bound <= 0:
            raise ValueError(f"grid bound must be positive, got {self.bound}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be positive, got {self.chunk}")

    @property
    def spacing(self) -> float:
        """Distance between neighbouring samples (model units)."""
        return 2.0 * self.bound / (self.resolution - 1)

    def axis(self) -> np.ndarray:
        """[resolution] float64 sample coordinates along each axis."""
        return -self.bound + self.spacing * np.arange(self.resolution)


@dataclass(frozen=True, eq=False)
class DensityGrid:
    """Sampled density. ``density`` is [R, R, R] float32 (axes x, y, z; see the module docstring)."""

    density: np.ndarray
    config: GridConfig

    def index_to_world(self, index_coords: np.ndarray) -> np.ndarray:
        """[..., 3] continuous grid indices (i, j, k) -> [..., 3] model-world points."""
        return -self.config.bound + self.config.spacing * np.asarray(index_coords, dtype=np.float64)


def sample_density_grid(field: Field, config: GridConfig = GridConfig(),
                        progress: Optional[ProgressFn] = None,
                        cancel: Optional[CancelToken] = None) -> DensityGrid:
    """Evaluate ``field.density`` on the grid of ``config`` (see the module docstring)."""
    r = config.resolution
    device = field.device
    axis = torch.as_tensor(config.axis(), dtype=torch.float32, device=device)
    out = torch.zeros((r, r, r), dtype=torch.float32, device=device)
    yy, zz = torch.meshgrid(axis, axis, indexing="ij")
    plane = torch.stack([yy.reshape(-1), zz.reshape(-1)], dim=-1)  # [R*R, 2] (y, z)
    slabs = max(1, config.chunk // (r * r))
    with torch.no_grad():
        for i0 in range(0, r, slabs):
            i1 = min(r, i0 + slabs)
            if r * r > config.chunk:  # one slice is bigger than a chunk: split the slice itself
                for i in range(i0, i1):
                    pts = torch.cat([axis[i].expand(r * r, 1), plane], dim=1)
                    flat = out[i].view(-1)
                    for s in range(0, r * r, config.chunk):
                        flat[s:s + config.chunk] = field.density(pts[s:s + config.chunk]).reshape(-1)
            else:
                xs = axis[i0:i1].repeat_interleave(r * r)[:, None]
                pts = torch.cat([xs, plane.repeat(i1 - i0, 1)], dim=1)
                out[i0:i1] = field.density(pts).reshape(i1 - i0, r, r)
            report(progress, i1, r, "density grid", cancel)
    out[0], out[-1], out[:, 0], out[:, -1], out[:, :, 0], out[:, :, -1] = 0, 0, 0, 0, 0, 0
    return DensityGrid(out.cpu().numpy(), config)
