# SPDX-License-Identifier: GPL-3.0-or-later
"""Texture baking: project renders from several cameras onto the unwrapped surface.

For every covered texel the surface point ``p`` and normal ``n`` are interpolated from its triangle.
Each view contributes the colour of its render at the projection of ``p`` with weight

    w = opacity * max(0, cos(theta))^angle_power,   cos(theta) = n . (camera - p) / |camera - p|

when ``p`` is visible in it: the render's depth (distance along the ray) at that pixel agrees with
``|camera - p|`` within ``depth_tolerance`` (model units) and ``cos(theta) > min_cos``. The field
colour at ``p`` enters with the small weight ``fallback_weight``, so it decides alone only where no
view sees the surface (the back of the head) and blends smoothly into projected colour elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ide3d_core.camera_torch import project_points
from ide3d_core.cameras import CANONICAL_FOCAL, Camera, orbit_camera
from ide3d_core.images import unit_to_uint8
from ide3d_core.mesh.cleanup import drop_degenerate
from ide3d_core.mesh.field import Field, Renderer, RenderedViews, query_chunked
from ide3d_core.mesh.types import HeadMesh
from ide3d_core.mesh.uv import dilate, rasterize_uv, unwrap
from ide3d_core.progress import CancelToken, ProgressFn, report


@dataclass(frozen=True)
class BakeConfig:
    """Texture-baking policy.

    Attributes:
        texture_size: texture edge in texels (1024 to 4096 for game assets; tests use less).
        yaws_degrees, pitches_degrees: the orbit cameras (every yaw at pitch 0, every pitch at yaw 0),
            at the canonical radius and pivot; the generator is trained on frontal-ish views, so
            views stop at +-75 degrees of yaw.
        focal: normalised focal length of the baking cameras.
        views_per_batch: cameras rendered per renderer call (bounds memory).
        depth_tolerance: visibility test tolerance (model units; 0.02 = 1 cm).
        angle_power: exponent of the view-angle weight.
        min_cos: views seeing the surface more grazingly than this are ignored.
        fallback_weight: weight of the field colour (see the module docstring).
        padding: texels of gutter around charts (filled by dilation).
        chunk: texels per field query / projection batch.
    """

    texture_size: int = 2048
    yaws_degrees: tuple[float, ...] = (-75.0, -50.0, -25.0, 0.0, 25.0, 50.0, 75.0)
    pitches_degrees: tuple[float, ...] = (-20.0, 20.0)
    focal: float = CANONICAL_FOCAL
    views_per_batch: int = 4
    depth_tolerance: float = 0.02
    angle_power: float = 2.0
    min_cos: float = 0.1
    fallback_weight: float = 0.02
    padding: int = 4
    chunk: int = 1 << 18

    def __post_init__(self) -> None:
        if not 64 <= self.texture_size <= 8192:
            raise ValueError(f"texture size must be in 64..8192, got {self.texture_size}")
        if self.depth_tolerance <= 0 or self.fallback_weight <= 0 or self.views_per_batch < 1:
            raise ValueError("depth_tolerance, fallback_weight and views_per_batch must be positive")

    def cameras(self) -> list[Camera]:
        cams = [orbit_camera(math.radians(y), 0.0, focal=self.focal) for y in self.yaws_degrees]
        cams += [orbit_camera(0.0, math.radians(p), focal=self.focal) for p in self.pitches_degrees
                 if p != 0.0 or 0.0 not in self.yaws_degrees]
        return cams


def _sample(image: torch.Tensor, uv_px: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Samples of image [C, H, W] at continuous pixel coordinates uv_px [K, 2] (pixel centres at +0.5,
    as :meth:`Camera.project` returns): [K, C]; zero outside the image."""
    _, h, w = image.shape
    g = torch.stack([uv_px[:, 0] * (2.0 / w) - 1.0, uv_px[:, 1] * (2.0 / h) - 1.0], dim=-1)
    out = F.grid_sample(image[None].float(), g[None, None].float(), mode=mode,
                        padding_mode="zeros", align_corners=False)
    return out[0, :, 0].T


