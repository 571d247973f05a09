# SPDX-License-Identifier: GPL-3.0-or-later
"""Procedural heads seen through the mesh protocols (:mod:`ide3d_core.mesh.field`).

A procedural head is exact geometry, so it can go through the *same* extraction, clean-up, labelling
and texture-baking path as a generator's radiance field. This gives the demo a real textured, labelled
head mesh without a trained model, and gives the tests a field whose ground truth is known.

Density: the union value ``v`` of :func:`.mesh.head_field` (positive inside, roughly a signed distance
in model units near the surface) becomes ``sigma = max(0, level + slope * v)``, so the iso-surface
``sigma = level`` that :func:`ide3d_core.mesh.extract_head_mesh` extracts is exactly ``v = 0``.
Semantics: one-hot logits of the label of the primitive bounding the union at the point.
Colour: none at points (texture lives on hit points); baking projects the procedural renders.
"""
from __future__ import annotations

import numpy as np
import torch

from ide3d_core.labels import NUM_CLASSES
from ide3d_core.mesh.extract import DEFAULT_LEVEL
from ide3d_core.mesh.field import RenderedViews

from .heads import HeadBatch
from .mesh import head_field
from .render import render_heads

#: sigma per model unit of signed distance: 1 mm (0.002 units) outside the surface sigma is ~0.
DENSITY_SLOPE = 5000.0


class ProceduralField:
    """:class:`ide3d_core.mesh.field.Field` of one procedural head (``heads.index(i)``)."""

    def __init__(self, head: HeadBatch, level: float = DEFAULT_LEVEL) -> None:
        if head.batch_size != 1:
            raise ValueError(f"ProceduralField takes one head (use heads.index(i)), got {head.batch_size}")
        self.head = head
        self.level = float(level)
        self.device = head.device

    def _sigma(self, value: torch.Tensor) -> torch.Tensor:
        return (self.level + DENSITY_SLOPE * value).clamp_min(0.0)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """[N, 3] model world -> sigma [N] (>= 0)."""
        value, _ = head_field(self.head, points.to(self.device, torch.float32))
        return self._sigma(value)

    def query(self, points: torch.Tensor):
        """[N, 3] -> (sigma [N], one-hot semantic logits [N, 19], None)."""
        value, prim = head_field(self.head, points.to(self.device, torch.float32))
        labels = self.head.label.to(self.device)[prim]
        logits = torch.full((points.shape[0], NUM_CLASSES), -10.0, device=self.device)
        logits.scatter_(1, labels[:, None].long(), 10.0)
        return self._sigma(value), logits, None


class ProceduralRenderer:
    """:class:`ide3d_core.mesh.field.Renderer` of one procedural head at ``resolution`` pixels."""

    def __init__(self, head: HeadBatch, resolution: int = 256, antialias: int = 2) -> None:
        if head.batch_size != 1:
            raise ValueError("ProceduralRenderer takes one head")
        self.head, self.resolution, self.antialias = head, int(resolution), int(antialias)

    def render(self, labels: np.ndarray) -> RenderedViews:
        cams = torch.as_tensor(np.asarray(labels, dtype=np.float32)).to(self.head.device)
        heads = self.head.index(torch.zeros(cams.shape[0], dtype=torch.long, device=self.head.device))
        r = render_heads(heads, cams, self.resolution, self.antialias)
        return RenderedViews(rgb=(r.image.clamp(-1, 1) + 1) / 2, depth=r.depth, opacity=r.mask)
