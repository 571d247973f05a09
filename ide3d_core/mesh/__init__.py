# SPDX-License-Identifier: GPL-3.0-or-later
"""Head meshes for game engines: density grid -> marching cubes -> clean-up -> labels/colours ->
UV texture bake -> .glb/.obj/.ply. See docs/mesh.md.

Everything here is a pure function of a :class:`~ide3d_core.mesh.field.Field` (and, for baking, a
:class:`~ide3d_core.mesh.field.Renderer`) returning a :class:`~ide3d_core.mesh.types.HeadMesh` in the
model world; export functions convert to metres.
"""
from ide3d_core.mesh.field import Field, Renderer, RenderedViews, query_chunked
from ide3d_core.mesh.types import HeadMesh
from ide3d_core.mesh.grid import DensityGrid, GridConfig, sample_density_grid
from ide3d_core.mesh.extract import DEFAULT_LEVEL, marching_cubes
from ide3d_core.mesh.cleanup import CleanupConfig, clean
from ide3d_core.mesh.attributes import attach_field_attributes, split_by_label
from ide3d_core.mesh.bake import BakeConfig, bake_texture
from ide3d_core.mesh.export import export_glb, export_mesh, export_obj, export_ply
from ide3d_core.mesh.pipeline import MeshConfig, MeshResult, extract_head_mesh

__all__ = [
    "Field", "Renderer", "RenderedViews", "query_chunked", "HeadMesh", "DensityGrid", "GridConfig",
    "sample_density_grid", "DEFAULT_LEVEL", "marching_cubes", "CleanupConfig", "clean",
    "attach_field_attributes", "split_by_label", "BakeConfig", "bake_texture", "export_glb",
    "export_mesh", "export_obj", "export_ply", "MeshConfig", "MeshResult", "extract_head_mesh",
]
