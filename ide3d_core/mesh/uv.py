# SPDX-License-Identifier: GPL-3.0-or-later
"""UV unwrapping (xatlas) and rasterisation of a mesh into its texture space.

UV convention (as OBJ and trimesh): ``u`` to the right, ``v`` up, both in [0, 1]; texel (column ``i``,
row ``j``) of a ``T x T`` image (row 0 at the top) has its centre at
``u = (i + 0.5) / T``, ``v = 1 - (j + 0.5) / T``. glTF's ``v`` points down; the exporter flips it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ide3d_core.mesh.types import HeadMesh

_SHIFT = 4  # sub-pixel bits for cv2 polygon filling


def unwrap(mesh: HeadMesh, padding: int = 2, resolution: int = 1024,
           max_chart_fraction: float = 1.0 / 128.0) -> tuple[HeadMesh, np.ndarray]:
    """UV-unwrap with xatlas.

    Returns the unwrapped mesh (vertices split along seams, labels/colours carried over, ``uv`` set,
    ``texture`` a black placeholder of ``resolution``) and ``vmapping`` [V'] (the original vertex of
    each new vertex). Charts are packed with ``padding`` texels between them at about ``resolution``.

    ``max_chart_fraction`` bounds each chart's area to that fraction of the surface: xatlas grows
    unbounded charts very slowly on dense meshes (measured here: 25 s for a 20k-face sphere, 47 s for
    50k), bounded ones 5 to 10 times faster, at about 20 % lower atlas utilisation. 0 = unbounded.
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(mesh.vertices, mesh.faces.astype(np.uint32))
    chart = xatlas.ChartOptions()
    if max_chart_fraction > 0:
        t = mesh.vertices[mesh.faces].astype(np.float64)
        area = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum()
        chart.max_chart_area = float(area * max_chart_fraction)
    pack = xatlas.PackOptions()
    pack.padding = int(padding)
    pack.resolution = int(resolution)
    pack.bilinear = True
    pack.blockAlign = True
    atlas.generate(chart_options=chart, pack_options=pack)
    vmapping, indices, uvs = atlas[0]
    vmapping = vmapping.astype(np.int64)
    uvs = _snap_unchartered(mesh.vertices[vmapping], indices.astype(np.int64), uvs.astype(np.float32))

    def pick(a):
        return None if a is None else a[vmapping]
    out = HeadMesh(mesh.vertices[vmapping], indices.astype(np.int64), pick(mesh.labels),
                   pick(mesh.colors), uvs.astype(np.float32),
                   np.zeros((resolution, resolution, 3), np.uint8))
    return out, vmapping


