# SPDX-License-Identifier: GPL-3.0-or-later
"""The multi-head tri-plane synthesis network: shape branch (w_s) and three texture heads (w_t).

* **Shape branch** (codes ``w_s``): a learned 4x4 constant, then StyleGAN2 blocks (up-sampling
  modulated conv + modulated conv) at 8, 16, ..., ``shared_resolution``. Its last feature map
  (``shared_channels`` wide; 64 x 64 x 64 in the paper) is shared by the texture heads. Each block's
  to-plane layer adds to a skip-accumulated *semantic* tri-plane (``3 * Cs`` channels), which is
  up-sampled (parameter free, the [1, 3, 3, 1] filter) on to ``plane_resolution`` after the last
  block, so the semantic planes have the same size P as the texture planes.
  *Decision (reference: unknown):* the semantic planes come from the shared branch's skip outputs and
  need no codes of their own, which keeps the paper's 8 shape codes and makes density and semantics a
  function of ``w_s`` alone *by construction*.
* **Texture heads** (codes ``w_t``, the same codes for all three heads): one per plane
  (``plane_axes[k]``), each a modulated conv at the shared resolution, then up-blocks to P with a
  skip-accumulated to-plane output of ``Ct`` channels (256 x 256 x 32 in the paper).
"""
from __future__ import annotations

import torch
from torch import nn

from ide3d_core.networks.config import GeneratorConfig
from ide3d_core.networks.layers import ConstantInput, ModulatedConv2d, to_output, upsample2x


class UpBlock(nn.Module):
    """StyleGAN2 synthesis block: ``x [B, Cin, R, R] -> [B, Cout, 2R, 2R]`` with two codes, plus a skip
    output ``[B, Cskip, 2R, 2R]`` (the second code drives the output layer too)."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv0 = ModulatedConv2d(in_channels, out_channels, w_dim, up=True)
        self.conv1 = ModulatedConv2d(out_channels, out_channels, w_dim)
        self.to_skip = to_output(out_channels, skip_channels, w_dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, w0: torch.Tensor,
                w1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(self.conv0(x, w0), w1)
        y = self.to_skip(x, w1)
        skip = y if skip is None else upsample2x(skip).to(y.dtype) + y
        return x, skip


class ShapeBranch(nn.Module):
    """``w_s [B, num_shape_ws, w_dim] -> (shared [B, shared_channels, Rs, Rs],
    semantic planes [B, 3, Cs, P, P])``."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.const = ConstantInput(cfg.channels(4), 4)
        skip = 3 * cfg.semantic_plane_channels
        blocks, c_in = [], cfg.channels(4)
        for res in cfg.shape_resolutions:
            blocks.append(UpBlock(c_in, cfg.channels(res), skip, cfg.w_dim))
            c_in = cfg.channels(res)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        x = self.const(ws.shape[0], ws.dtype)
        skip = None
        for i, block in enumerate(self.blocks):
            x, skip = block(x, skip, ws[:, 2 * i], ws[:, 2 * i + 1])
        res = cfg.shared_resolution
        while res < cfg.plane_resolution:
            skip = upsample2x(skip)
            res *= 2
        p = cfg.plane_resolution
        return x, skip.reshape(ws.shape[0], 3, cfg.semantic_plane_channels, p, p)


class TextureHead(nn.Module):
    """One texture plane: ``(shared [B, Csh, Rs, Rs], w_head [B, num_head_ws, w_dim]) -> [B, Ct, P, P]``."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        c0 = cfg.head_channels(cfg.shared_resolution)
        self.conv = ModulatedConv2d(cfg.shared_channels, c0, cfg.w_dim)
        self.to_plane = to_output(c0, cfg.texture_plane_channels, cfg.w_dim)
        blocks, c_in = [], c0
        for res in cfg.head_resolutions:
            blocks.append(UpBlock(c_in, cfg.head_channels(res), cfg.texture_plane_channels, cfg.w_dim))
            c_in = cfg.head_channels(res)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, shared: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        x = self.conv(shared, ws[:, 0])
        plane = self.to_plane(x, ws[:, 0])
        for i, block in enumerate(self.blocks):
            x, plane = block(x, plane, ws[:, 1 + 2 * i], ws[:, 2 + 2 * i])
        return plane


class SynthesisNetwork(nn.Module):
    """``ws [B, num_ws, w_dim] -> (semantic planes [B, 3, Cs, P, P], texture planes [B, 3, Ct, P, P])``.

    Only ``ws[:, :num_shape_ws + num_head_ws]`` are read (the rest drive super-resolution)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.shape = ShapeBranch(cfg)
        self.heads = nn.ModuleList(TextureHead(cfg) for _ in range(3))

    def forward(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, h = self.cfg.num_shape_ws, self.cfg.num_head_ws
        shared, semantic = self.shape(ws[:, :s])
        w_head = ws[:, s:s + h]
        texture = torch.stack([head(shared, w_head) for head in self.heads], dim=1)
        return semantic, texture
