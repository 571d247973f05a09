# SPDX-License-Identifier: GPL-3.0-or-later
"""The whole extraction as one procedure: field -> grid -> marching cubes -> clean-up -> labels and
colours -> optional UV texture bake, with progress and cancellation."""
from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field
from typing import Optional

from ide3d_core.mesh.attributes import attach_field_attributes
from ide3d_core.mesh.bake import BakeConfig, bake_texture
from ide3d_core.mesh.cleanup import CleanupConfig, clean
from ide3d_core.mesh.extract import DEFAULT_LEVEL, marching_cubes
from ide3d_core.mesh.field import Field, Renderer
from ide3d_core.mesh.grid import GridConfig, sample_density_grid
from ide3d_core.mesh.isosurface import METHODS, Method
from ide3d_core.mesh.types import HeadMesh
from ide3d_core.progress import CancelToken, ProgressFn, report


@dataclass(frozen=True)
class MeshConfig:
    """Everything :func:`extract_head_mesh` does, as policy.

    Attributes:
        grid: where and how densely the density is sampled.
        level: the density of the surface (see :mod:`ide3d_core.mesh.extract`).
        cleanup: floaters, smoothing, decimation.
        bake: texture baking, or None for vertex colours only.
        isosurface: the iso-surface extractor, ``"auto"`` (PyMCubes when installed, else the pure-numpy
            marching tetrahedra), ``"mcubes"`` or ``"tetrahedra"`` (see :mod:`ide3d_core.mesh.isosurface`).
    """

    grid: GridConfig = dc_field(default_factory=GridConfig)
    level: float = DEFAULT_LEVEL
    cleanup: CleanupConfig = dc_field(default_factory=lambda: CleanupConfig(target_faces=50000))
    bake: Optional[BakeConfig] = None
    isosurface: Method = "auto"

    def __post_init__(self) -> None:
        if not self.level > 0:
            raise ValueError(f"the density level must be positive, got {self.level}")
        if self.isosurface not in METHODS:
            raise ValueError(f"isosurface must be one of {', '.join(METHODS)}, got {self.isosurface!r}")


@dataclass(frozen=True, eq=False)
class MeshResult:
    """The mesh, the seconds each stage took (keys: grid, marching_cubes, cleanup, attributes, bake)
    and the number of density queries the grid took."""

    mesh: HeadMesh
    seconds: dict[str, float]
    queried: int = 0


def extract_head_mesh(field: Field, config: MeshConfig = MeshConfig(), renderer: Optional[Renderer] = None,
                      progress: Optional[ProgressFn] = None,
                      cancel: Optional[CancelToken] = None) -> MeshResult:
    """Run the pipeline (see the module docstring). ``renderer`` is used only when ``config.bake`` is
    set (None then bakes the field colour alone). Progress is reported in one range: the grid's
    slices, then one step per later stage (and per baking view)."""
    r = config.grid.resolution
    bake_steps = 0
    if config.bake is not None:
        bake_steps = 3 + (len(config.bake.cameras()) if renderer is not None else 0)
    total = r + 3 + bake_steps
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    grid = sample_density_grid(field, config.grid, config.level, progress=None if progress is None else
                               (lambda d, _t, m: progress(d, total, m)), cancel=cancel)
    seconds["grid"] = time.perf_counter() - t
    queried = grid.queried

    t = time.perf_counter()
    mesh = marching_cubes(grid, config.level, config.isosurface)
    del grid
    seconds["marching_cubes"] = time.perf_counter() - t
    report(progress, r + 1, total, "marching cubes", cancel)

    t = time.perf_counter()
    mesh = clean(mesh, config.cleanup)
    seconds["cleanup"] = time.perf_counter() - t
    report(progress, r + 2, total, "clean-up", cancel)

    t = time.perf_counter()
    mesh = attach_field_attributes(mesh, field, chunk=config.grid.chunk, cancel=cancel)
    seconds["attributes"] = time.perf_counter() - t
    report(progress, r + 3, total, "labels and colours", cancel)

    if config.bake is not None:
        t = time.perf_counter()
        mesh = bake_texture(mesh, field, renderer, config.bake, cancel=cancel,
                            progress=None if progress is None else
                            (lambda d, _t, m: progress(r + 3 + d, total, m)))
        seconds["bake"] = time.perf_counter() - t
    return MeshResult(mesh, seconds, queried)
