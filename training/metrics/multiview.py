# SPDX-License-Identifier: GPL-3.0-or-later
"""Multi-view consistency: reproject one rendering into another view with its depth and compare.

For every foreground pixel of view A, the 3D point ``origin + depth * direction`` (rays through pixel
centres, :func:`ide3d_core.cameras.rays_from_labels`; depth is distance along the unit ray) is
projected into view B (:meth:`ide3d_core.cameras.Camera.project`). Where B sees that same point -- it
lands inside B's image, on B's foreground, and B's depth there agrees with the point's distance
from B's camera within ``depth_tolerance`` (so occluded points are skipped) -- A's colour is compared
with B's colour sampled bilinearly at the projection. A perfectly 3D-consistent renderer scores 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ide3d_core.cameras import Camera, rays_from_labels


@dataclass
class ConsistencyResult:
    """error: mean absolute colour difference in [0, 1] units over the compared pixels;
    psnr: dB over the same pixels; coverage: compared pixels / foreground pixels of view A."""

    error: float
    psnr: float
    coverage: float


def _sample(image: torch.Tensor, uv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """image [C, H, W], uv [N, 2] pixel coordinates (centres at +0.5) -> [N, C] bilinear samples."""
    h, w = size
    grid = torch.stack([uv[:, 0] / w * 2 - 1, uv[:, 1] / h * 2 - 1], dim=-1).view(1, 1, -1, 2)
    return F.grid_sample(image[None].float(), grid.float(), mode="bilinear", align_corners=False)[0, :, 0].T


@torch.no_grad()
def view_consistency(image_a: torch.Tensor, depth_a: torch.Tensor, mask_a: torch.Tensor, camera_a: torch.Tensor,
                     image_b: torch.Tensor, depth_b: torch.Tensor, mask_b: torch.Tensor, camera_b: torch.Tensor,
                     depth_tolerance: float = 0.02) -> ConsistencyResult:
    """Compare view B with view A reprojected through A's depth (one pair, CPU or any device).

    Args:
        image_*: [3, H, W] in [-1, 1]; depth_*: [1, H, W] distance along the ray (model units);
        mask_*: [1, H, W] foreground (> 0.5); camera_*: [25] packed labels.
        depth_tolerance: model units (0.02 = 1 cm) for the visibility test.
    """
    _, h, w = image_a.shape
    o, d = rays_from_labels(camera_a.reshape(1, 25).double().cpu(), h, w)
    pts = (o[0] + d[0] * depth_a.reshape(-1, 1).double().cpu()).numpy()
    fg = mask_a.reshape(-1).cpu().numpy() > 0.5
    cam_b = Camera.from_label(camera_b.cpu().numpy())
    uv, z = cam_b.project(pts, w, h)
    dist_b = np.linalg.norm(pts - cam_b.position[None], axis=1)
    inside = fg & (z > 0) & (uv[:, 0] >= 0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= 0.5) & (uv[:, 1] <= h - 0.5)
    uv_t = torch.from_numpy(uv[inside])
    seen_depth = _sample(depth_b.cpu(), uv_t, (h, w))[:, 0].double().numpy()
    seen_mask = _sample(mask_b.cpu(), uv_t, (h, w))[:, 0].numpy()
    visible = (np.abs(seen_depth - dist_b[inside]) < depth_tolerance) & (seen_mask > 0.99)
    if not visible.any():
        return ConsistencyResult(float("nan"), float("nan"), 0.0)
    col_b = _sample(image_b.cpu(), uv_t[torch.from_numpy(visible)], (h, w))
    col_a = image_a.reshape(3, -1).T.cpu().float()[torch.from_numpy(np.flatnonzero(inside)[visible])]
    diff = (col_a - col_b) / 2.0  # [-1, 1] -> [0, 1] units
    mse = float(diff.square().mean())
    return ConsistencyResult(float(diff.abs().mean()), float(10 * np.log10(1.0 / max(mse, 1e-12))),
                             float(visible.sum() / max(fg.sum(), 1)))
