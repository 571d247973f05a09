# SPDX-License-Identifier: GPL-3.0-or-later
"""The dual discriminator of IDE-3D: an RGB branch and a semantic branch with separate outputs.

* RGB branch input: ``[B, 6, H, W]`` = the high-resolution image concatenated with the low-resolution
  (neural-rendering) image upsampled to ``H x W`` (EG3D's dual discrimination).
* Semantic branch input: ``[B, 38, H, W]`` = high-resolution class probabilities concatenated with the
  upsampled low-resolution ones (19 + 19 channels), scaled to ``[-1, 1]`` by :func:`prepare_inputs`.

Each branch is a StyleGAN2 residual discriminator (from-RGB 1x1 conv, residual blocks halving the
resolution down to 4x4, minibatch standard deviation, conv + two fully connected layers) with projection
conditioning on the 25-float camera label: the last layer outputs a ``cmap_dim`` vector that is
dotted with an embedding of the camera made by a small mapping network, divided by ``sqrt(cmap_dim)``.
The two branches give two logits (the paper's supplement, Fig. 11 b, found separate outputs better
than a shared head); the losses treat them as two discriminators, each with its own R1 gamma.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.cameras import LABEL_DIM
from ide3d_core.labels import NUM_CLASSES
from ide3d_core.networks.layers import (Conv2dLayer, FullyConnected, ResidualDownBlock, init_parameters,
                                        minibatch_stddev, normalize_2nd_moment)

RGB_CHANNELS = 6
SEMANTIC_CHANNELS = 2 * NUM_CLASSES


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Architecture of one :class:`DualDiscriminator` (both branches share it).

    Attributes:
        resolution: input size in pixels (the generator's output resolution), a power of two >= 8.
        channel_base: channels at resolution r are ``min(channel_base // r, channel_max)``.
        channel_max: upper bound of the channel count.
        cmap_dim: size of the projection-conditioning embedding (0 disables camera conditioning).
        mapping_layers: fully connected layers of the camera-label mapping network.
        mapping_lr_multiplier: learning-rate multiplier of that network (EG3D: 0.01, so the
            conditioning moves slowly).
        mbstd_group: minibatch-stddev group size (the per-GPU batch must be divisible by
            ``min(mbstd_group, batch)``).
        mbstd_channels: number of stddev feature maps.
    """

    resolution: int = 256
    channel_base: int = 32768
    channel_max: int = 512
    cmap_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    mbstd_group: int = 4
    mbstd_channels: int = 1

    def __post_init__(self) -> None:
        r = self.resolution
        if r < 8 or r & (r - 1):
            raise ValueError(f"discriminator resolution must be a power of two >= 8, got {r}")

    def channels(self, res: int) -> int:
        return max(1, min(self.channel_base // res, self.channel_max))


class LabelMapping(nn.Module):
    """Camera label [B, 25] -> conditioning embedding [B, cmap_dim] (normalised input, MLP)."""

    def __init__(self, cmap_dim: int, layers: int, lr_multiplier: float) -> None:
        super().__init__()
        self.embed = FullyConnected(LABEL_DIM, cmap_dim)
        self.layers = nn.ModuleList(FullyConnected(cmap_dim, cmap_dim, activation="lrelu",
                                                   lr_mult=lr_multiplier) for _ in range(layers))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = normalize_2nd_moment(self.embed(c))
        for layer in self.layers:
            x = layer(x)
        return x


class DiscriminatorBranch(nn.Module):
    """One conditional residual discriminator: x [B, in_channels, R, R], c [B, 25] -> logits [B, 1]."""

    def __init__(self, cfg: DiscriminatorConfig, in_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        r = cfg.resolution
        self.from_rgb = Conv2dLayer(in_channels, cfg.channels(r), 1)
        blocks = []
        while r > 4:
            blocks.append(ResidualDownBlock(cfg.channels(r), cfg.channels(r // 2)))
            r //= 2
        self.blocks = nn.ModuleList(blocks)
        c4 = cfg.channels(4)
        self.conv = Conv2dLayer(c4 + cfg.mbstd_channels, c4, 3)
        self.fc = FullyConnected(c4 * 16, c4, activation="lrelu")
        out_dim = cfg.cmap_dim if cfg.cmap_dim > 0 else 1
        self.out = FullyConnected(c4, out_dim)
        self.mapping = (LabelMapping(cfg.cmap_dim, cfg.mapping_layers, cfg.mapping_lr_multiplier)
                        if cfg.cmap_dim > 0 else None)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        r = self.cfg.resolution
        if x.ndim != 4 or x.shape[-2:] != (r, r):
            raise ValueError(f"discriminator expects [B, C, {r}, {r}], got {tuple(x.shape)}")
        x = self.from_rgb(x)
        for block in self.blocks:
            x = block(x)
        x = minibatch_stddev(x, self.cfg.mbstd_group, self.cfg.mbstd_channels)
        x = self.fc(self.conv(x).flatten(1))
        x = self.out(x)
        if self.mapping is None:
            return x
        cmap = self.mapping(c.to(x.dtype))
        return (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cfg.cmap_dim)


@dataclass
class DiscriminatorOutput:
    """Logits of both branches, each [B, 1] (positive = real)."""

    rgb: torch.Tensor
    semantic: torch.Tensor


class DualDiscriminator(nn.Module):
    """RGB branch + semantic branch (see the module docstring). Plain module, no device policy.

    Weights are drawn from ``torch.Generator().manual_seed(seed)`` (the same on every machine).
    """

    def __init__(self, cfg: DiscriminatorConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = cfg
        self.rgb = DiscriminatorBranch(cfg, RGB_CHANNELS)
        self.semantic = DiscriminatorBranch(cfg, SEMANTIC_CHANNELS)
        init_parameters(self, torch.Generator().manual_seed(seed))

    def forward(self, rgb: torch.Tensor, semantic: torch.Tensor, c: torch.Tensor) -> DiscriminatorOutput:
        """rgb [B, 6, R, R], semantic [B, 38, R, R], c [B, 25] -> :class:`DiscriminatorOutput`."""
        if rgb.shape[1] != RGB_CHANNELS or semantic.shape[1] != SEMANTIC_CHANNELS:
            raise ValueError(f"expected {RGB_CHANNELS} RGB and {SEMANTIC_CHANNELS} semantic channels, "
                             f"got {rgb.shape[1]} and {semantic.shape[1]}")
        return DiscriminatorOutput(self.rgb(rgb, c), self.semantic(semantic, c))


def prepare_inputs(image: torch.Tensor, image_raw: torch.Tensor, semantic_prob: torch.Tensor,
                   semantic_raw_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the two branch inputs from a high- and a low-resolution rendering (real or fake).

    Args:
        image: [B, 3, H, W] in [-1, 1]. image_raw: [B, 3, h, w] in [-1, 1].
        semantic_prob: [B, 19, H, W] class probabilities (softmax of logits, or one-hot for data).
        semantic_raw_prob: [B, 19, h, w] probabilities at the neural-rendering resolution.
    Returns:
        rgb [B, 6, H, W] and semantic [B, 38, H, W]; the low-resolution halves are upsampled with
        bilinear interpolation (``align_corners=False``: pixel centres at (i + 0.5) / size, as the
        camera convention) and probabilities are mapped to ``2 p - 1`` so both branches see zero-centred
        inputs in [-1, 1].
    """
    size = image.shape[-2:]
    up = dict(size=size, mode="bilinear", align_corners=False)
    rgb = torch.cat([image, F.interpolate(image_raw, **up)], dim=1)
    sem = torch.cat([semantic_prob, F.interpolate(semantic_raw_prob, **up)], dim=1) * 2.0 - 1.0
    return rgb, sem


def downsample_real(image: torch.Tensor, labels_onehot: torch.Tensor,
                    resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The data side of dual discrimination: low-resolution twins of a real image and mask.

    image [B, 3, H, W] -> [B, 3, r, r] by antialiased bilinear resampling (EG3D's filtered resize);
    one-hot labels [B, 19, H, W] -> class fractions [B, 19, r, r] by area averaging (each low-res pixel
    holds the share of each class in its footprint, so it still sums to 1).
    """
    img = F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=False,
                        antialias=True)
    sem = F.interpolate(labels_onehot, size=(resolution, resolution), mode="area")
    return img, sem
