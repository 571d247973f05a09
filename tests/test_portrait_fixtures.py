# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared fixtures of the inversion/editing/portrait tests: a generator obeying the generator API contract.

``make_generator()`` returns the real ``tiny`` generator when ``ide3d_core.networks`` exists, else
:class:`StandInGenerator`, a small tri-plane generator written to the same contract (mapping with
``w_avg``, shape/texture code split, semantic and texture tri-planes on the planes xy, yz, xz of the box
[-0.5, 0.5]^3, a camera-independent field query, volume rendering between near 2.25 and far 3.3,
``texture_swap``). The tests of this file check the stand-in obeys the contract, so tests written
against it test the code under test, not the stand-in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.cameras import canonical_camera, orbit_camera, rays_from_labels

NUM_CLASSES = 19


@dataclass
class StandInTriPlanes:
    semantic: torch.Tensor  # [B,3,Cs,P,P]
    texture: torch.Tensor  # [B,3,Ct,P,P]


@dataclass
class StandInRender:
    image: torch.Tensor
    image_raw: torch.Tensor
    semantic: torch.Tensor
    semantic_raw: torch.Tensor
    depth: torch.Tensor
    opacity: torch.Tensor
    features_raw: torch.Tensor


@dataclass
class StandInField:
    sigma: torch.Tensor
    semantic: torch.Tensor
    features: torch.Tensor


@dataclass(frozen=True)
class StandInConfig:
    z_dim: int = 16
    w_dim: int = 16
    num_shape_ws: int = 3
    num_texture_ws: int = 3
    plane_resolution: int = 16
    semantic_channels: int = 6
    texture_channels: int = 6
    neural_resolution: int = 16
    img_resolution: int = 32
    samples_per_ray: int = 24


class _Mapping(nn.Module):
    def __init__(self, cfg: StandInConfig, num_ws: int) -> None:
        super().__init__()
        self.num_ws = num_ws
        self.net = nn.Sequential(nn.Linear(cfg.z_dim + 25, 32), nn.LeakyReLU(0.2), nn.Linear(32, cfg.w_dim))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        with torch.no_grad():
            g = torch.Generator().manual_seed(123)
            zs = torch.randn(256, cfg.z_dim, generator=g)
            c = torch.as_tensor(canonical_camera().label()).expand(256, 25)
            self.w_avg.copy_(self.net(torch.cat([zs, c], 1)).mean(0))

    def forward(self, z, c, truncation_psi=1.0, truncation_cutoff=None):
        w = self.net(torch.cat([z, c], 1))
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1.0:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws


