# SPDX-License-Identifier: GPL-3.0-or-later
"""Small building blocks of the discriminator and the segmentation network (StyleGAN2 style).

Equalised learning rate (Karras et al. 2018): weights are stored with unit variance and scaled by
``1 / sqrt(fan_in)`` at run time, so Adam's per-parameter step sizes are comparable across layers.
Downsampling low-pass filters with the separable ``[1, 3, 3, 1]`` kernel before halving the
resolution (as StyleGAN2), which keeps the discriminator from reacting to aliasing.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Gain that keeps the signal variance of a leaky-ReLU(0.2) layer (StyleGAN's ``sqrt(2)``).
LRELU_GAIN = math.sqrt(2.0)


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate. x: [B, in] -> [B, out]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: bool = False, lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        x = F.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activation else x


class EqualConv2d(nn.Module):
    """k x k convolution (same padding) with equalised learning rate, optional leaky ReLU and an
    optional 2x low-pass downsample after the convolution. x: [B, in, H, W] -> [B, out, H', W']."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: bool = False, down: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2
        self.activation = activation
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = F.conv2d(x, w, padding=self.padding)
        if self.down:
            x = downsample2d(x)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activation else x


def _lowpass_kernel(channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device, dtype=dtype)
    k = torch.outer(f, f)
    k = k / k.sum()
    return k.expand(channels, 1, 4, 4)


def downsample2d(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H/2, W/2]: separable [1,3,3,1] low-pass then stride 2 (H, W even)."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"downsample2d needs even sizes, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    return F.conv2d(x, _lowpass_kernel(c, x.device, x.dtype), stride=2, padding=1, groups=c)


def minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """Append the minibatch standard deviation feature(s) (Karras et al. 2018).

    x: [B, C, H, W] -> [B, C + num_channels, H, W]. Samples are split into groups of
    ``min(group_size, B)`` (B must be divisible by it); each group's per-feature standard deviation is
    averaged over ``C / num_channels`` channels and the spatial positions.
    """
    b, c, h, w = x.shape
    g = min(group_size, b)
    if b % g:
        raise ValueError(f"batch {b} is not divisible by the minibatch-stddev group {g}")
    f = num_channels
    y = x.reshape(g, -1, f, c // f, h, w).float()
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
    y = y.mean(dim=(2, 3, 4)).reshape(-1, f, 1, 1)
    y = y.repeat(g, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)
