# SPDX-License-Identifier: GPL-3.0-or-later
"""Marching cubes on a density grid, with vertices in the model world.

The level is an activated density (``sigma``, 1 / model unit). IDE-3D's own ``render_mesh.py`` uses
``sigma = 10`` on the same kind of field (EG3D's viewers use ChimeraX at about 30 on raw grids); at
``sigma = 10`` a ray crossing 1/256 of the head box (4 mm at 0.5 m per unit) loses 1 - exp(-10/256)
= 4 % of its light per sample, i.e. the surface is where the field becomes opaque within a few
samples. ``DEFAULT_LEVEL`` is that value.
"""
from __future__ import annotations

import numpy as np

from ide3d_core.mesh.grid import DensityGrid
from ide3d_core.mesh.isosurface import Method, marching_cubes as isosurface
from ide3d_core.mesh.types import HeadMesh

DEFAULT_LEVEL = 10.0


class LevelNotCrossed(ValueError):
    """The density never crosses the surface level inside the grid (an untrained model, or a level outside
    the field's range). ``level``, ``low`` and ``high`` say which level and which range."""

    def __init__(self, level: float, low: float, high: float) -> None:
        self.level, self.low, self.high = float(level), float(low), float(high)
        super().__init__(f"the density level {level:g} is not crossed inside the grid "
                         f"(density range {low:.3g} .. {high:.3g})")


def marching_cubes(grid: DensityGrid, level: float = DEFAULT_LEVEL, method: Method = "auto") -> HeadMesh:
    """Iso-surface ``density == level`` of ``grid`` as a :class:`HeadMesh` in the model world.

    Triangles are oriented with normals pointing from high density (inside) to low density (outside).
    ``method`` picks the extractor (see :func:`ide3d_core.mesh.isosurface.marching_cubes`: PyMCubes when
    installed, else the pure-numpy marching tetrahedra, which is what Python 3.13 / Blender 5.1+ gets).
    Raises :class:`LevelNotCrossed` (a ``ValueError``) if the level is not crossed anywhere (an empty mesh
    is never a useful result).

    A grid with a ``box`` (block-sparse sampling for this level) is cut to it first: no cell outside
    crosses the level, and both extractors number vertices and faces in the order of the cells, so the
    mesh is the same as from the whole grid (vertices shifted back by the box's origin).
    """
    d, origin = grid.density, np.zeros(3)
    if grid.box is not None and any(hi - lo < n for (lo, hi), n in zip(grid.box, d.shape)):
        (i0, i1), (j0, j1), (k0, k1) = grid.box
        d, origin = np.ascontiguousarray(d[i0:i1, j0:j1, k0:k1]), np.array([i0, j0, k0], np.float64)
    low, high = float(d.min()), float(d.max())
    if d is not grid.density:
        low = min(low, 0.0)  # the grid's border layer is 0
    if not (low < level < high):
        raise LevelNotCrossed(level, low, high)
    verts, faces = isosurface(d, float(level), method)
    verts = verts + origin
    # both extractors orient triangles so that normals point toward decreasing values: outward for a
    # density that is high inside (checked by the sphere tests: positive signed volume).
    return HeadMesh(grid.index_to_world(verts).astype(np.float32), faces.astype(np.int64))