def _project(cam: Camera, pts: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Model-world points [K, 3] -> continuous pixel coordinates [K, 2] (the cameras' torch projection,
    :func:`~ide3d_core.camera_torch.project_points`, in pixels)."""
    label = torch.as_tensor(cam.label(), dtype=pts.dtype, device=pts.device)[None]
    uv, _ = project_points(label, pts[None])
    return uv[0] * torch.tensor([width, height], dtype=pts.dtype, device=pts.device)


def accumulate_views(points: torch.Tensor, normals: torch.Tensor, cams: list[Camera],
                     views: RenderedViews, config: BakeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted colour sum [K, 3] and weight sum [K] of the renders of ``cams`` at surface points
    [K, 3] with unit normals [K, 3] (see the module docstring)."""
    acc = torch.zeros(points.shape[0], 3, dtype=torch.float32, device=points.device)
    wsum = torch.zeros(points.shape[0], dtype=torch.float32, device=points.device)
    _, _, h, w = views.rgb.shape
    _, _, hd, wd = views.depth.shape
    assert points.shape[-1] == 3 and normals.shape == points.shape and views.rgb.shape[0] == len(cams)
    for b, cam in enumerate(cams):
        eye = torch.as_tensor(cam.position, dtype=points.dtype, device=points.device)
        to_cam = eye - points
        dist = to_cam.norm(dim=-1)
        cos = (normals * to_cam).sum(-1) / dist.clamp(min=1e-9)
        rgb = _sample(views.rgb[b].to(points.device), _project(cam, points, w, h))
        # depth by nearest pixel: bilinear depth across a silhouette blends foreground and background
        # into values that can pass the test by accident
        px = _project(cam, points, wd, hd)
        depth = _sample(views.depth[b].to(points.device), px, "nearest")[:, 0]
        opacity = _sample(views.opacity[b].to(points.device), px)[:, 0]
        visible = ((depth - dist).abs() < config.depth_tolerance) & (cos > config.min_cos)
        wgt = torch.where(visible, opacity.clamp(0, 1) * cos.clamp(min=0) ** config.angle_power,
                          torch.zeros_like(cos))
        acc += wgt[:, None] * rgb.clamp(0, 1)
        wsum += wgt
    return acc, wsum


def bake_texture(mesh: HeadMesh, field: Field, renderer: Optional[Renderer],
                 config: BakeConfig = BakeConfig(), progress: Optional[ProgressFn] = None,
                 cancel: Optional[CancelToken] = None) -> HeadMesh:
    """UV-unwrap ``mesh`` and bake a ``config.texture_size`` texture (see the module docstring).

    With ``renderer=None`` the texture is the field colour alone. Returns the unwrapped mesh (vertices
    split along UV seams) with ``uv`` and ``texture`` set; labels and colours are carried over.
    """
    size = config.texture_size
    device = field.device
    cams = config.cameras() if renderer is not None else []
    steps = 3 + len(cams)
    report(progress, 0, steps, "unwrap", cancel)
    base = drop_degenerate(mesh)
    out, vmapping = unwrap(base, padding=config.padding, resolution=size)
    # normals of the connected surface: on the unwrapped mesh a seam vertex would average only its own
    # chart's faces, and a one-face chart of a near-degenerate face would take that face's arbitrary
    # normal, so views would be weighted or rejected by the wrong angle
    normals = base.vertex_normals().astype(np.float32)[vmapping]
    report(progress, 1, steps, "rasterise", cancel)
    cover = rasterize_uv(out.uv, out.faces, size)
    tri = torch.from_numpy(out.faces)[torch.from_numpy(cover.face)]  # [K, 3]
    w = torch.from_numpy(cover.bary)[:, :, None]  # [K, 3, 1]
    pts = (torch.from_numpy(out.vertices)[tri] * w).sum(1)
    nrm = (torch.from_numpy(normals)[tri] * w).sum(1)
    nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    del tri, w
    report(progress, 2, steps, "field colour", cancel)
    _, _, field_rgb = query_chunked(field, pts, config.chunk, want_semantic=False, cancel=cancel)
    if field_rgb is None:
        field_rgb = torch.full((pts.shape[0], 3), 0.5, device=device)
    acc = config.fallback_weight * field_rgb.float().clamp(0, 1)
    wsum = torch.full((pts.shape[0],), config.fallback_weight, device=device)
    pts, nrm = pts.to(device), nrm.to(device)
    done = 3
    for b0 in range(0, len(cams), config.views_per_batch):
        batch = cams[b0:b0 + config.views_per_batch]
        with torch.no_grad():
            views = renderer.render(np.stack([c.label() for c in batch]))
        for s in range(0, pts.shape[0], config.chunk):
            a, ws = accumulate_views(pts[s:s + config.chunk], nrm[s:s + config.chunk], batch, views, config)
            acc[s:s + config.chunk] += a
            wsum[s:s + config.chunk] += ws
        done += len(batch)
        report(progress, done, steps, "project views", cancel)
    colour = (acc / wsum[:, None]).cpu().numpy()
    image = np.zeros((size, size, 3), np.float32)
    mask = np.zeros((size, size), bool)
    image[cover.rows, cover.cols] = colour
    mask[cover.rows, cover.cols] = True
    image = dilate(image, mask, config.padding)
    texture = unit_to_uint8(image)
    return out.with_(texture=texture)