def _snap_unchartered(verts: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Give the faces xatlas could not chart a UV inside a chart, keeping their UV area zero.

    xatlas ignores faces whose area is below its epsilon (``FLT_EPSILON`` = 1.2e-7 model units^2:
    decimation slivers) and gives their own vertex copies UV (0, 0), the atlas corner. Each group of
    such "lost" vertices (vertices in no face of positive UV area, connected through zero-area faces)
    gets **one** UV: that of a charted vertex of the group's faces if there is one, otherwise that of
    the charted vertex nearest (in 3D) to the group, so the sliver takes the colour of the surface
    next to it. One UV per group matters: snapping the three corners of a sliver independently can
    land them in three different charts, and the resulting triangle (up to a fifth of the atlas) then
    overwrites the texels of every chart under it with points of the sliver when the atlas is
    rasterised.

    verts [V, 3], faces [F, 3] int64, uv [V, 2] -> uv [V, 2] (a copy when changed).
    """
    t = uv[faces]
    area = np.abs(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]))
    charted = np.zeros(len(verts), bool)
    charted[faces[area > 0].reshape(-1)] = True
    if charted.all() or not charted.any():
        return uv
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    flat = faces[area == 0]
    rows = np.concatenate([flat[:, 0], flat[:, 1], flat[:, 2]])
    cols = np.concatenate([flat[:, 1], flat[:, 2], flat[:, 0]])
    graph = sp.coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(verts),) * 2)
    _, group = connected_components(graph, directed=False)
    lost = np.nonzero(~charted)[0]
    # the UV source of each group: a charted member if any (largest index wins, any would do) ...
    source = np.full(group.max() + 1, -1, dtype=np.int64)
    members = np.nonzero(charted)[0]
    source[group[members]] = members
    # ... else the charted vertex nearest to the group's first lost vertex
    groups, first = np.unique(group[lost], return_index=True)
    orphan = source[groups] < 0
    if orphan.any():
        _, nearest = cKDTree(verts[members]).query(verts[lost[first[orphan]]])
        source[groups[orphan]] = members[nearest]
    uv = uv.copy()
    uv[lost] = uv[source[group[lost]]]
    return uv


@dataclass(frozen=True, eq=False)
class TexelCover:
    """Texels covered by triangles. ``rows``, ``cols``, ``face`` are [K] int64, ``bary`` [K, 3] float32
    barycentric coordinates (non-negative, summing to 1) of each texel centre in its triangle."""

    rows: np.ndarray
    cols: np.ndarray
    face: np.ndarray
    bary: np.ndarray


def rasterize_uv(uv: np.ndarray, faces: np.ndarray, size: int) -> TexelCover:
    """Which triangle covers each texel of a ``size`` x ``size`` texture (see the module docstring).

    Each triangle is filled with OpenCV (conservatively, including texels its edges touch); where
    triangles overlap the later one wins. Barycentrics are clamped into the triangle, so border texels
    take the colour of the nearest point of their triangle (which also hides seams under bilinear
    filtering)."""
    px = np.empty_like(uv, dtype=np.float64)
    px[:, 0] = uv[:, 0] * size - 0.5  # cv2 pixel centres are at integer coordinates
    px[:, 1] = (1.0 - uv[:, 1]) * size - 0.5
    fixed = np.round(px * (1 << _SHIFT)).astype(np.int32)
    ids = np.full((size, size), -1, dtype=np.int32)
    for f, tri in enumerate(fixed[faces]):
        cv2.fillConvexPoly(ids, tri, f, lineType=cv2.LINE_8, shift=_SHIFT)
    flat = torch.from_numpy(ids.reshape(-1))
    texel = torch.nonzero(flat >= 0)[:, 0]
    face = flat[texel].long()
    rows, cols = texel // size, texel % size
    tri = torch.from_numpy(px.astype(np.float32))[torch.from_numpy(faces)[face]]  # [K, 3, 2]
    q = torch.stack([cols, rows], dim=-1).float()
    bary = barycentric(q, tri)
    return TexelCover(rows.numpy(), cols.numpy(), face.numpy(), bary.numpy())


def barycentric(q: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Barycentrics [K, 3] of points q [K, 2] in triangles tri [K, 3, 2], clamped into the triangle
    (degenerate triangles give 1/3 each)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, q - a
    d00 = (v0 * v0).sum(-1)
    d01 = (v0 * v1).sum(-1)
    d11 = (v1 * v1).sum(-1)
    d20 = (v2 * v0).sum(-1)
    d21 = (v2 * v1).sum(-1)
    den = d00 * d11 - d01 * d01
    ok = den.abs() > 1e-12 * (d00 * d11).clamp(min=1e-30)
    den = torch.where(ok, den, torch.ones_like(den))
    w1 = torch.where(ok, (d11 * d20 - d01 * d21) / den, torch.full_like(den, 1.0 / 3.0))
    w2 = torch.where(ok, (d00 * d21 - d01 * d20) / den, torch.full_like(den, 1.0 / 3.0))
    w = torch.stack([1.0 - w1 - w2, w1, w2], dim=-1).clamp(min=0.0)
    return w / w.sum(-1, keepdim=True).clamp(min=1e-12)


def dilate(image: np.ndarray, mask: np.ndarray, iterations: int) -> np.ndarray:
    """Grow the colours of ``image`` [T, T, C] float where ``mask`` [T, T] bool is set into the empty
    texels around them (``iterations`` texels), so bilinear filtering and mip-maps do not pull the
    background into chart borders."""
    img = image.astype(np.float32) * mask[..., None]
    m = mask.astype(np.float32)
    kernel = np.ones((3, 3), np.float32)
    for _ in range(iterations):
        s = cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        n = cv2.filter2D(m, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        grow = (m == 0) & (n > 0)
        if s.ndim == 2:
            s = s[..., None]
        img[grow] = s[grow] / n[grow][:, None]
        m[grow] = 1.0
    return img
