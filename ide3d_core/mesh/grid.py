# SPDX-License-Identifier: GPL-3.0-or-later
"""Sampling a field's density on a regular grid, in bounded chunks, densely or near the surface only.

Grid layout: ``density[i, j, k]`` is the density at the model-world point
``(x_i, y_j, z_k)`` with ``x_i = -bound + i * spacing``, ``spacing = 2 * bound / (resolution - 1)``
(axis 0 is x, axis 1 is y, axis 2 is z; the grid's corner samples lie on the box faces). The outermost
layer of samples is set to 0 (empty) so that every iso-surface is closed even where the head touches
the box (the neck), which makes the extracted mesh watertight.

Dense sampling queries every sample. Block-sparse sampling (``GridConfig.block > 0``) queries the
block corners first and then only the blocks the surface passes through (:mod:`ide3d_core.mesh.sparse`:
``refine="grow"``, the default, gives the dense grid's surface; ``"dilate"`` is the earlier rule); the
other samples hold 0 (outside) or ``2 * level`` (inside). A head fills a small part of its box, so this
queries about 5 % of a 256^3 grid for the bundled model with blocks of 4 cells (3.2 % in blocks, 1.6 %
corners; the earlier rule 10.7 %). Every marching-cubes cell lies inside one block. The sparse grid
carries ``box``, the index box outside which no cell crosses the level, and marching cubes looks only
there.

A field with a lattice query (``density_at_indices(axis, idx)``, e.g.
:class:`ide3d_core.mesh.generator_field.GeneratorField`: each plane sampled once on the grid's lattice,
features gathered by index) is asked through it; any other field through ``density(points)``.

The field is queried slab by slab (x-slices, at most ``chunk`` points per query) and the result is
written into one preallocated tensor on the field's device, so memory is the grid itself plus one
chunk, and there is a single host transfer at the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ide3d_core.mesh import sparse
from ide3d_core.mesh.field import Field
from ide3d_core.progress import CancelToken, ProgressFn, report

#: Block-sparse strategies (:mod:`ide3d_core.mesh.sparse`).
REFINES = ("grow", "dilate")


@dataclass(frozen=True)
class GridConfig:
    """Where and how densely to sample.

    Attributes:
        resolution: samples per axis (at least 2; the range users may ask for is
            ``ide3d_core.operations.limits.MESH_RESOLUTION``, checked by the operations).
        bound: half size of the sampled cube in model units (the head box is 0.5).
        chunk: most points per field query (bounds memory: about chunk * 1 KiB for the generator).
        block: block size in cells of block-sparse sampling (see the module docstring); 0 = dense.
        band: fraction of the level a coarse corner must exceed to mark a non-inside block.
        max_sparse_fraction: sample densely after all when more than this fraction of the blocks
            would be queried (gathering scattered samples costs more per sample than dense slabs).
        refine: which blocks besides the seeds are queried (:data:`REFINES`, see
            :mod:`ide3d_core.mesh.sparse`): ``"grow"`` those the surface provably enters, ``"dilate"``
            every neighbour of a seed (the earlier rule, for comparison).
    """

    resolution: int = 256
    bound: float = 0.5
    chunk: int = 1 << 18
    block: int = 4
    band: float = 0.25
    max_sparse_fraction: float = 0.5
    refine: str = "grow"

    def __post_init__(self) -> None:
        if self.resolution < 2:
            raise ValueError(f"a grid needs at least 2 samples per axis, got {self.resolution}")
        if self.bound <= 0:
            raise ValueError(f"grid bound must be positive, got {self.bound}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be positive, got {self.chunk}")
        if self.block < 0 or self.block == 1 or not 0.0 <= self.band < 1.0:
            raise ValueError(f"block must be 0 (dense) or >= 2 and band in [0, 1), "
                             f"got {self.block}, {self.band}")
        if self.refine not in REFINES:
            raise ValueError(f"refine must be one of {', '.join(REFINES)}, got {self.refine!r}")

    @property
    def spacing(self) -> float:
        """Distance between neighbouring samples (model units)."""
        return 2.0 * self.bound / (self.resolution - 1)

    def axis(self) -> np.ndarray:
        """[resolution] float64 sample coordinates along each axis."""
        return -self.bound + self.spacing * np.arange(self.resolution)


@dataclass(frozen=True, eq=False)
class DensityGrid:
    """Sampled density. ``density`` is [R, R, R] float32 (axes x, y, z; see the module docstring);
    ``queried`` is the number of field queries it took; ``box``, when set, the half-open index box
    ``((i0, i1), (j0, j1), (k0, k1))`` outside which no cell crosses the level the grid was sampled for
    (every sample there is at or below it)."""

    density: np.ndarray
    config: GridConfig
    queried: int = 0
    box: Optional[sparse.Box] = None

    def index_to_world(self, index_coords: np.ndarray) -> np.ndarray:
        """[..., 3] continuous grid indices (i, j, k) -> [..., 3] model-world points."""
        return -self.config.bound + self.config.spacing * np.asarray(index_coords, dtype=np.float64)


def _dense(field: Field, config: GridConfig, axis: torch.Tensor, out: torch.Tensor,
           progress: Optional[ProgressFn], cancel: Optional[CancelToken], done0: int, total: int) -> None:
    r = config.resolution
    yy, zz = torch.meshgrid(axis, axis, indexing="ij")
    plane = torch.stack([yy.reshape(-1), zz.reshape(-1)], dim=-1)  # [R*R, 2] (y, z)
    slabs = max(1, config.chunk // (r * r))
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
        report(progress, done0 + i1, total, "density grid", cancel)


def _density_at(field: Field, idx: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Density [M] at integer sample indices ``idx [M, 3]``: the field's own lattice query when it has
    one (``density_at_indices(axis, idx)``, e.g. the generator's: plane rows gathered instead of
    bilinear taps), else ``density(axis[idx])``."""
    lattice = getattr(field, "density_at_indices", None)
    if lattice is not None:
        return lattice(axis, idx).reshape(-1)
    return field.density(axis[idx]).reshape(-1)


