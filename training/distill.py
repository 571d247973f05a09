# SPDX-License-Identifier: GPL-3.0-or-later
"""Supervised distillation: teach the generator "the procedural head of z" (``objective="distill"``).

Why: the procedural heads are the project's own data *generator*, so for every latent ``z`` the exact
head is known (:func:`training.procedural.heads_from_latent`: coordinate ``k`` of ``z`` drives the
``k``-th random draw, so ``z ~ N(0, I)`` is exactly the data distribution). A generator can then be
trained by plain regression instead of an adversarial game, which converges in thousands of heads
rather than millions of images: the only way to train the 6 M-parameter ``default`` model on two CPU
cores. The adversarial objective (:mod:`training.loop`) can continue from a distilled checkpoint.

One step, ``b`` heads, all conditioned on the canonical camera (no pose swap, no style mixing: both
would put variation into ``w`` that is unrelated to the head, or break the z -> head correspondence):

* **3D** (every step, all ``b`` heads; cheap: no rays). Points: uniform in the plane box, plus points
  near the surface (ground-truth hits of a 64 px procedural render from a random camera, jittered along
  the ray). Targets from the exact union field (:func:`training.procedural.mesh.head_field`): inside ->
  occupancy 1 (binary cross-entropy on the sample opacity ``1 - exp(-sigma * delta)``, ``delta`` = the
  renderer's mean sample spacing), the bounding primitive's class (cross-entropy, points inside or
  within ``SEMANTIC_BAND`` of the surface), and the rendered colour just behind each visible surface
  point (L1 on the first three colour features, which are the low-resolution RGB).
* **2D** (every ``distill_render_interval`` steps, the first ``distill_render_batch`` heads; this is
  what trains the super-resolution): render at the neural resolution from the random camera; L1 of the
  output (box-filtered to 128 px) against a 128 px procedural render, L1 of the raw RGB on the head,
  opacity against the mask (BCE), cross-entropy of both semantic maps against the exact labels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ide3d_core.cameras import rays_from_labels
from ide3d_core.networks.generator import TriPlanes
from training.data import random_cameras, step_rng

#: Points within this distance (model units) outside the surface still get a class target.
SEMANTIC_BAND = 0.01
#: Std of the along-ray jitter of near-surface points (model units; 0.02 = 1 cm).
SURFACE_JITTER = 0.02
#: Colour points lie up to this far behind the visible surface (model units).
COLOUR_DEPTH = 0.006
#: Resolution of the 2D image target (the output is box-filtered down to it).
TARGET_RESOLUTION = 128


def _bce(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(p.float().clamp(1e-5, 1 - 1e-5), target.float())


def _field_targets(heads, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, 3) points of B heads -> (value (B, N) > 0 inside, class id (B, N))."""
    from training.procedural.mesh import head_field

    values, labels = [], []
    for i in range(heads.batch_size):
        v, prim = head_field(heads.index(i), points[i].float())
        values.append(v)
        labels.append(heads.label.to(prim.device)[prim])
    return torch.stack(values), torch.stack(labels)


def _pick(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, M, C), idx (B, N) -> (B, N, C)."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


