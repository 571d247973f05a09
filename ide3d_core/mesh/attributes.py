# SPDX-License-Identifier: GPL-3.0-or-later
"""Per-vertex semantic labels and colours from the field, and splitting a mesh into label parts."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ide3d_core.labels import NAMES, NUM_CLASSES
from ide3d_core.mesh.field import Field, query_chunked
from ide3d_core.mesh.types import HeadMesh
from ide3d_core.progress import CancelToken


def attach_field_attributes(mesh: HeadMesh, field: Field, chunk: int = 1 << 16,
                            cancel: Optional[CancelToken] = None) -> HeadMesh:
    """Set ``labels`` (argmax of the semantic logits at each vertex) and ``colors`` (the colour field,
    clamped to [0, 1]) from ``field``; either stays None when the field has none."""
    pts = torch.from_numpy(mesh.vertices)
    _, logits, rgb = query_chunked(field, pts, chunk, cancel=cancel)
    labels = None if logits is None else logits.argmax(dim=-1).to(torch.uint8).cpu().numpy()
    colors = None if rgb is None else rgb.clamp(0.0, 1.0).float().cpu().numpy()
    return mesh.with_(labels=labels, colors=colors)


def face_labels(mesh: HeadMesh) -> np.ndarray:
    """[F] class id per face: the label most of its three vertices carry (the first vertex's label
    when all three differ)."""
    if mesh.labels is None:
        raise ValueError("the mesh has no vertex labels")
    lab = mesh.labels[mesh.faces].astype(np.int64)  # [F, 3]
    out = lab[:, 0].copy()
    two = (lab[:, 1] == lab[:, 2]) & (lab[:, 1] != lab[:, 0])
    out[two] = lab[two, 1]
    return out


def split_by_label(mesh: HeadMesh) -> dict[str, HeadMesh]:
    """The mesh split into one part per class present, keyed by class name (``ide3d_core.labels.NAMES``),
    in class-id order. Faces go to the class of :func:`face_labels`; vertices on part borders are
    duplicated, so each part is a stand-alone mesh."""
    fl = face_labels(mesh)
    return {NAMES[c]: mesh.submesh(fl == c) for c in range(NUM_CLASSES) if np.any(fl == c)}
