# SPDX-License-Identifier: GPL-3.0-or-later
"""Procedural 3D heads: the project's own dataset with exact labels, depth, cameras and meshes.

Public API (see docs/procedural_heads.md)::

    heads = sample_heads(n, generator, device, symmetric=False)      # HeadBatch
    heads = heads_from_latent(z)                                     # the heads of (B, 512) normal z
    r = render_heads(heads, cameras, resolution, antialias=2)        # ProceduralRender
    stream = ProceduralStream(batch_size, resolution, seed, device)  # next(stream) -> ProceduralRender
    mesh = head_mesh(heads.index(i), resolution=128)                 # trimesh.Trimesh, vertex 'label'
    sheet = contact_sheet(seed, n_heads, yaws_deg, resolution)       # uint8 image
"""
from __future__ import annotations

from .anatomy import LATENT_DRAWS, heads_from_latent, median_padded, sample_heads
from .contact import contact_sheet
from .heads import HeadBatch, Material
from .mesh import head_mesh
from .render import ProceduralRender, render_heads
from .stream import ProceduralStream, orbit_labels, sample_cameras

__all__ = ["LATENT_DRAWS", "HeadBatch", "heads_from_latent", "median_padded", "Material", "ProceduralRender", "ProceduralStream", "contact_sheet", "head_mesh",
           "orbit_labels", "render_heads", "sample_cameras", "sample_heads"]