def distill_losses(G, cfg, step: int, rank: int, batch: int, device: torch.device,
                   poses) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The distillation loss of step ``step`` on process ``rank`` (``batch`` heads).

    Returns ``(loss, logs, ws)``; every random draw comes from ``(cfg.seed, step, rank)``."""
    from training.procedural import heads_from_latent, median_padded, render_heads

    rng = step_rng(cfg.seed, step, rank, stream=2)
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))  # CPU: same draws on any device
    z = torch.randn(batch, G.z_dim, generator=gen)
    heads = heads_from_latent(median_padded(z), device)
    cams = random_cameras(rng, batch, poses, device)
    nr = G.neural_resolution
    # Conditioning: always the canonical camera, as every inference path of the project conditions
    # (a pose-dependent conditioning would be variation of w unrelated to the head: noise to unlearn).
    ws = G.mapping(z.to(device), G.canonical_labels(batch).to(device))
    planes = G.planes(ws)

    # -- points and their exact targets --------------------------------------------------------
    with torch.no_grad():
        low = render_heads(heads, cams, nr, antialias=2)
        origins, dirs = rays_from_labels(cams.float(), nr, nr)            # (B, nr*nr, 3)
        mask = low.mask.reshape(batch, -1)
        depth = low.depth.reshape(batch, -1)
        n = cfg.distill_points
        half = G.config.box_size / 2
        uniform = (torch.rand(batch, n, 3, generator=gen) * 2 - 1).to(device) * half
        pix = torch.multinomial((mask + 1e-3).cpu(), n, replacement=True, generator=gen).to(device)
        t_far = G.config.ray_near + torch.rand(batch, n, generator=gen).to(device) * (
            G.config.ray_far - G.config.ray_near)
        t_hit = torch.where(_pick(mask[..., None], pix)[..., 0] > 0.5, torch.gather(depth, 1, pix), t_far)
        t_near = t_hit + torch.randn(batch, n, generator=gen).to(device) * SURFACE_JITTER
        near = _pick(origins, pix) + t_near[..., None] * _pick(dirs, pix)
        fg = mask > 0.5
        cpix = torch.multinomial((mask + 1e-6).cpu(), n // 2, replacement=True, generator=gen).to(device)
        c_ok = torch.gather(fg, 1, cpix).float()
        t_col = torch.gather(depth, 1, cpix) + torch.rand(batch, n // 2, generator=gen).to(device) * COLOUR_DEPTH
        colour_pts = _pick(origins, cpix) + t_col[..., None] * _pick(dirs, cpix)
        colour_tgt = _pick(low.image.reshape(batch, 3, -1).transpose(1, 2), cpix)
        geo_pts = torch.cat([uniform, near], 1)
        value, label = _field_targets(heads, geo_pts)
        occ = (value > 0).float()
        sem_w = (value > -SEMANTIC_BAND).float()

    f = G.query(planes, torch.cat([geo_pts, colour_pts], 1))
    m = geo_pts.shape[1]
    delta = (G.config.ray_far - G.config.ray_near) / (G.config.coarse_samples + G.config.fine_samples)
    alpha = 1 - torch.exp(-f.sigma[:, :m, 0].float() * delta)
    loss_density = _bce(alpha, occ)
    ce = F.cross_entropy(f.semantic[:, :m].float().reshape(-1, f.semantic.shape[-1]), label.reshape(-1),
                         reduction="none").reshape(label.shape)
    loss_semantic = (ce * sem_w).sum() / sem_w.sum().clamp_min(1)
    col_err = (f.features[:, m:, :3].float() - colour_tgt).abs().mean(-1)
    loss_colour = (col_err * c_ok).sum() / c_ok.sum().clamp_min(1)
    loss = (cfg.distill_weights[0] * loss_density + cfg.distill_weights[1] * loss_semantic
            + cfg.distill_weights[2] * loss_colour)
    logs = {"distill/density_bce": loss_density.detach(), "distill/semantic_ce": loss_semantic.detach(),
            "distill/colour_l1": loss_colour.detach(),
            "distill/occupancy_acc": ((alpha > 0.5).float() == occ).float().mean().detach()}

    # -- rendered images (trains the super-resolution) -------------------------------------------
    k = min(cfg.distill_render_batch, batch)
    if cfg.distill_render_interval > 0 and step % cfg.distill_render_interval == 0 and k > 0:
        sel = slice(0, k)
        res = min(TARGET_RESOLUTION, G.img_resolution)
        with torch.no_grad():
            hi = render_heads(heads.index(sel), cams[sel], res, antialias=2)
        dev_gen = torch.Generator(device=device).manual_seed(int(rng.integers(0, 2**62)))
        sub = TriPlanes(semantic=planes.semantic[sel], texture=planes.texture[sel])
        out = G.render(sub, cams[sel], ws[sel], generator=dev_gen)
        factor = out.image.shape[-1] // res
        img = F.avg_pool2d(out.image.float(), factor) if factor > 1 else out.image.float()
        loss_img = (img - hi.image).abs().mean()
        m_low = low.mask[sel]
        loss_raw = ((out.image_raw.float() - low.image[sel]).abs() * m_low).sum() / (3 * m_low.sum()).clamp_min(1)
        loss_opacity = _bce(out.opacity, m_low)
        lab_hi = F.interpolate(hi.labels[:, None].float(), size=out.semantic.shape[-1], mode="nearest")
        loss_sem_hi = F.cross_entropy(out.semantic.float(), lab_hi[:, 0].long())
        loss_sem_raw = F.cross_entropy(out.semantic_raw.float(), low.labels[sel].long())
        loss_2d = loss_img + 0.5 * loss_raw + loss_opacity + 0.5 * (loss_sem_hi + loss_sem_raw)
        loss = loss + cfg.distill_weights[3] * loss_2d
        logs.update({"distill/image_l1": loss_img.detach(), "distill/raw_l1": loss_raw.detach(),
                     "distill/opacity_bce": loss_opacity.detach(),
                     "distill/semantic_image_ce": loss_sem_hi.detach()})
    return loss, logs, ws
