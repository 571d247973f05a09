# SPDX-License-Identifier: GPL-3.0-or-later
"""All download-free metrics of a generator, and the same numbers for real-vs-real data (the floor).

* SWD (:mod:`.swd`): generated vs. real images at the generator's output resolution.
* Semantic consistency: mIoU between the generator's own semantic map and :class:`training.segnet.SegNet`
  applied to its RGB (for real data: the SegNet vs. the ground-truth labels, its accuracy ceiling).
* Multi-view consistency (:mod:`.multiview`): each head rendered at yaw -15 and +15 degrees, the first
  view reprojected into the second with its depth (depth and opacity upsampled bilinearly to the output
  resolution, so super-resolution inconsistencies count). For real procedural data: the heads'
  exact renderings.
* Label frequency: total-variation distance between the class histograms of generated and real maps
  (real vs. real: two disjoint real sets).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.cameras import orbit_camera
from training.data import DataSource
from training.metrics.multiview import view_consistency
from training.metrics.semantic import frequency_distance, label_frequency, mean_iou
from training.metrics.swd import sliced_wasserstein

YAWS_DEG = (-15.0, 15.0)


@dataclass
class MetricsReport:
    """swd: mean SWD x 1e3 (levels finest first); semantic_miou; multiview_error (mean abs colour
    difference, [0, 1] units), multiview_psnr (dB), multiview_coverage; label_frequency_tv (0..1)."""

    num_images: int
    swd: float
    swd_levels: list[float]
    semantic_miou: Optional[float]
    multiview_error: Optional[float]
    multiview_psnr: Optional[float]
    multiview_coverage: Optional[float]
    label_frequency_tv: float

    def to_dict(self) -> dict:
        return asdict(self)


def _real(source: DataSource, n: int, batch: int, seed_rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for i in range(math.ceil(n / batch)):
        b = source.batch(i, seed_rank, min(batch, n - i * batch))
        images.append(b.image.float().cpu())
        labels.append(b.labels.cpu())
    return torch.cat(images), torch.cat(labels)


def _pair_cameras(b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ca, cb = (torch.as_tensor(orbit_camera(math.radians(y)).label(), device=device).expand(b, 25).contiguous()
              for y in YAWS_DEG)
    return ca, cb


def _multiview(pairs) -> tuple[float, float, float]:
    res = [view_consistency(*p) for p in pairs]
    res = [r for r in res if r.coverage > 0]
    if not res:
        return float("nan"), float("nan"), 0.0
    return (float(np.mean([r.error for r in res])), float(np.mean([r.psnr for r in res])),
            float(np.mean([r.coverage for r in res])))


def _segnet_labels(segnet: nn.Module, images: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    return torch.cat([segnet(images[i:i + batch].to(device)).argmax(1).cpu() for i in range(0, len(images), batch)])


@torch.no_grad()
def evaluate_generator(G: nn.Module, source: DataSource, n: int, batch: int, seed: int,
                       device: torch.device, segnet: Optional[nn.Module] = None,
                       multiview_heads: int = 16, truncation_psi: float = 1.0,
                       front_conditioning: bool = False) -> MetricsReport:
    """Metrics of ``G`` against ``source`` on ``n`` images (cameras drawn from the data's poses).

    The mapping is conditioned on each image's camera (EG3D's evaluation), or with
    ``front_conditioning`` on the canonical front camera (how every inference path of the project
    conditions, and how the distilled bundled model was trained)."""
    real_img, real_lab = _real(source, n, batch, seed_rank=10_000 + seed)
    gen = torch.Generator().manual_seed(seed)
    fake_img, fake_lab = [], []
    for i in range(math.ceil(n / batch)):
        b = min(batch, n - i * batch)
        c = source.batch(i, 20_000 + seed, b).cameras.to(device)
        z = torch.randn(b, G.z_dim, generator=gen).to(device)
        ws = G.mapping(z, G.canonical_labels(b).to(device) if front_conditioning else c, truncation_psi=truncation_psi)
        out = G.render(G.planes(ws), c, ws)
        fake_img.append(out.image.float().clamp(-1, 1).cpu())
        fake_lab.append(out.semantic.argmax(1).cpu())
    fake_img, fake_lab = torch.cat(fake_img), torch.cat(fake_lab)
    swd = sliced_wasserstein(real_img, fake_img, torch.Generator().manual_seed(seed))
    miou = None
    if segnet is not None:
        miou = mean_iou(_segnet_labels(segnet, fake_img, batch, device), fake_lab)
    pairs = []
    for i in range(0, multiview_heads, batch):
        b = min(batch, multiview_heads - i)
        z = torch.randn(b, G.z_dim, generator=gen).to(device)
        ca, cb = _pair_cameras(b, device)
        ws = G.mapping(z, G.canonical_labels(b).to(device) if front_conditioning else ca, truncation_psi=truncation_psi)
        planes = G.planes(ws)
        ra, rb = G.render(planes, ca, ws), G.render(planes, cb, ws)
        size = ra.image.shape[-2:]
        up = lambda t: F.interpolate(t.float(), size=size, mode="bilinear", align_corners=False)  # noqa: E731
        for k in range(b):
            pairs.append((ra.image[k], up(ra.depth)[k], up(ra.opacity)[k], ca[k],
                          rb.image[k], up(rb.depth)[k], up(rb.opacity)[k], cb[k]))
    mv = _multiview(pairs) if pairs else (None, None, None)
    tv = frequency_distance(label_frequency(real_lab), label_frequency(fake_lab))
    return MetricsReport(n, swd.mean, swd.levels, miou, *mv, tv)


@torch.no_grad()
def evaluate_real(source: DataSource, n: int, batch: int, seed: int, device: torch.device,
                  segnet: Optional[nn.Module] = None, multiview_heads: int = 16) -> MetricsReport:
    """The same metrics for two disjoint real sets: the values a perfect generator would reach."""
    a_img, a_lab = _real(source, n, batch, seed_rank=10_000 + seed)
    b_img, b_lab = _real(source, n, batch, seed_rank=30_000 + seed)
    swd = sliced_wasserstein(a_img, b_img, torch.Generator().manual_seed(seed))
    miou = mean_iou(_segnet_labels(segnet, b_img, batch, device), b_lab) if segnet is not None else None
    mv = (None, None, None)
    if multiview_heads > 0 and hasattr(source, "poses"):  # procedural heads: render exact view pairs
        from training.procedural import render_heads, sample_heads

        heads = sample_heads(multiview_heads, torch.Generator().manual_seed(seed), source.device)
        ca, cb = _pair_cameras(multiview_heads, source.device)
        ra = render_heads(heads, ca, source.resolution)
        rb = render_heads(heads, cb, source.resolution)
        mv = _multiview([(ra.image[k], ra.depth[k], ra.mask[k], ca[k], rb.image[k], rb.depth[k], rb.mask[k], cb[k])
                         for k in range(multiview_heads)])
    tv = frequency_distance(label_frequency(a_lab), label_frequency(b_lab))
    return MetricsReport(n, swd.mean, swd.levels, miou, *mv, tv)
