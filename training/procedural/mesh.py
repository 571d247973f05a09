# SPDX-License-Identifier: GPL-3.0-or-later
"""Ground-truth meshes of procedural heads (marching cubes over the union of the primitives)."""
from __future__ import annotations

import numpy as np
import torch

from .heads import HeadBatch
from .quadrics import signed_distance


def head_field(head: HeadBatch, points: torch.Tensor, chunk: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Union field of one head: (N, 3) points -> (value (N,), primitive index (N,)).

    ``value`` is positive inside (max over primitives of their signed distance, see
    :func:`.quadrics.signed_distance`); the index is the primitive attaining it, i.e. the primitive whose
    surface bounds the union there, which gives surface points their label."""
    if head.batch_size != 1:
        raise ValueError(f"head_field takes one head (use heads.index(i)), got {head.batch_size}")
    vals, prims = [], []
    for s in range(0, points.shape[0], chunk):
        d = signed_distance(points[s:s + chunk], head.centre[0], head.rot[0], head.inv_radii[0], head.planes[0],
                            head.plane_slots, head.active[0])
        v, p = d.max(-1)
        vals.append(v)
        prims.append(p)
    return torch.cat(vals), torch.cat(prims)


def head_mesh(head: HeadBatch, resolution: int = 128, isosurface: str = "auto"):
    """Ground-truth triangle mesh of one head in the model world.

    Args:
        head: a batch of one head (``heads.index(i)``).
        resolution: marching-cubes grid samples per axis over the box [-0.5, 0.5]^3.
        isosurface: the extractor, see :func:`ide3d_core.mesh.isosurface.marching_cubes` (``"auto"``:
            PyMCubes when installed, else the pure-numpy marching tetrahedra).
    Returns:
        ``trimesh.Trimesh`` (vertices in model-world units, y up, face toward +z) with
        ``vertex_attributes['label']`` (int64 class ids of ide3d_core.labels) and
        ``vertex_attributes['primitive']`` (slot index); faces wound outward.
    """
    import trimesh

    from ide3d_core.mesh.isosurface import marching_cubes

    if resolution < 8:
        raise ValueError(f"mesh resolution must be at least 8, got {resolution}")
    full_labels = head.label.cpu().numpy()
    slot_ids = torch.nonzero(head.active[0].cpu()).reshape(-1).numpy()
    head = head.select_slots(head.active[0])  # inactive slots only cost time
    dev = head.device
    lin = torch.linspace(-0.5, 0.5, resolution, device=dev)
    grid = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
    values, _ = head_field(head, grid)
    vol = values.reshape(resolution, resolution, resolution).cpu().numpy().astype(np.float64)
    vol = np.pad(vol, 1, constant_values=-1.0)  # close the surface where it meets the box
    verts, faces = marching_cubes(vol, 0.0, isosurface)
    step = 1.0 / (resolution - 1)
    verts = (verts - 1.0) * step - 0.5
    verts = np.clip(verts, -0.5, 0.5)
    _, prim = head_field(head, torch.from_numpy(verts).to(dev, torch.float32))
    prim = slot_ids[prim.cpu().numpy()]
    labels = full_labels[prim]
    # with "inside = above the level" the extractors' winding is already outward (positive volume, tested)
    mesh = trimesh.Trimesh(verts, faces, process=False,
                           vertex_attributes={"label": labels.astype(np.int64), "primitive": prim.astype(np.int64)})
    return mesh
