# SPDX-License-Identifier: GPL-3.0-or-later
"""Sliced Wasserstein distance between image sets on Laplacian-pyramid patches (Karras et al. 2018).

For each pyramid level (full resolution down to ``min_resolution``), random 7x7 patches are cut from
every image, flattened to descriptors and normalised per colour channel; the distance between the two
descriptor sets is the mean over random unit directions of the 1D Wasserstein-1 distance of their
projections (sorted projections compared element-wise). Reported per level and averaged, times 1e3
as in Progressive GAN.

Two deliberate differences from Progressive GAN: both sets are normalised with the *reference* set's
channel statistics (not each with its own), so a global colour or brightness shift is not normalised
away and counts toward the distance; and both sets use the same random patch positions (less
variance, and a set compared with itself scores exactly 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur5(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = _BINOMIAL.to(x.device, x.dtype)
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def laplacian_pyramid(images: torch.Tensor, min_resolution: int = 16) -> list[torch.Tensor]:
    """[N, C, H, W] -> levels [N, C, H, W], [N, C, H/2, W/2], ...: band-pass levels, the last one the
    low-pass residual at ``min_resolution`` (H a power-of-two multiple of it)."""
    levels, g = [], images
    while g.shape[-1] > min_resolution:
        down = _blur5(g)[..., ::2, ::2]
        up = F.interpolate(down, scale_factor=2, mode="nearest")
        levels.append(g - _blur5(up))
        g = down
    levels.append(g)
    return levels


def _positions(n: int, h: int, w: int, count: int, size: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.randint(0, h - size + 1, (n, count), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, count), generator=generator)
    return ys, xs


def _patches(level: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, size: int) -> torch.Tensor:
    n, c, h, w = level.shape
    count = ys.shape[1]
    off = torch.arange(size)
    rows = (ys[..., None] + off)[..., :, None].expand(n, count, size, size)
    cols = (xs[..., None] + off)[..., None, :].expand(n, count, size, size)
    idx = torch.arange(n)[:, None, None, None].expand_as(rows)
    patches = level.permute(0, 2, 3, 1)[idx, rows.to(level.device), cols.to(level.device)]  # [N,K,s,s,C]
    return patches.reshape(n * count, size * size, c)


@dataclass
class SWDResult:
    """Per-level distances (finest first) and their mean, in units of 1e-3."""

    levels: list[float]
    mean: float


@torch.no_grad()
def sliced_wasserstein(reference: torch.Tensor, other: torch.Tensor, generator: torch.Generator,
                       patches_per_image: int = 64, patch_size: int = 7, directions: int = 512,
                       min_resolution: int = 16) -> SWDResult:
    """SWD between two image sets of equal size.

    Args:
        reference, other: [N, 3, H, W] images in [-1, 1] (same N, H, W; H a power-of-two multiple of
            ``min_resolution``).
        generator: CPU torch generator of the patch positions and projection directions.
    """
    if reference.shape != other.shape or reference.ndim != 4:
        raise ValueError(f"SWD needs two [N, C, H, W] sets of equal shape, got {tuple(reference.shape)} "
                         f"and {tuple(other.shape)}")
    if reference.shape[-1] < min_resolution or reference.shape[-1] < patch_size:
        raise ValueError(f"images of {reference.shape[-1]} px are smaller than the coarsest level")
    pyr_a = laplacian_pyramid(reference.float(), min_resolution)
    pyr_b = laplacian_pyramid(other.float(), min_resolution)
    out = []
    for la, lb in zip(pyr_a, pyr_b):
        ys, xs = _positions(la.shape[0], la.shape[2], la.shape[3], patches_per_image, patch_size, generator)
        da, db = _patches(la, ys, xs, patch_size), _patches(lb, ys, xs, patch_size)
        mean, std = da.mean(dim=(0, 1)), da.std(dim=(0, 1)).clamp_min(1e-8)
        da, db = ((da - mean) / std).flatten(1), ((db - mean) / std).flatten(1)
        dirs = torch.randn(da.shape[1], directions, generator=generator).to(da.device)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        # Sort along the contiguous last dimension (sorting along dim 0 is ~10x slower on CPU).
        pa, _ = torch.sort((dirs.T @ da.T).contiguous(), dim=1)
        pb, _ = torch.sort((dirs.T @ db.T).contiguous(), dim=1)
        out.append((pa - pb).abs().mean().item() * 1e3)
    return SWDResult(out, sum(out) / len(out))
