# SPDX-License-Identifier: GPL-3.0-or-later
"""Mesh clean-up for game assets: keep the head's components, smooth, decimate.

All functions take and return :class:`HeadMesh` geometry only (vertex attributes are dropped where
vertices move or merge; the pipeline queries the field at the final vertices afterwards).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ide3d_core.mesh.types import HeadMesh


@dataclass(frozen=True)
class CleanupConfig:
    """Clean-up policy.

    Attributes:
        min_component_fraction: keep connected components with at least this fraction of the faces of
            the largest one (the largest is always kept); smaller ones are floaters. Separate parts of
            a head (glasses, earrings) are typically above 1 %, density speckles far below.
        smooth_iterations: Taubin (lambda 0.5, mu -0.53) smoothing steps; 0 disables. Taubin smoothing
            removes marching-cubes terracing without shrinking the head.
        target_faces: decimate to about this many triangles (quadric edge collapse); 0 disables.
    """

    min_component_fraction: float = 0.01
    smooth_iterations: int = 0
    target_faces: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_component_fraction <= 1.0:
            raise ValueError(f"min_component_fraction must be in [0, 1], got {self.min_component_fraction}")
        if self.smooth_iterations < 0:
            raise ValueError(f"smooth_iterations must be >= 0, got {self.smooth_iterations}")
        if self.target_faces < 0 or 0 < self.target_faces < 100:
            raise ValueError(f"target face count must be 0 (off) or at least 100, got {self.target_faces}")


def face_components(mesh: HeadMesh) -> tuple[int, np.ndarray]:
    """Connected components (through shared vertices): (count, [F] component id per face)."""
    v, f = mesh.num_vertices, mesh.faces
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    adj = sp.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(v, v))
    n, vertex_comp = connected_components(adj, directed=False)
    return n, vertex_comp[f[:, 0]]


def remove_floaters(mesh: HeadMesh, min_fraction: float = 0.01) -> HeadMesh:
    """Keep the largest component and every component with at least ``min_fraction`` of its faces."""
    if mesh.num_faces == 0:
        return mesh
    n, comp = face_components(mesh)
    sizes = np.bincount(comp, minlength=n)
    keep = sizes >= max(1, min_fraction * sizes.max())
    keep[np.argmax(sizes)] = True
    return mesh.submesh(keep[comp])


def taubin_smooth(mesh: HeadMesh, iterations: int, lamb: float = 0.5, mu: float = -0.53) -> HeadMesh:
    """Taubin smoothing with the uniform (umbrella) Laplacian; volume is nearly preserved."""
    if iterations <= 0:
        return mesh
    v, f = mesh.num_vertices, mesh.faces
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    adj = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(v, v)).tocsr()
    adj.data[:] = 1.0  # duplicate edges summed to 2: back to a 0/1 adjacency
    deg = np.asarray(adj.sum(axis=1)).reshape(-1, 1)
    avg = sp.diags(1.0 / np.maximum(deg[:, 0], 1.0)) @ adj
    x = mesh.vertices.astype(np.float64)
    for _ in range(iterations):
        x = x + lamb * (avg @ x - x)
        x = x + mu * (avg @ x - x)
    return HeadMesh(x.astype(np.float32), f)


def drop_degenerate(mesh: HeadMesh, min_area: float = 1e-12) -> HeadMesh:
    """Remove faces with area below ``min_area`` (model units squared) or repeated vertices; UV
    unwrapping leaves such faces without a chart."""
    f = mesh.faces
    t = mesh.vertices[f].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
    ok = (area > min_area) & (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    return mesh if ok.all() else mesh.submesh(ok)


def decimate(mesh: HeadMesh, target_faces: int) -> HeadMesh:
    """Quadric edge-collapse decimation (fast-simplification) to about ``target_faces`` triangles;
    a mesh already at or below the target is returned unchanged."""
    if target_faces <= 0 or mesh.num_faces <= target_faces:
        return mesh
    import fast_simplification

    reduction = 1.0 - target_faces / mesh.num_faces
    v, f = fast_simplification.simplify(mesh.vertices, mesh.faces.astype(np.int64),
                                        target_reduction=reduction)
    return drop_degenerate(HeadMesh(np.asarray(v, dtype=np.float32), np.asarray(f, dtype=np.int64)))


def clean(mesh: HeadMesh, config: CleanupConfig) -> HeadMesh:
    """Floaters, then smoothing, then decimation (geometry only)."""
    out = remove_floaters(HeadMesh(mesh.vertices, mesh.faces), config.min_component_fraction)
    out = taubin_smooth(out, config.smooth_iterations)
    return decimate(out, config.target_faces)
