# SPDX-License-Identifier: GPL-3.0-or-later
"""Closed-form fields and a ray-cast renderer: the independent truth for mesh tests and benchmarks.

A signed distance ``d(p)`` (negative inside, model units) becomes an activated density

    sigma(p) = 2 * level * sigmoid(-d(p) / width)

so the iso-surface ``sigma = level`` is exactly ``d = 0`` whatever ``width`` is, and the field is smooth
and monotone across the surface, as a trained radiance field's density roughly is.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ide3d_core.cameras import Camera
from ide3d_core.labels import NUM_CLASSES
from ide3d_core.mesh.field import RenderedViews

PointFn = Callable[[torch.Tensor], torch.Tensor]


def sphere_sdf(center: Sequence[float], radius: float) -> PointFn:
    """Signed distance [N] of points [N, 3] to a sphere."""
    c = torch.tensor(center, dtype=torch.float32)

    def sdf(p: torch.Tensor) -> torch.Tensor:
        return torch.linalg.norm(p - c.to(p.device), dim=-1) - radius
    return sdf


def box_sdf(center: Sequence[float], half_size: Sequence[float]) -> PointFn:
    """Exact signed distance [N] of points [N, 3] to an axis-aligned box."""
    c = torch.tensor(center, dtype=torch.float32)
    h = torch.tensor(half_size, dtype=torch.float32)

    def sdf(p: torch.Tensor) -> torch.Tensor:
        q = (p - c.to(p.device)).abs() - h.to(p.device)
        outside = torch.linalg.norm(q.clamp(min=0.0), dim=-1)
        inside = q.max(dim=-1).values.clamp(max=0.0)
        return outside + inside
    return sdf


def union_sdf(*sdfs: PointFn) -> PointFn:
    def sdf(p: torch.Tensor) -> torch.Tensor:
        return torch.stack([f(p) for f in sdfs]).min(dim=0).values
    return sdf


@dataclass(frozen=True)
class AnalyticField:
    """A :class:`ide3d_core.mesh.field.Field` from closed-form functions.

    Attributes:
        sdf: points [N, 3] -> signed distance [N] (model units, negative inside).
        level: the density of the surface (the extraction level to use).
        width: sigmoid width of the density transition (model units).
        label: points [N, 3] -> class ids [N] (int64), or None for a field without semantics.
        color: points [N, 3] -> rgb [N, 3] in [0, 1], or None for a field without colour.
        device: where queries run.
    """

    sdf: PointFn
    level: float = 10.0
    width: float = 0.01
    label: Optional[PointFn] = None
    color: Optional[PointFn] = None
    device: torch.device = dc_field(default_factory=lambda: torch.device("cpu"))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.level * torch.sigmoid(-self.sdf(points) / self.width)

    def query(self, points: torch.Tensor):
        sigma = self.density(points)
        logits = None
        if self.label is not None:
            ids = self.label(points).long()
            logits = torch.nn.functional.one_hot(ids, NUM_CLASSES).to(points.dtype) * 10.0
        rgb = self.color(points) if self.color is not None else None
        return sigma, logits, rgb


@dataclass(frozen=True)
class SphereRenderer:
    """Exact ray casting of one opaque sphere whose surface colour is ``color(point)``.

    Implements :class:`ide3d_core.mesh.field.Renderer`: rgb [B, 3, H, W] (background 0), depth
    [B, 1, H, W] distance along the unit ray to the first hit (background: ``far``), opacity 1 on hits.
    """

    center: Sequence[float]
    radius: float
    color: PointFn
    width: int = 128
    height: int = 128
    far: float = 3.3

    def render(self, labels: np.ndarray) -> RenderedViews:
        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 25)
        c = np.asarray(self.center, dtype=np.float64)
        rgbs, depths, alphas = [], [], []
        for lab in labels:
            origins, dirs = Camera.from_label(lab).rays(self.width, self.height)
            oc = origins - c
            b = (oc * dirs).sum(-1)
            disc = b * b - ((oc * oc).sum(-1) - self.radius ** 2)
            hit = disc > 0
            t = -b - np.sqrt(np.where(hit, disc, 0.0))
            hit &= t > 0
            pts = origins + t[..., None] * dirs
            col = self.color(torch.from_numpy(pts.reshape(-1, 3)).float()).reshape(self.height, self.width, 3)
            col = col * torch.from_numpy(hit[..., None]).float()
            rgbs.append(col.permute(2, 0, 1))
            depths.append(torch.from_numpy(np.where(hit, t, self.far)).float()[None])
            alphas.append(torch.from_numpy(hit).float()[None])
        return RenderedViews(torch.stack(rgbs), torch.stack(depths), torch.stack(alphas))
