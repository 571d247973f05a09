# SPDX-License-Identifier: GPL-3.0-or-later
"""Image losses and metrics of the inversion that need no downloaded weights.

Images are [B, 3, H, W] in [-1, 1] (data range 2) unless stated; label maps are [B, H, W] int ids.
SSIM follows Wang et al. 2004 (11 x 11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, population
statistics, *valid* convolution so no padding biases the borders) -- the same definition as
``skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False)``.
MS-SSIM (Wang et al. 2003) uses the usual five scale weights; images too small for five scales use the
scales that fit (the smallest must still hold one window) with the weights renormalised.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ide3d_core.metrics import mean_iou  # noqa: F401 (the one IoU; inversion reports it)

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2.0
    g = torch.exp(-(x ** 2) / (2.0 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_maps(x: torch.Tensor, y: torch.Tensor, data_range: float, window: int, sigma: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel SSIM and contrast-structure maps (valid region), each [B, C, H-w+1, W-w+1]."""
    c = x.shape[1]
    win = _gaussian_window(window, sigma, c, x)
    blur = lambda t: F.conv2d(t, win, groups=c)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return lum * cs, cs


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per image, [B]. Needs H, W >= ``window``."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim needs two [B, C, H, W] tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"images of {tuple(x.shape[-2:])} are smaller than the {window}-pixel SSIM window")
    return _ssim_maps(x, y, data_range, window, sigma)[0].mean((1, 2, 3))


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11,
            sigma: float = 1.5) -> torch.Tensor:
    """Multi-scale SSIM per image, [B] (see the module docstring for small images)."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError("ms_ssim needs two [B, C, H, W] tensors of one shape")
    side = min(x.shape[-2:])
    if side < window:
        raise ValueError(f"images of {tuple(x.shape[-2:])} are smaller than the {window}-pixel SSIM window")
    scales = min(len(MS_SSIM_WEIGHTS), 1 + int(math.floor(math.log2(side / window))))
    w = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
    w = w / w.sum()
    values = []
    for s in range(scales):
        full, cs = _ssim_maps(x, y, data_range, window, sigma)
        if s == scales - 1:
            values.append(full.mean((1, 2, 3)).clamp_min(0.0))
        else:
            values.append(cs.mean((1, 2, 3)).clamp_min(0.0))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, 0)  # [S, B]
    return torch.prod(stacked ** w[:, None], 0)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per image, [B]; with ``mask`` [B, 1, H, W] (bool or 0/1) over the masked pixels only."""
    err = (x - y) ** 2
    if mask is None:
        mse = err.mean((1, 2, 3))
    else:
        m = mask.to(err.dtype).expand_as(err)
        mse = (err * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1.0)
    return 10.0 * torch.log10(data_range ** 2 / mse.clamp_min(1e-12))


def semantic_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of [B, 19, h, w] semantic logits against [B, H, W] label ids (the labels are
    resized to the logits' size by nearest neighbour, never inventing a class)."""
    if labels.shape[-2:] != logits.shape[-2:]:
        labels = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0]
    return F.cross_entropy(logits, labels.long())
