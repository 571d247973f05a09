# SPDX-License-Identifier: GPL-3.0-or-later
"""Cameras for procedural heads and the on-the-fly training stream (no disk)."""
from __future__ import annotations

import numpy as np
import torch

from ide3d_core.cameras import PoseDistribution, orbit_labels

from .anatomy import sample_heads
from .render import ProceduralRender, render_heads


def sample_cameras(n: int, generator: torch.Generator, poses: PoseDistribution = PoseDistribution()) -> torch.Tensor:
    """(n, 25) float32 CPU labels drawn from ``poses`` with a numpy generator seeded from ``generator``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    angles = poses.sample_angles(np.random.default_rng(seed), n)
    return torch.from_numpy(orbit_labels(angles, poses.radius, poses.focal))


class ProceduralStream:
    """Endless iterator of freshly drawn heads and cameras, rendered on ``device``.

    ``next(stream)`` -> :class:`ProceduralRender` with ``batch_size`` views. All draws come from one
    CPU ``torch.Generator`` seeded with ``seed``, so a stream is reproducible on any device.
    """

    def __init__(self, batch_size: int, resolution: int, seed: int = 0, device: torch.device | str = "cpu",
                 poses: PoseDistribution = PoseDistribution(), antialias: int = 2, symmetric: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size, self.resolution, self.device = batch_size, resolution, torch.device(device)
        self.poses, self.antialias, self.symmetric = poses, antialias, symmetric
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> "ProceduralStream":
        return self

    def __next__(self) -> ProceduralRender:
        heads = sample_heads(self.batch_size, self.generator, self.device, symmetric=self.symmetric)
        cams = sample_cameras(self.batch_size, self.generator, self.poses).to(self.device)
        return render_heads(heads, cams, self.resolution, self.antialias)
