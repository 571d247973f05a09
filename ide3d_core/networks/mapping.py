# SPDX-License-Identifier: GPL-3.0-or-later
"""Mapping network (z, camera label) -> W+, and the pure code-space helpers (truncation, mixing).

As in EG3D/StyleGAN2: z and an embedding of the 25-float camera label are each normalised to unit
mean square, concatenated and passed through ``mapping_layers`` equalised-lr FC layers (leaky ReLU,
learning-rate multiplier 0.01). The single ``w`` is broadcast to all ``num_ws`` codes; the first
``num_shape_ws`` form ``w_s`` and the rest ``w_t`` (see :mod:`ide3d_core.networks.config`).

``w_avg`` (the running mean of ``w``) is a buffer that only :meth:`MappingNetwork.update_w_avg`
changes; a forward pass changes no state.
"""
from __future__ import annotations

import torch
from torch import nn

from ide3d_core.networks.layers import FullyConnected, normalize_2nd_moment


class MappingNetwork(nn.Module):
    """``(z [B, z_dim], c [B, 25]) -> ws [B, num_ws, w_dim]``."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2,
                 lr_mult: float = 0.01) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.embed = FullyConnected(c_dim, w_dim)
        dims = [z_dim + w_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnected(dims[i], dims[i + 1], activation="lrelu", lr_mult=lr_mult)
            for i in range(num_layers))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}], got {tuple(z.shape)}")
        if c.ndim != 2 or c.shape != (z.shape[0], self.c_dim):
            raise ValueError(f"c must be [B={z.shape[0]}, {self.c_dim}], got {tuple(c.shape)}")
        x = torch.cat([normalize_2nd_moment(z.to(torch.float32)),
                       normalize_2nd_moment(self.embed(c.to(torch.float32)))], dim=1)
        for layer in self.layers:
            x = layer(x)
        ws = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        if truncation_psi != 1.0:
            ws = truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)
        return ws.contiguous()

    def average_ws(self, batch: int = 1) -> torch.Tensor:
        """[batch, num_ws, w_dim]: ``w_avg`` in every code (the truncation centre)."""
        return self.w_avg.reshape(1, 1, -1).expand(batch, self.num_ws, -1).contiguous()

    @torch.no_grad()
    def update_w_avg(self, w: torch.Tensor, beta: float = 0.998) -> None:
        """Move ``w_avg`` toward the batch mean of ``w`` ([B, w_dim] or [B, num_ws, w_dim]); training
        calls this explicitly after each generator step."""
        mean = w.detach().float().reshape(-1, self.w_dim).mean(dim=0)
        self.w_avg.copy_(mean.lerp(self.w_avg, beta))


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float,
             cutoff: int | None = None) -> torch.Tensor:
    """``w_avg + psi * (ws - w_avg)`` for the codes ``[:cutoff]`` (all when None); others unchanged."""
    if psi == 1.0:
        return ws
    out = w_avg.to(ws.dtype) + psi * (ws - w_avg.to(ws.dtype))
    if cutoff is None:
        return out
    return torch.cat([out[:, :cutoff], ws[:, cutoff:]], dim=1)


def truncate_groups(ws: torch.Tensor, w_avg: torch.Tensor, num_shape_ws: int, psi_shape: float = 1.0,
                    psi_texture: float = 1.0) -> torch.Tensor:
    """Truncate the shape codes and the texture codes with their own ``psi``."""
    shape = truncate(ws[:, :num_shape_ws], w_avg, psi_shape)
    texture = truncate(ws[:, num_shape_ws:], w_avg, psi_texture)
    return torch.cat([shape, texture], dim=1)


def mix_shape_texture(ws_shape: torch.Tensor, ws_texture: torch.Tensor, num_shape_ws: int) -> torch.Tensor:
    """Codes with the geometry/semantics of ``ws_shape`` and the texture of ``ws_texture``."""
    if ws_shape.shape != ws_texture.shape:
        raise ValueError(f"code shapes differ: {tuple(ws_shape.shape)} vs {tuple(ws_texture.shape)}")
    return torch.cat([ws_shape[:, :num_shape_ws], ws_texture[:, num_shape_ws:]], dim=1)


def style_mix(ws_a: torch.Tensor, ws_b: torch.Tensor, crossover: int) -> torch.Tensor:
    """StyleGAN style mixing: codes ``[:crossover]`` from ``ws_a``, the rest from ``ws_b``.

    ``crossover`` below ``num_shape_ws`` mixes within the shape group, above it within the texture
    group, and equal to it swaps whole groups."""
    if ws_a.shape != ws_b.shape:
        raise ValueError(f"code shapes differ: {tuple(ws_a.shape)} vs {tuple(ws_b.shape)}")
    if not 0 <= crossover <= ws_a.shape[1]:
        raise ValueError(f"crossover must be in 0..{ws_a.shape[1]}, got {crossover}")
    return torch.cat([ws_a[:, :crossover], ws_b[:, crossover:]], dim=1)


def interpolate_codes(ws_a: torch.Tensor, ws_b: torch.Tensor, t: float, num_shape_ws: int,
                      groups: str = "all") -> torch.Tensor:
    """Linear interpolation of codes, restricted to ``groups`` ("all", "shape" or "texture")."""
    mixed = torch.lerp(ws_a, ws_b, t)
    if groups == "all":
        return mixed
    if groups == "shape":
        return torch.cat([mixed[:, :num_shape_ws], ws_a[:, num_shape_ws:]], dim=1)
    if groups == "texture":
        return torch.cat([ws_a[:, :num_shape_ws], mixed[:, num_shape_ws:]], dim=1)
    raise ValueError(f"groups must be 'all', 'shape' or 'texture', got {groups!r}")
