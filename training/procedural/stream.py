# SPDX-License-Identifier: GPL-3.0-or-later
"""Cameras for procedural heads and the on-the-fly training stream (no disk)."""
from __future__ import annotations

import numpy as np
import torch

from ide3d_core.cameras import CANONICAL_PIVOT, PoseDistribution, intrinsics

from .anatomy import sample_heads
from .render import ProceduralRender, render_heads


def orbit_labels(angles: np.ndarray, radius: float, focal: float,
                 pivot: tuple[float, float, float] = CANONICAL_PIVOT) -> np.ndarray:
    """(n, 2) yaw/pitch in radians -> (n, 25) float32 labels, vectorised.

    Identical (to float rounding) to ``[orbit_camera(y, p, radius, pivot, focal).label() ...]`` of
    ide3d_core.cameras, which stays the definition (tests/test_procedural_render.py compares the two);
    the loop over ``Camera`` objects costs ~0.1 ms per camera, too slow for thousands of images a second.
    """
    yaw, pitch = angles[:, 0].astype(np.float64), angles[:, 1].astype(np.float64)
    eye = radius * np.stack([np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)], 1)
    fwd = np.asarray(pivot, dtype=np.float64)[None] - eye
    fwd /= np.linalg.norm(fwd, axis=1, keepdims=True)
    right = np.cross(fwd, np.array([0.0, 1.0, 0.0])[None])
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(fwd, right)
    c2w = np.tile(np.eye(4), (len(angles), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, down, fwd, eye
    k = intrinsics(focal)
    # same layout as ide3d_core.cameras.pack_label: 16 row-major cam2world, then 9 row-major K
    return np.concatenate([c2w.reshape(-1, 16), np.broadcast_to(k.reshape(1, 9), (len(c2w), 9))],
                          1).astype(np.float32)


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
