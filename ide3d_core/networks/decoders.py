# SPDX-License-Identifier: GPL-3.0-or-later
"""The dual MLP decoders (paper: one hidden layer of 64 units, softplus).

* :class:`SemanticDecoder`: aggregated semantic-plane features ``[..., Fs]`` -> density ``[..., 1]``
  and 19 semantic logits. Density is ``softplus(raw + density_bias)`` (EG3D's bias -1; reference:
  IDE-3D's choice unknown), so it is >= 0 and smooth at initialisation.
* :class:`TextureDecoder`: aggregated texture-plane features ``[..., Ft]`` -> ``feature_channels``
  colour features ``2 sigmoid(raw) - 1`` in (-1, 1); the first three are the low-resolution RGB.
  *Decision:* the [-1, 1] range matches the image range, so the low-res RGB needs no rescaling and
  an empty pixel composites to 0 (mid grey), which the super-resolution learns to fill.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.networks.layers import FullyConnected, bias_act


class SemanticDecoder(nn.Module):
    """``features [..., in] -> (sigma [..., 1], logits [..., num_classes])``."""

    def __init__(self, in_features: int, hidden: int = 64, num_classes: int = 19,
                 density_bias: float = -1.0) -> None:
        super().__init__()
        self.density_bias = density_bias
        self.hidden = FullyConnected(in_features, hidden, activation="softplus")
        self.out = FullyConnected(hidden, 1 + num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.out(self.hidden(x))
        sigma = F.softplus(y[..., :1].float() + self.density_bias)
        return sigma, y[..., 1:]

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """The density ``[..., 1]`` alone (``forward(x)[0]`` without the 19 class logits: mesh grids)."""
        w = self.out.weight[:1].to(x.dtype) * self.out.weight_gain
        b = None if self.out.bias is None else self.out.bias[:1].to(x.dtype) * self.out.lr_mult
        return F.softplus(F.linear(self.hidden(x), w, b).float() + self.density_bias)

    @torch.no_grad()
    def density_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds ``(sigma_lo, sigma_hi)`` ``[..., 1]`` of the density over every feature vector in the
        box ``lo <= x <= hi`` ``[..., in]`` (interval arithmetic: exact for each linear layer, the
        activations are monotone). Conservative by construction, whatever the weights: the fast
        renderer's occupancy grid (:mod:`ide3d_core.fast_render`) skips space where ``sigma_hi`` is small.
        """
        lo, hi = _interval_linear(self.hidden, lo.float(), hi.float())
        lo, hi = _interval_linear(self.out, lo, hi, rows=1)
        return F.softplus(lo + self.density_bias), F.softplus(hi + self.density_bias)


def _interval_linear(layer: FullyConnected, lo: torch.Tensor, hi: torch.Tensor,
                     rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bounds of ``layer`` (its first ``rows`` outputs) over the box ``[lo, hi]``; the
    activations of :class:`FullyConnected` are all non-decreasing, so they map bounds to bounds."""
    w = layer.weight.float()[:rows] * layer.weight_gain
    b = None if layer.bias is None else layer.bias.float()[:rows] * layer.lr_mult
    mid, rad = 0.5 * (lo + hi), 0.5 * (hi - lo)
    m, r = F.linear(mid, w, b), F.linear(rad, w.abs())
    lo, hi = m - r, m + r
    if layer.activation != "linear":
        lo, hi = bias_act(lo, None, layer.activation), bias_act(hi, None, layer.activation)
    return lo, hi


class TextureDecoder(nn.Module):
    """``features [..., in] -> colour features [..., out]`` in (-1, 1)."""

    def __init__(self, in_features: int, hidden: int = 64, out_features: int = 32) -> None:
        super().__init__()
        self.hidden = FullyConnected(in_features, hidden, activation="softplus")
        self.out = FullyConnected(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.hidden(x))) * 2.0 - 1.0
