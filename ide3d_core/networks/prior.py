# SPDX-License-Identifier: GPL-3.0-or-later
"""A code prior in place of the mapping network: ``z -> (w_s, w_t)`` through a Gaussian mixture in PCA space.

Why: the bundled model is trained as an auto-decoder (training/autodecoder): every training head owns a
learned code pair ``(w_s, w_t)`` and no mapping network is ever trained. New heads are drawn from a
prior fitted to those codes, one per group (shape, texture): a PCA basis (``d`` directions) and a
diagonal Gaussian mixture (``K`` components) over the PCA coordinates.

``z [B, z_dim]`` (standard normal, ``z_dim >= 2 + 2 d``) is read as::

    z[:, 0]          component of w_s   (inverse CDF of Phi(z_0) over the mixture weights)
    z[:, 1:1+d]      w_s = mean_s + (loc_k + scale_k * z[:, 1:1+d]) @ basis_s
    z[:, 1+d]        component of w_t
    z[:, 2+d:2+2d]   w_t likewise

so ``z ~ N(0, I)`` is exactly a draw from the mixture, every seed names one head, and the two groups are
independent (a seed's shape and texture can be mixed with another's). The camera label is accepted for
API compatibility with :class:`ide3d_core.networks.mapping.MappingNetwork` and ignored (the codes were
learned with the canonical conditioning only). Truncation pulls each group toward its own mean code.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ide3d_core.networks.mapping import truncate


class CodePrior(nn.Module):
    """``(z [B, z_dim], c [B, 25]) -> ws [B, num_ws, w_dim]``; buffers hold the fitted prior (see module)."""

    def __init__(self, z_dim: int, w_dim: int, num_shape_ws: int, num_ws: int, dim: int, components: int) -> None:
        super().__init__()
        if dim < 1 or components < 1 or z_dim < 2 + 2 * dim or dim > w_dim:
            raise ValueError(f"code prior needs 1 <= dim <= w_dim, components >= 1 and z_dim >= 2 + 2 dim; "
                             f"got dim {dim}, components {components}, z_dim {z_dim}, w_dim {w_dim}")
        self.z_dim, self.w_dim, self.num_ws, self.num_shape_ws = z_dim, w_dim, num_ws, num_shape_ws
        self.dim, self.components = dim, components
        self.register_buffer("mean", torch.zeros(2, w_dim))
        self.register_buffer("basis", torch.zeros(2, dim, w_dim))
        self.register_buffer("mix_weights", torch.full((2, components), 1.0 / components))
        self.register_buffer("loc", torch.zeros(2, components, dim))
        self.register_buffer("scale", torch.ones(2, components, dim))
        #: Mean of both groups' means (the single ``w_avg`` other code may offset from).
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def group_codes(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w_s [B, w_dim], w_t [B, w_dim])`` of standard-normal ``z [B, z_dim]``."""
        d = self.dim
        out = []
        for g, start in ((0, 0), (1, 1 + d)):
            u = 0.5 * (1 + torch.erf(z[:, start].float() / math.sqrt(2.0)))
            cdf = self.mix_weights[g].float().cumsum(0)
            k = torch.searchsorted(cdf / cdf[-1], u.clamp(0, 1 - 1e-7).contiguous()).clamp_max(self.components - 1)
            coords = self.loc[g, k] + self.scale[g, k] * z[:, start + 1:start + 1 + d].float()
            out.append(self.mean[g] + coords @ self.basis[g])
        return out[0], out[1]

    def average_ws(self, batch: int = 1) -> torch.Tensor:
        """[batch, num_ws, w_dim]: each group's mean code (the truncation centre)."""
        s = self.mean[0].expand(batch, self.num_shape_ws, -1)
        t = self.mean[1].expand(batch, self.num_ws - self.num_shape_ws, -1)
        return torch.cat([s, t], 1).contiguous()

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}], got {tuple(z.shape)}")
        w_s, w_t = self.group_codes(z)
        ws = torch.cat([w_s[:, None].expand(-1, self.num_shape_ws, -1),
                        w_t[:, None].expand(-1, self.num_ws - self.num_shape_ws, -1)], 1)
        if truncation_psi != 1.0:
            ws = truncate(ws, self.average_ws(1)[0], truncation_psi, truncation_cutoff)
        return ws.contiguous()
