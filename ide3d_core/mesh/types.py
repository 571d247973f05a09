# SPDX-License-Identifier: GPL-3.0-or-later
"""The mesh value every mesh function returns: plain numpy arrays in the model world."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from ide3d_core.labels import NUM_CLASSES


@dataclass(frozen=True, eq=False)
class HeadMesh:
    """A triangle mesh of a head in the **model world** (y up, face toward +z, 1 unit =
    ``ide3d_core.cameras.METRES_PER_UNIT`` metres; export functions scale to metres).

    Triangles are counter-clockwise seen from outside (normals point outward).

    Attributes:
        vertices: [V, 3] float32 model-world positions.
        faces: [F, 3] int64 vertex indices.
        labels: [V] uint8 class ids (argmax of the semantic field at the vertex), or None.
        colors: [V, 3] float32 in [0, 1], the colour field at the vertex, or None.
        uv: [V, 2] float32 texture coordinates (origin bottom-left, v up, as OBJ), or None.
        texture: [T, T, 3] uint8 sRGB image (row 0 = top, v = 1), or None; present iff ``uv`` is.
    """

    vertices: np.ndarray
    faces: np.ndarray
    labels: Optional[np.ndarray] = None
    colors: Optional[np.ndarray] = None
    uv: Optional[np.ndarray] = None
    texture: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype=np.float32)
        f = np.ascontiguousarray(self.faces, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"vertices must be [V, 3], got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"faces must be [F, 3], got {f.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError("faces index vertices out of range")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        n = len(v)
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.shape != (n,) or (lab.size and lab.max() >= NUM_CLASSES):
                raise ValueError(f"labels must be [V] ids < {NUM_CLASSES}, got shape {lab.shape}")
            object.__setattr__(self, "labels", lab.astype(np.uint8))
        if self.colors is not None:
            col = np.asarray(self.colors, dtype=np.float32)
            if col.shape != (n, 3):
                raise ValueError(f"colors must be [V, 3], got {col.shape}")
            object.__setattr__(self, "colors", col)
        if (self.uv is None) != (self.texture is None):
            raise ValueError("uv and texture come together")
        if self.uv is not None:
            uv = np.asarray(self.uv, dtype=np.float32)
            tex = np.asarray(self.texture)
            if uv.shape != (n, 2):
                raise ValueError(f"uv must be [V, 2], got {uv.shape}")
            if tex.ndim != 3 or tex.shape[2] != 3 or tex.dtype != np.uint8:
                raise ValueError(f"texture must be [T, T, 3] uint8, got {tex.shape} {tex.dtype}")
            object.__setattr__(self, "uv", uv)

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def with_(self, **changes) -> "HeadMesh":
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def face_normals(self) -> np.ndarray:
        """[F, 3] unit outward face normals (zero for degenerate faces)."""
        t = self.vertices[self.faces].astype(np.float64)
        n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        length = np.linalg.norm(n, axis=1, keepdims=True)
        return np.where(length > 0, n / np.maximum(length, 1e-30), 0.0)

    def vertex_normals(self) -> np.ndarray:
        """[V, 3] unit area-weighted vertex normals."""
        t = self.vertices[self.faces].astype(np.float64)
        n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
        out = np.zeros((len(self.vertices), 3))
        for k in range(3):
            np.add.at(out, self.faces[:, k], n)
        length = np.linalg.norm(out, axis=1, keepdims=True)
        return np.where(length > 0, out / np.maximum(length, 1e-30), 0.0)

    def submesh(self, face_mask: np.ndarray) -> "HeadMesh":
        """The faces where ``face_mask`` [F] is true, with unused vertices dropped (attributes kept)."""
        faces = self.faces[np.asarray(face_mask, dtype=bool)]
        used = np.unique(faces)
        remap = np.full(len(self.vertices), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))

        def pick(a):
            return None if a is None else a[used]
        return HeadMesh(self.vertices[used], remap[faces], pick(self.labels), pick(self.colors),
                        pick(self.uv), self.texture)