def _query_indices(field: Field, idx: torch.Tensor, axis: torch.Tensor, chunk: int) -> torch.Tensor:
    """Density [M] at integer sample indices idx [M, 3], in chunks."""
    vals = [_density_at(field, idx[s:s + chunk], axis) for s in range(0, idx.shape[0], chunk)]
    return torch.cat(vals) if vals else torch.zeros(0, device=axis.device)


def sample_density_grid(field: Field, config: GridConfig = GridConfig(), level: Optional[float] = None,
                        progress: Optional[ProgressFn] = None,
                        cancel: Optional[CancelToken] = None) -> DensityGrid:
    """Evaluate ``field.density`` on the grid of ``config`` (see the module docstring).

    ``level`` (the surface density) is needed for block-sparse sampling; without it, or with
    ``config.block == 0``, the grid is sampled densely.
    """
    r = config.resolution
    device = field.device
    axis = torch.as_tensor(config.axis(), dtype=torch.float32, device=device)
    # zero pages from the allocator: a sparse grid only touches the part of the box near the head
    out = (torch.from_numpy(np.zeros((r, r, r), np.float32)) if device.type == "cpu"
           else torch.zeros((r, r, r), dtype=torch.float32, device=device))
    box = None
    with torch.no_grad():
        queried = None
        if level is not None and 0 < config.block < r - 1:
            query = lambda idx: _query_indices(field, idx, axis, config.chunk)  # noqa: E731
            args = (query, r, config.block, float(level), config.band, config.max_sparse_fraction, out,
                    progress, cancel)
            if config.refine == "grow":
                got = sparse.grow(*args)
                if got is not None:
                    queried, box = got
            else:
                queried = sparse.dilate(*args)
            if queried is None:  # the surface is everywhere (an untrained model): dense slabs are cheaper
                out.zero_()
                _dense(field, config, axis, out, progress, cancel, 1, r + 1)
                queried = r ** 3 + len(sparse.block_edges(r, config.block, device)) ** 3
        else:
            _dense(field, config, axis, out, progress, cancel, 0, r)
            queried = r ** 3
    if box is None:  # (a sparse grid never writes its border: left as allocated, untouched pages)
        out[0], out[-1], out[:, 0], out[:, -1], out[:, :, 0], out[:, :, -1] = 0, 0, 0, 0, 0, 0
    return DensityGrid(out.cpu().numpy(), config, int(queried), box)
