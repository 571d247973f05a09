# SPDX-License-Identifier: GPL-3.0-or-later
"""What the mesh code needs from a radiance field and from a renderer, as two small protocols.

A :class:`Field` answers point queries in the **model world** (y up, face toward +z, head inside
``[-0.5, 0.5]^3``, see :mod:`ide3d_core.cameras`); it is camera independent. A :class:`Renderer`
renders the same field from camera labels (only texture baking needs one). The generator adapters in
:mod:`ide3d_core.mesh.generator_field` implement both for :class:`ide3d_core.networks.Generator`;
:mod:`ide3d_core.mesh.analytic` implements them in closed form for tests and benchmarks.

:func:`query_chunked` is the one place that splits a large point set into bounded chunks, so memory
stays bounded whatever the grid or texture size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import torch

from ide3d_core.progress import CancelToken


@runtime_checkable
class Field(Protocol):
    """A density / semantic / colour field over the model world.

    Attributes:
        device: where :meth:`density` and :meth:`query` want their points.
    """

    device: torch.device

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """points [N, 3] float32 model world -> activated density sigma [N] (>= 0, units 1/model unit)."""
        ...

    def query(self, points: torch.Tensor
              ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """points [N, 3] -> (sigma [N], semantic logits [N, 19] or None, rgb [N, 3] in [0, 1] or None)."""
        ...


@dataclass(frozen=True)
class RenderedViews:
    """Renders of a field from B cameras.

    Attributes:
        rgb: [B, 3, H, W] float in [0, 1] (sRGB values as the generator outputs them).
        depth: [B, 1, h, w] distance along the unit ray (model units); may be coarser than rgb.
        opacity: [B, 1, h, w] accumulated alpha in [0, 1], same size as depth.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    opacity: torch.Tensor

    def __post_init__(self) -> None:
        if self.rgb.ndim != 4 or self.rgb.shape[1] != 3:
            raise ValueError(f"rgb must be [B, 3, H, W], got {tuple(self.rgb.shape)}")
        for name in ("depth", "opacity"):
            t = getattr(self, name)
            if t.ndim != 4 or t.shape[1] != 1 or t.shape[0] != self.rgb.shape[0]:
                raise ValueError(f"{name} must be [B, 1, h, w] with B = {self.rgb.shape[0]}, "
                                 f"got {tuple(t.shape)}")
        if self.depth.shape != self.opacity.shape:
            raise ValueError("depth and opacity must have the same shape")


@runtime_checkable
class Renderer(Protocol):
    """Renders the field of the same head from packed 25-float camera labels [B, 25]."""

    def render(self, labels: np.ndarray) -> RenderedViews:
        ...


def query_chunked(field: Field, points: torch.Tensor, chunk: int, want_semantic: bool = True,
                  want_rgb: bool = True, cancel: Optional[CancelToken] = None
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """:meth:`Field.query` over [N, 3] points in chunks of at most ``chunk`` points.

    Returns tensors on the field's device (no host transfer here): sigma [N], semantic [N, 19] or None,
    rgb [N, 3] or None (None when the field has none or it was not wanted).
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    sig, sem, rgb = [], [], []
    chunks = 0
    with torch.no_grad():
        for start in range(0, points.shape[0], chunk):
            if cancel is not None:
                cancel.raise_if_cancelled()
            s, l, c = field.query(points[start:start + chunk].to(field.device, torch.float32))
            chunks += 1
            sig.append(s.reshape(-1))
            if want_semantic and l is not None:
                sem.append(l)
            if want_rgb and c is not None:
                rgb.append(c)
    if chunks == 0:
        return torch.zeros(0, device=field.device), None, None
    return (torch.cat(sig), torch.cat(sem) if len(sem) == chunks else None,
            torch.cat(rgb) if len(rgb) == chunks else None)
