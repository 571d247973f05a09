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

from ide3d_core.networks.layers import FullyConnected


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


class TextureDecoder(nn.Module):
    """``features [..., in] -> colour features [..., out]`` in (-1, 1)."""

    def __init__(self, in_features: int, hidden: int = 64, out_features: int = 32) -> None:
        super().__init__()
        self.hidden = FullyConnected(in_features, hidden, activation="softplus")
        self.out = FullyConnected(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.hidden(x))) * 2.0 - 1.0