class StandInGenerator(nn.Module):
    """A small generator obeying the generator API contract (see the module docstring)."""

    def __init__(self, cfg: StandInConfig = StandInConfig(), seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = cfg
        self.z_dim, self.w_dim, self.c_dim = cfg.z_dim, cfg.w_dim, 25
        self.num_shape_ws, self.num_texture_ws = cfg.num_shape_ws, cfg.num_texture_ws
        self.num_ws = cfg.num_shape_ws + cfg.num_texture_ws
        self.img_resolution, self.neural_resolution = cfg.img_resolution, cfg.neural_resolution
        p = cfg.plane_resolution
        self.mapping = _Mapping(cfg, self.num_ws)
        self.to_semantic = nn.Linear(cfg.num_shape_ws * cfg.w_dim, 3 * cfg.semantic_channels * p * p)
        self.to_texture = nn.Linear(cfg.num_texture_ws * cfg.w_dim, 3 * cfg.texture_channels * p * p)
        self.sigma_head = nn.Linear(cfg.semantic_channels, 1)
        self.semantic_head = nn.Linear(cfg.semantic_channels, NUM_CLASSES)
        self.feature_head = nn.Linear(cfg.texture_channels, 32)
        with torch.no_grad():
            self.semantic_head.bias[0] -= 1.0  # inside the head, background is rare
        # A blob prior so renders show a head-sized object.
        self.register_buffer("sigma_bias", torch.tensor(10.0))

    def codes_from_seeds(self, seeds, truncation_psi=1.0, c=None):
        z = torch.stack([torch.randn(self.z_dim, generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds])
        if c is None:
            c = torch.as_tensor(canonical_camera().label()).expand(len(seeds), 25)
        return self.mapping(z, c, truncation_psi=truncation_psi)

    def planes(self, ws):
        b, cfg, p = ws.shape[0], self.config, self.config.plane_resolution
        sem = self.to_semantic(ws[:, :self.num_shape_ws].flatten(1)).view(b, 3, cfg.semantic_channels, p, p)
        tex = self.to_texture(ws[:, self.num_shape_ws:].flatten(1)).view(b, 3, cfg.texture_channels, p, p)
        return StandInTriPlanes(sem, tex)

    @staticmethod
    def _sample(planes, points):
        # planes [B,3,C,P,P]; points [B,N,3] in [-0.5,0.5]^3; planes see (x,y), (y,z), (x,z); summed.
        b, _, c, p, _ = planes.shape
        q = points * 2.0
        coords = torch.stack([q[..., [0, 1]], q[..., [1, 2]], q[..., [0, 2]]], 1)  # [B,3,N,2]
        out = F.grid_sample(planes.reshape(b * 3, c, p, p), coords.reshape(b * 3, 1, -1, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.view(b, 3, c, -1).sum(1).transpose(1, 2)  # [B,N,C]

    def _field(self, planes, points, texture_swap=None):
        s = self._sample(planes.semantic, points)
        t = self._sample(planes.texture, points)
        r2 = (points ** 2).sum(-1, keepdim=True)
        sigma = F.softplus(self.sigma_head(s) + self.sigma_bias * (1.0 - 12.0 * r2))
        sem = 4.0 * self.semantic_head(s)
        if texture_swap is not None:
            other, ids = texture_swap
            t_other = self._sample(other, points)
            inside = torch.isin(sem.argmax(-1, keepdim=True), torch.as_tensor(ids, device=points.device))
            t = torch.where(inside, t_other, t)
        feat = self.feature_head(t)
        feat = torch.cat([torch.tanh(feat[..., :3]), feat[..., 3:]], -1)
        return StandInField(sigma, sem, feat)

    def query(self, planes, points):
        return self._field(planes, points)

    def render(self, planes, c, ws, neural_resolution=None, generator=None, texture_swap=None):
        h = neural_resolution or self.neural_resolution
        b, n = c.shape[0], self.config.samples_per_ray
        o, d = rays_from_labels(c, h, h)
        t = 2.25 + (torch.arange(n, dtype=c.dtype, device=c.device) + 0.5) * (1.05 / n)
        pts = o[:, :, None] + d[:, :, None] * t[None, None, :, None]  # [B,R,N,3]
        f = self._field(planes, pts.reshape(b, -1, 3), texture_swap)
        sigma = f.sigma.view(b, h * h, n)
        inside = (pts.abs() <= 0.5).all(-1).to(sigma.dtype)
        alpha = 1.0 - torch.exp(-sigma * inside * (1.05 / n))
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha[..., :-1] + 1e-10], -1), -1)
        w = alpha * trans  # [B,R,N]
        feats = (w[..., None] * f.features.view(b, h * h, n, -1)).sum(2)
        sem = (w[..., None] * f.semantic.view(b, h * h, n, -1)).sum(2)
        opacity = w.sum(-1, keepdim=True)
        depth = (w * t).sum(-1, keepdim=True) / opacity.clamp_min(1e-6)
        feats = feats + (1.0 - opacity) * torch.cat([-torch.ones_like(feats[..., :3]), torch.zeros_like(feats[..., 3:])], -1)
        bg = torch.zeros(NUM_CLASSES, dtype=sem.dtype, device=sem.device)
        bg[0] = 3.0
        sem = sem + (1.0 - opacity) * bg
        grid = lambda x: x.transpose(1, 2).reshape(b, -1, h, h)  # noqa: E731
        features_raw, semantic_raw = grid(feats), grid(sem)
        image_raw = features_raw[:, :3]
        size = self.img_resolution
        image = F.interpolate(image_raw, size=(size, size), mode="bilinear", align_corners=False)
        semantic = F.interpolate(semantic_raw, size=(size, size), mode="bilinear", align_corners=False)
        return StandInRender(image, image_raw, semantic, semantic_raw, grid(depth), grid(opacity), features_raw)

    def forward(self, ws, c, **kwargs):
        return self.render(self.planes(ws), c, ws, **kwargs)


def real_generator_available() -> bool:
    try:
        from ide3d_core.networks import CONFIGS, Generator  # noqa: F401
    except ImportError:
        return False
    return True


def make_generator(seed: int = 0) -> nn.Module:
    """The real ``tiny`` generator when it exists, else the stand-in (both in eval mode, float32)."""
    if real_generator_available():
        from ide3d_core.networks import CONFIGS, Generator

        torch.manual_seed(seed)
        g = Generator(CONFIGS["tiny"])
    else:
        g = StandInGenerator(seed=seed)
    return g.eval().requires_grad_(False)


def label(yaw_deg: float = 0.0, pitch_deg: float = 0.0, batch: int = 1) -> torch.Tensor:
    """[batch, 25] float32 packed label of an orbit camera."""
    cam = orbit_camera(math.radians(yaw_deg), math.radians(pitch_deg))
    return torch.as_tensor(cam.label()).expand(batch, 25).clone()


# ------------------------------------------------------------------------------------------------
# The stand-in obeys the contract (so tests that use it are meaningful)
# ------------------------------------------------------------------------------------------------

def test_stand_in_shapes_follow_the_contract():
    g = StandInGenerator()
    ws = g.codes_from_seeds([1, 2])
    assert ws.shape == (2, g.num_ws, g.w_dim)
    out = g(ws, label(batch=2))
    assert out.image.shape == (2, 3, g.img_resolution, g.img_resolution)
    assert out.semantic.shape == (2, NUM_CLASSES, g.img_resolution, g.img_resolution)
    assert out.features_raw.shape == (2, 32, g.neural_resolution, g.neural_resolution)
    assert float(out.image.min()) >= -1.0 and float(out.image.max()) <= 1.0


def test_stand_in_planes_see_the_documented_axes():
    # A point's field depends on plane 0 only through (x, y): moving along z with planes 1, 2 zeroed
    # leaves the field unchanged.
    g = StandInGenerator()
    planes = g.planes(g.codes_from_seeds([3]))
    planes.semantic[:, 1:] = 0
    planes.texture[:, 1:] = 0
    a = g.query(planes, torch.tensor([[[0.1, 0.2, -0.3]]]))
    b = g.query(planes, torch.tensor([[[0.1, 0.2, 0.25]]]))
    assert torch.allclose(a.semantic, b.semantic) and torch.allclose(a.features, b.features)


def test_stand_in_object_is_visible_from_the_canonical_camera():
    g = StandInGenerator().requires_grad_(False)
    out = g(g.codes_from_seeds([0]), label())
    h = g.neural_resolution
    assert float(out.opacity[0, 0, h // 2, h // 2]) > 0.5 and float(out.opacity[0, 0, 0, 0]) < 0.05
    assert np.isfinite(out.depth.numpy()).all()
