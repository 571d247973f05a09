# SPDX-License-Identifier: GPL-3.0-or-later
"""Build and export a head mesh: the one path of ``ide3d mesh``, the service's ``mesh`` (Import Head Mesh)
and ``export_mesh`` (the add-on's Export glTF).

    field = portrait_field(generator, portrait.state)      # or seed_field(generator, seed, psi)
    mesh = build_mesh(field, MeshOptions(resolution=256, texture=2048), level).mesh
    files = write_mesh(mesh, "head.glb", parts=True)

Every caller gets the same clean-up (floaters dropped, decimation to ``faces``), the same labels and
colours, and, with ``texture > 0``, the same baked UV texture from super-resolved renders.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ide3d_core.operations import limits
from ide3d_core.operations.errors import OperationError
from ide3d_core.progress import CancelToken, ProgressFn

#: File formats :func:`write_mesh` writes.
MESH_SUFFIXES = (".glb", ".obj", ".ply")
_SUFFIX_TEXT = ".glb, .obj or .ply"


@dataclass(frozen=True)
class MeshOptions:
    """What a head mesh is built with (validated against :mod:`.limits` on construction).

    Attributes:
        resolution: density-grid samples per axis.
        texture: baked texture edge in texels; 0 = vertex colours only.
        faces: target triangle count; 0 = no decimation.
        smooth: Taubin smoothing iterations.
        level: surface density; None = the model's calibrated level (:func:`resolve_level`).
    """

    resolution: int = 256
    texture: int = 2048
    faces: int = 50000
    smooth: int = 0
    level: Optional[float] = None

    def __post_init__(self) -> None:
        limits.check_mesh_resolution(self.resolution)
        limits.check_texture_size(self.texture)
        limits.check_faces(self.faces)
        limits.check_steps(self.smooth, "smoothing iterations")
        if self.level is not None:
            limits.check_level(self.level)


def check_output(path: Path, options: MeshOptions, parts: bool) -> Path:
    """``path`` if :func:`write_mesh` can write ``options``' mesh there; else :class:`OperationError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise OperationError(f"a mesh file must end in {_SUFFIX_TEXT}, got {path.name!r}")
    if options.texture and suffix == ".ply":
        raise OperationError("PLY files carry vertex colours only: use texture 0 or write .glb/.obj")
    if parts and suffix != ".glb":
        raise OperationError("label parts need a .glb file")
    return path


def resolve_level(options: MeshOptions, model_spec: str) -> float:
    """``options.level``, else the model's calibrated surface level (``mesh_level.json``, else the default)."""
    from ide3d_core.model_loading import ModelError, surface_level

    if options.level is not None:
        return float(options.level)
    try:
        return surface_level(model_spec)
    except ModelError as exc:
        raise OperationError(str(exc)) from None


def portrait_field(generator, state):
    """The :class:`~ide3d_core.mesh.generator_field.GeneratorField` of a portrait state (its codes, region
    restyle and shape residual) on ``generator`` (the portrait's own, pivotal-tuned delta applied)."""
    from ide3d_core.mesh.generator_field import GeneratorField

    restyle = state.restyle
    return GeneratorField(generator.eval().requires_grad_(False), state.ws,
                          None if restyle is None else restyle.style_ws,
                          () if restyle is None else tuple(int(c) for c in restyle.classes),
                          shape_residual=state.shape_residual)


def seed_field(generator, seed: int, truncation: float):
    """The field of the head of ``seed`` at truncation ``truncation``."""
    from ide3d_core.mesh.generator_field import GeneratorField

    truncation = limits.check_truncation(truncation)
    return GeneratorField(generator, generator.codes_from_seeds([int(seed)], truncation_psi=truncation))


def build_mesh(field, options: MeshOptions, level: float, progress: Optional[ProgressFn] = None,
               cancel: Optional[CancelToken] = None, projection=None, state=None):
    """Run :func:`ide3d_core.mesh.extract_head_mesh` on ``field`` with ``options`` at surface ``level``.
    ``projection``/``state``: a portrait's photo projection and the state ``field`` shows: the baked
    texture then carries the photos as the portrait's renders do.

    Returns the :class:`ide3d_core.mesh.MeshResult` (mesh in the model world, seconds per stage).
    Raises :class:`OperationError` when no surface comes out (the level is never crossed, or nothing
    survives the clean-up: typically an untrained model).
    """
    from ide3d_core.mesh.bake import BakeConfig
    from ide3d_core.mesh.cleanup import CleanupConfig
    from ide3d_core.mesh.extract import LevelNotCrossed
    from ide3d_core.mesh.generator_field import GeneratorRenderer
    from ide3d_core.mesh.grid import GridConfig
    from ide3d_core.mesh.pipeline import MeshConfig, extract_head_mesh

    config = MeshConfig(grid=GridConfig(resolution=options.resolution), level=limits.check_level(level),
                        cleanup=CleanupConfig(smooth_iterations=options.smooth, target_faces=options.faces),
                        bake=BakeConfig(texture_size=options.texture) if options.texture else None)
    renderer = GeneratorRenderer(field, projection, state) if options.texture else None
    try:
        result = extract_head_mesh(field, config, renderer, progress=progress, cancel=cancel)
    except LevelNotCrossed as exc:
        raise OperationError(f"no head surface could be extracted (an untrained model?): {exc}; "
                             "pick a surface level inside that range") from None
    if result.mesh.num_faces == 0:
        raise OperationError("no head surface could be extracted (an untrained model?): empty mesh")
    return result


def write_mesh(mesh, path: Path, parts: bool = False) -> list[Path]:
    """Write ``mesh`` by suffix (.glb with ``_LABEL`` vertex labels, and with ``parts`` one node per
    class; .obj + .mtl + texture; .ply); :func:`ide3d_core.mesh.export.export_mesh`. Returns the files."""
    from ide3d_core.mesh.export import export_mesh

    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise OperationError(f"a mesh file must end in {_SUFFIX_TEXT}, got {path.name!r}")
    if parts and path.suffix.lower() != ".glb":
        raise OperationError("label parts need a .glb file")
    try:
        return export_mesh(mesh, path, parts=parts)
    except OSError as exc:
        raise OperationError(f"cannot write {path}: {exc.strerror or exc}") from None
