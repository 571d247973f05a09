# SPDX-License-Identifier: GPL-3.0-or-later
"""Photo stereo: a render's surface moved onto the depth where a portrait's photos agree (plane sweep).

Why. Photo projection (:mod:`ide3d_core.photo_projection`) carries each photo's pixels to a render through
the fitted surface. That surface is the model's fit, off by about 0.01 model units on held-out heads,
which at a 15-30 degree turn lands a photo's detail one or two output pixels off its place. With two or
more photos of the head there is independent evidence of the true depth: a surface point has (nearly) the
same colour in every photo that saw it (the light is fixed in the world), and a point off the surface
does not. Multi-view stereo has measured depth this way since plane sweeping (Collins 1996).

How, for the visible surface point ``x`` of each head pixel of a render, on its ray ``o + t d``:

1. candidates ``t + delta`` for ``steps`` offsets ``delta`` evenly in ``[-span, span]`` (model units along
   the ray);
2. each candidate projected into every photo; a photo counts if the point lands in its frame, on its
   usable (eroded head) pixels and not more than ``visibility_tolerance`` behind the fitted surface the
   photo's camera sees (farther back it was hidden);
3. the cost of a candidate: the variance of the counted photos' colours (sum over RGB), averaged over a
   ``window`` x ``window`` box of pixels (the cost-volume filter of block matching: one pixel's colour is
   too little evidence);
4. the candidate of least cost wins, for pixels that at least two photos see at every candidate; all other
   pixels keep the fitted surface (so one photo, or none, changes nothing).

The sweep runs on every ``stride``-th pixel of each row and column (the window counts those pixels) and
the offsets it finds are carried to the others bilinearly: the offset varies slowly across the image,
and a quarter of the pixels cost a quarter of the time.

Frames and units: cameras are 25-float labels (:mod:`ide3d_core.cameras`), points model world, images in
the image range ([-1, 1]). Measured in docs/photo_projection.md ("Photo stereo").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ide3d_core.camera_torch import project_points
from ide3d_core.cameras import rays_from_labels


@dataclass(frozen=True)
class StereoConfig:
    """The plane sweep (module docstring). ``steps`` 0 switches it off."""

    steps: int = 16
    span: float = 0.015
    window: int = 7
    visibility_tolerance: float = 0.06
    stride: int = 2

    def __post_init__(self) -> None:
        if not (self.steps == 0 or 2 <= self.steps <= 256):
            raise ValueError(f"stereo steps must be 0 (off) or in 2..256, got {self.steps}")
        if not 0.0 < self.span <= 0.5:
            raise ValueError(f"stereo span must be in (0, 0.5] model units, got {self.span}")
        if not (self.window >= 1 and self.window % 2 == 1 and self.window <= 63):
            raise ValueError(f"stereo window must be odd, 1..63 pixels, got {self.window}")
        if not self.visibility_tolerance > 0.0:
            raise ValueError(f"stereo visibility tolerance must be positive, got {self.visibility_tolerance}")
        if not 1 <= self.stride <= 8:
            raise ValueError(f"stereo stride must be in 1..8 pixels, got {self.stride}")


def _stacks(photos: Sequence[Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(camera [1, 25], [1, 5, H, W]: image (3), fitted depth (1) and usable mask (1), sampled together) of
    each photo."""
    return [(photo.camera.reshape(1, 25).float(),
             torch.cat([photo.image.float(), photo.depth.float(), photo.usable.float()], 1)) for photo in photos]


