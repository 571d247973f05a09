# SPDX-License-Identifier: GPL-3.0-or-later
"""Batched renderer of procedural heads: RGB (supersampled), exact labels, depth and mask per camera.

Rays come from :func:`ide3d_core.cameras.rays_from_labels` (pixel centres at (i + 0.5) / W). With
``antialias = a`` the RGB is the mean of an a x a grid of rays per pixel, i.e. the pixel-centre rays of
an (a R) x (a R) image, box-filtered; labels, depth and mask come from one extra ray through each pixel
centre, so every pixel carries exactly one label: the label of the primitive that ray meets first.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ide3d_core.cameras import LABEL_DIM, rays_from_labels

from .heads import HeadBatch
from .quadrics import gather_prim, intersect
from .textures import BACKGROUND_NOISE_SCALE, albedo, background, shade, value_noise

#: Elements (images x rays x 5 P) of one intersection block. Small on the CPU so temporaries stay in
#: cache (big fresh tensors cost page faults: ~7 ns per element against ~0.2 ns measured here); large
#: on a GPU (whole images, ~1 GiB per float32 temporary) so a batch runs in few kernel launches.
_BLOCK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 28}


@dataclass(frozen=True)
class ProceduralRender:
    """Rendered views, one per (head, camera) pair.

    Attributes:
        image: (B, 3, R, R) float in [-1, 1].
        labels: (B, R, R) int64 class ids 0..18 (ide3d_core.labels), exact.
        depth: (B, 1, R, R) distance along the unit pixel-centre ray; 0 on the background.
        mask: (B, 1, R, R) float 1 on the head, 0 on the background.
        cameras: (B, 25) packed camera labels (ide3d_core.cameras).
    """

    image: torch.Tensor
    labels: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    cameras: torch.Tensor


def _shade_rays(heads: HeadBatch, origin: torch.Tensor, dirs: torch.Tensor, hits) -> torch.Tensor:
    """(B, N, 3) RGB in [0, 1] of rays whose hits are known."""
    dt = dirs.dtype
    t = torch.where(hits.hit, hits.t, torch.zeros_like(hits.t))
    x = origin[:, None, :] + t[..., None] * dirs
    prim = hits.prim
    centre = gather_prim(heads.centre, prim).to(dt)
    rot = gather_prim(heads.rot, prim).to(dt)
    xm = (rot * (x - centre)[..., None, :]).sum(-1)
    xu = xm * gather_prim(heads.inv_radii, prim).to(dt)
    sym = heads.symmetric[:, None, None]
    fold = lambda v: torch.where(sym, torch.cat([v[..., :1].abs(), v[..., 1:]], -1), v)  # noqa: E731
    d_tex = fold(dirs)
    p_tex = torch.where(hits.hit[..., None], fold(x), d_tex * BACKGROUND_NOISE_SCALE)
    n_mid, n_fine = value_noise(p_tex * 45.0), value_noise(p_tex * 170.0 + 17.0)
    material = heads.material[prim]
    col = albedo(material, p_tex, xm, xu, gather_prim(heads.colour1, prim).to(dt),
                 gather_prim(heads.colour2, prim).to(dt), gather_prim(heads.param, prim).to(dt), n_mid, n_fine)
    lit = shade(col, hits.normal, heads.light.to(dt))
    bg = background(d_tex, heads.background.to(dt), n_mid, n_fine)
    return torch.where(hits.hit[..., None], lit, bg)


def _trace(heads: HeadBatch, origin: torch.Tensor, dirs: torch.Tensor):
    return intersect(origin, dirs, heads.centre, heads.rot, heads.inv_radii, heads.planes, heads.plane_slots,
                     heads.active, heads.n_plain)


def _rays_in_blocks(heads: HeadBatch, origin: torch.Tensor, dirs: torch.Tensor, block: int, shade_rgb: bool):
    """Trace (and optionally shade) rays in blocks of ``block`` rays; returns (t, prim, hit, rgb|None)."""
    ts, prims, hits, rgbs = [], [], [], []
    for s in range(0, dirs.shape[1], block):
        d = dirs[:, s:s + block]
        h = _trace(heads, origin, d)
        ts.append(h.t)
        prims.append(h.prim)
        hits.append(h.hit)
        if shade_rgb:
            rgbs.append(_shade_rays(heads, origin, d, h))
    return torch.cat(ts, 1), torch.cat(prims, 1), torch.cat(hits, 1), (torch.cat(rgbs, 1) if shade_rgb else None)


def _render_chunk(heads: HeadBatch, cams: torch.Tensor, resolution: int, antialias: int, block: int):
    b, r = cams.shape[0], resolution
    o_c, d_c = rays_from_labels(cams, r, r)
    origin = o_c[:, 0]
    t, prim, hit, rgb = _rays_in_blocks(heads, origin, d_c, block, antialias == 1)
    labels = heads.label[prim] * hit
    depth = torch.where(hit, t, torch.zeros_like(t))
    if antialias == 1:
        rgb = rgb.reshape(b, r, r, 3)
    else:
        ra = r * antialias
        _, d_a = rays_from_labels(cams, ra, ra)
        rgb = _rays_in_blocks(heads, origin, d_a, block, True)[3]
        rgb = rgb.reshape(b, ra, ra, 3).permute(0, 3, 1, 2)
        rgb = F.avg_pool2d(rgb, antialias).permute(0, 2, 3, 1)
    image = rgb.permute(0, 3, 1, 2) * 2.0 - 1.0
    return (image, labels.reshape(b, r, r), depth.reshape(b, 1, r, r), hit.reshape(b, 1, r, r).to(image.dtype))


def render_heads(heads: HeadBatch, cameras: torch.Tensor, resolution: int, antialias: int = 2) -> ProceduralRender:
    """Render head ``i`` with camera ``i``.

    Args:
        heads: :class:`HeadBatch` of B heads.
        cameras: (B, 25) packed labels (ide3d_core.cameras), any float dtype; moved to the heads' device.
        resolution: output size R (square images).
        antialias: rays per pixel side for the RGB (1 = pixel centre only).
        Camera centres must lie outside the head box [-0.5, 0.5]^3 (checked for CPU cameras; every
        orbit camera at radius 2.7 is far outside).
    Returns:
        :class:`ProceduralRender`. Work is split into blocks of images and rays to bound memory.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if antialias < 1:
        raise ValueError(f"antialias must be >= 1, got {antialias}")
    cams = torch.as_tensor(cameras).to(device=heads.device, dtype=torch.float32)
    if cams.ndim != 2 or cams.shape[1] != LABEL_DIM or cams.shape[0] != heads.batch_size:
        raise ValueError(f"cameras must be ({heads.batch_size}, {LABEL_DIM}), got {tuple(cams.shape)}")
    given = torch.as_tensor(cameras)
    if given.device.type == "cpu":  # not for GPU cameras: reading them would synchronise the device
        if bool((given.float()[:, [3, 7, 11]].abs() <= 0.5).all(-1).any()):
            raise ValueError("a camera centre lies inside the head box [-0.5, 0.5]^3; the renderer needs "
                             "cameras outside it")
    width = 5 * heads.centre.shape[1]
    if heads.device.type == "cuda":  # whole images per chunk: few, large kernel launches
        rays = (resolution * antialias) ** 2
        step = max(1, min(heads.batch_size, _BLOCK_ELEMENTS["cuda"] // (rays * width)))
        block = rays
    else:  # one or a few images per chunk, rays in cache-sized blocks
        step = max(1, min(heads.batch_size, _BLOCK_ELEMENTS["cpu"] // (4096 * width)))
        block = max(1024, _BLOCK_ELEMENTS["cpu"] // (step * width))
    parts = []
    for s in range(0, heads.batch_size, step):
        sel = slice(s, s + step)
        chunk = heads.index(sel)
        if chunk.device.type == "cpu":
            chunk = chunk.select_slots(chunk.active.any(0))
        parts.append(_render_chunk(chunk, cams[sel], resolution, antialias, block))
    image, labels, depth, mask = (torch.cat(x) for x in zip(*parts))
    return ProceduralRender(image=image, labels=labels, depth=depth, mask=mask, cameras=cams)