def photo_consistency(points: torch.Tensor, photos: Sequence[Any], visibility_tolerance: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """How well the photos agree on points.

    Args:
        points: (N, 3) model world. photos: :class:`~ide3d_core.photo_projection.ProjectedPhoto` each (its
            ``image``, ``depth``, ``usable`` and ``camera``).
    Returns:
        (variance (N,) of the colours of the photos that saw each point, summed over RGB (0 where fewer than
        two did), count (N,) of those photos).
    """
    return _consistency(points, _stacks(photos), visibility_tolerance)


def _consistency(points: torch.Tensor, stacks: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 visibility_tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`photo_consistency` of photos already stacked (:func:`_stacks`)."""
    n = points.shape[0]
    total = torch.zeros(n, 3)
    total_sq = torch.zeros(n)
    count = torch.zeros(n)
    for camera, stack in stacks:
        uv, z = project_points(camera, points[None].float())
        uv, z = uv[0], z[0]
        grid = (uv * 2.0 - 1.0).view(1, 1, -1, 2)
        s = F.grid_sample(stack, grid, mode="bilinear", align_corners=False, padding_mode="border")[0, :, 0].T
        seen = ((uv > 0.0).all(-1) & (uv < 1.0).all(-1) & (z > 0.0) & (s[:, 4] > 0.999)
                & (z < s[:, 3] + visibility_tolerance)).float()
        total += seen[:, None] * s[:, :3]
        total_sq += seen * s[:, :3].square().sum(-1)
        count += seen
    mean = total / count.clamp_min(1.0)[:, None]
    variance = (total_sq / count.clamp_min(1.0) - mean.square().sum(-1)).clamp_min(0.0)
    return torch.where(count >= 2, variance, torch.zeros_like(variance)), count


def refine_points(points: torch.Tensor, camera: torch.Tensor, head: torch.Tensor, photos: Sequence[Any],
                  config: StereoConfig = StereoConfig()) -> torch.Tensor:
    """A square render's surface points moved along their rays to where the photos agree (module docstring).

    Args:
        points: (H, W, 3) the render's visible surface points (model world), rows of pixels as
            :func:`~ide3d_core.cameras.rays_from_labels`. camera: (25,) the render's camera.
        head: (H, W) bool, the pixels to refine (the render's head). photos: as :func:`photo_consistency`.
    Returns:
        (H, W, 3) points; unchanged where fewer than two photos see every candidate, and all of them when
        ``config.steps`` is 0 or fewer than two photos are given.
    """
    h, w, _ = points.shape
    if config.steps == 0 or len(photos) < 2 or not bool(head.any()):
        return points
    origins, dirs = rays_from_labels(camera.reshape(1, 25).float(), h, w)
    o, d = origins[0].reshape(h, w, 3), dirs[0].reshape(h, w, 3)
    t_full = ((points.float() - o) * d).sum(-1)  # [H, W] distance along each ray
    st = config.stride
    t_grid, o_g, d_g, head_g = t_full[::st, ::st], o[::st, ::st], d[::st, ::st], head[::st, ::st]
    hs, ws = t_grid.shape
    shift = _sweep(o_g.reshape(-1, 3), d_g.reshape(-1, 3), t_grid.reshape(-1), head_g.reshape(-1), (hs, ws),
                   photos, config).reshape(1, 1, hs, ws)
    if st > 1:
        # carry the offsets to every pixel: sample the strided grid at each pixel's position in it
        ys = (torch.arange(h, dtype=torch.float32) / st + 0.5) / hs * 2.0 - 1.0
        xs = (torch.arange(w, dtype=torch.float32) / st + 0.5) / ws * 2.0 - 1.0
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]
        shift = F.grid_sample(shift, grid, mode="bilinear", align_corners=False, padding_mode="border")
    moved = (o + (t_full + shift[0, 0])[..., None] * d).to(points.dtype)
    return torch.where(head[..., None], moved, points)


def _sweep(o: torch.Tensor, d: torch.Tensor, t0: torch.Tensor, head: torch.Tensor, size: tuple[int, int],
           photos: Sequence[Any], config: StereoConfig) -> torch.Tensor:
    """Rays ``o + t d`` (N, 3) of an ``size`` = (h, w) pixel grid (N = h w), fitted distances ``t0`` (N,), the
    pixels to refine ``head`` (N,) -> offset along each ray (N,) (0 where not refined)."""
    h, w = size
    idx = head.nonzero()[:, 0]
    o, d, t0 = o[idx], d[idx], t0[idx]  # the rays to refine
    deltas = torch.linspace(-config.span, config.span, config.steps)
    stacks = _stacks(photos)  # once for every candidate depth
    cost = torch.zeros(config.steps, h * w)
    valid = torch.zeros(config.steps, h * w)
    for k, delta in enumerate(deltas):
        var, count = _consistency(o + (t0 + delta)[:, None] * d, stacks, config.visibility_tolerance)
        ok = (count >= 2).float()
        cost[k, idx] = var * ok
        valid[k, idx] = ok
    r = config.window // 2
    cost_s = F.avg_pool2d(cost.view(config.steps, 1, h, w), config.window, 1, r, count_include_pad=False)
    valid_s = F.avg_pool2d(valid.view(config.steps, 1, h, w), config.window, 1, r, count_include_pad=False)
    mean_cost = torch.where(valid_s > 0.5, cost_s / valid_s.clamp_min(1e-6), torch.full_like(cost_s, float("inf")))
    best = mean_cost.reshape(config.steps, h * w)[:, idx].argmin(0)
    sure = valid[:, idx].sum(0) == config.steps
    shift = torch.zeros(h * w)
    shift[idx] = torch.where(sure, deltas[best], torch.zeros_like(deltas[best]))
    return shift
