# SPDX-License-Identifier: GPL-3.0-or-later
"""Fit a model's surface detail (:mod:`ide3d_core.networks.detail`) to procedural heads' exact renders.

Only the detail stage trains; the field, the super-resolution, the backdrop and the encoders are unchanged.
Training pairs are pixels: everything the detail reads at a pixel (surface point, super-resolved colour,
class probabilities, the matte) and the exact colour there. Two sources:

* ``"procedural"`` (:func:`procedural_pixels`): what a *perfect* 64 px field would give, from the
  procedural renderer alone: the exact 64 px render upsampled bicubically as the colour, the exact 64 px
  depth and hit mask as depth and opacity (the surface points then come from the same upsampling as a
  model's), the exact labels as the probabilities. Cheap (about 1 s a view on one core: 96 heads x 3 views
  in 6 minutes), so many heads: the hash grid sees the shared texture everywhere a head surface can be.
* ``"model"`` (:func:`model_pixels`): the model's own renders of a head (its codes and, after an
  inversion, its tuned weights) at views with exact truth: the detail learns to use blurred colours,
  soft labels and a depth that is a little off.

Pixels are kept where the model's (or the exact) matte is above 1e-3, and the loss is L1 (or L2) in the image
range on the final composited colour: ``base + matte^2 (a rgb + b)``, ``base`` the model's final image
without detail (the matte appears twice: the detail is gated by it, then composited over the backdrop by
it, :meth:`~ide3d_core.networks.generator.Generator.finish_render`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ide3d_core.networks.detail import SurfaceDetail, surface_points
from ide3d_core.progress import CancelToken, ProgressFn, report


@dataclass(frozen=True)
class DetailFitConfig:
    """Adam steps, pixels per step, learning rates of the hash tables and of the MLP, the loss ("l1": the
    median colour, sharper; "l2": the mean, which is what PSNR scores), seed."""

    steps: int = 3000
    pixels: int = 16384
    grid_lr: float = 1e-2
    mlp_lr: float = 2e-3
    loss: str = "l1"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.pixels < 1 or not self.grid_lr > 0 or not self.mlp_lr > 0:
            raise ValueError(f"invalid detail fit policy {self}")
        if self.loss not in ("l1", "l2"):
            raise ValueError(f"detail fit loss must be 'l1' or 'l2', got {self.loss!r}")


@dataclass(frozen=True)
class DetailPixels:
    """Flat training pixels: ``points [N, 3]`` model world, ``rgb [N, 3]`` the detail's input colour,
    ``base [N, 3]`` the final colour without detail, ``matte [N]``, ``probs [N, K]`` (float16),
    ``target [N, 3]`` exact colour; image range [-1, 1] throughout."""

    points: torch.Tensor
    rgb: torch.Tensor
    base: torch.Tensor
    matte: torch.Tensor
    probs: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return self.points.shape[0]

    def take(self, idx: torch.Tensor) -> "DetailPixels":
        return DetailPixels(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)))

    @staticmethod
    def cat(parts: list["DetailPixels"]) -> "DetailPixels":
        return DetailPixels(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(DetailPixels)))


def _flatten(points, rgb, base, matte, probs, target, keep) -> DetailPixels:
    """Image tensors ``[B, C, H, H]`` (points ``[B, H*H, 3]``, matte ``[B, H, H]``) -> the pixels of ``keep``."""
    def flat(x):
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    k = keep.reshape(-1)
    return DetailPixels(points.reshape(-1, 3)[k].float(), flat(rgb)[k].float(), flat(base)[k].float(),
                        matte.reshape(-1)[k].float(), flat(probs)[k].half(), flat(target)[k].float())


def procedural_pixels(heads, cameras: torch.Tensor, neural_resolution: int, resolution: int, num_classes: int,
                      ray_far: float) -> DetailPixels:
    """Pixels of a perfect ``neural_resolution`` field seen by ``cameras [B, 25]`` (module docstring)."""
    from training.procedural import render_heads

    hi = render_heads(heads, cameras, resolution)
    lo = render_heads(heads, cameras, neural_resolution)
    rgb = F.interpolate(lo.image, size=resolution, mode="bicubic", align_corners=False).clamp(-1, 1)
    far = torch.full((cameras.shape[0], 1, 1), ray_far)
    # exact hits: the expected depth of a fully opaque ray (background rays at far, as a model's)
    depth = torch.where(lo.mask > 0.5, lo.depth, far.view(-1, 1, 1, 1).expand_as(lo.depth))
    points = surface_points(depth, lo.mask, cameras, far, resolution)
    probs = F.one_hot(hi.labels, num_classes).permute(0, 3, 1, 2).float()
    matte = 1.0 - probs[:, 0]
    base = torch.where(matte[:, None] > 0.5, rgb, hi.image)
    return _flatten(points, rgb, base, matte, probs, hi.image, matte > 1e-3)


@torch.no_grad()
def model_pixels(generator, planes, ws: torch.Tensor, cameras: torch.Tensor, target: torch.Tensor,
                 target_labels: torch.Tensor) -> DetailPixels:
    """Pixels of ``generator``'s renders (its detail switched off) of ``planes``/``ws`` seen by ``cameras
    [B, 25]`` against the exact ``target [B, 3, H, H]`` (labels ``[B, H, H]``): kept where the model's matte
    or the exact head is."""
    from ide3d_core import fast_render
    from ide3d_core.networks.background import composite_background

    detail, backdrop = generator.detail, generator.background
    try:
        generator.detail, generator.background = None, None
        out = fast_render.render_quality(generator, planes, cameras, ws, "full")
    finally:
        generator.detail, generator.background = detail, backdrop
    rgb, semantic = out.image.float(), out.semantic.float()
    base = rgb
    if backdrop is not None:
        bd = backdrop.render(cameras, generator.background_code(ws), rgb.shape[-1])
        base = composite_background(rgb, semantic, bd)
    res = rgb.shape[-1]
    points = surface_points(out.depth, out.opacity, cameras, generator.far_bounds(cameras), res)
    probs = semantic.softmax(dim=1)
    matte = 1.0 - probs[:, 0]
    keep = (matte > 1e-3) | (target_labels > 0)
    return _flatten(points, rgb, base, matte, probs, target, keep)


def predict(detail: SurfaceDetail, pix: DetailPixels) -> torch.Tensor:
    """``[N, 3]`` the final colour of ``pix`` with ``detail``."""
    ab = detail.modulation(pix.points, pix.rgb, pix.probs.float())
    m = pix.matte[:, None]
    return pix.base + m * m * (pix.rgb * ab[:, :3] + ab[:, 3:])


def fit_detail(detail: SurfaceDetail, pixels: DetailPixels, cfg: DetailFitConfig = DetailFitConfig(),
               progress: ProgressFn | None = None, cancel: CancelToken | None = None,
               minutes: float | None = None) -> dict:
    """Train ``detail`` (in place) on ``pixels``; returns {steps, seconds, loss, base_loss} (the policy's
    loss, the last 50 steps' mean)."""
    opt = torch.optim.Adam([{"params": [detail.grid.tables], "lr": cfg.grid_lr},
                            {"params": [p for n, p in detail.named_parameters() if not n.startswith("grid.")],
                             "lr": cfg.mlp_lr}], betas=(0.9, 0.99), eps=1e-15)
    g = torch.Generator().manual_seed(cfg.seed)
    detail.train(True).requires_grad_(True)
    t0, losses, base_losses, step = time.time(), [], [], 0
    for step in range(cfg.steps):
        if minutes is not None and time.time() - t0 > 60.0 * minutes:
            break
        # cosine decay to 10 % over the run
        scale = 0.1 + 0.45 * (1.0 + math.cos(math.pi * step / max(1, cfg.steps)))
        for group, lr in zip(opt.param_groups, (cfg.grid_lr, cfg.mlp_lr)):
            group["lr"] = lr * scale
        batch = pixels.take(torch.randint(0, len(pixels), (cfg.pixels,), generator=g))
        err = predict(detail, batch) - batch.target
        loss = err.abs().mean() if cfg.loss == "l1" else err.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        base_err = batch.base - batch.target
        base_losses.append(float(base_err.abs().mean() if cfg.loss == "l1" else base_err.square().mean()))
        if step % 100 == 0 or step == cfg.steps - 1:
            report(progress, step + 1, cfg.steps, f"{cfg.loss.upper()} {sum(losses[-50:]) / len(losses[-50:]):.4f} "
                   f"(without detail {sum(base_losses[-50:]) / len(base_losses[-50:]):.4f})", cancel)
    detail.train(False).requires_grad_(False)
    n = min(50, len(losses))
    return {"steps": len(losses), "seconds": round(time.time() - t0, 1),
            "loss": sum(losses[-n:]) / max(1, n), "base_loss": sum(base_losses[-n:]) / max(1, n)}


#: Detail stage of a model that has none (``ide3d train-detail``'s defaults): 10 levels from 16 to 1024
#: cells across the box (the procedural hair strands repeat about 260 times across it), 2^17 rows of 2
#: numbers a level (5.2 MB in float16), a 64-wide MLP.
DEFAULT_DETAIL = {"detail_levels": 10, "detail_min_res": 16, "detail_max_res": 1024, "detail_log2_table": 17,
                  "detail_features": 2, "detail_hidden": 64}
#: Seed of the procedural heads the detail is fitted on (a training stream: never a held-out evaluation's).
DETAIL_HEAD_SEED = 20_261_204


def generator_with_detail(G, **fields):
    """``G`` itself when it has a detail stage, else a new generator with ``G``'s weights and a fresh one
    (:data:`DEFAULT_DETAIL`, overridden by ``fields``)."""
    from ide3d_core.networks.generator import Generator

    if G.detail is not None and not fields:
        return G
    cfg = dataclasses.replace(G.config, **{**DEFAULT_DETAIL, **fields})
    new = Generator(cfg).to(next(G.parameters()).device)
    own = {k: v for k, v in G.state_dict().items() if not k.startswith("detail.")}
    missing, unexpected = new.load_state_dict(own, strict=False)
    if unexpected or any(not k.startswith("detail.") for k in missing):
        raise ValueError(f"weights do not carry over: missing {missing}, unexpected {unexpected}")
    return new.eval()


def head_views(n: int, views: int, seed: int, max_yaw: float = 50.0, max_pitch: float = 12.0):
    """``(heads, cameras [n * views, 25], head index [n * views])``: ``n`` procedural heads, each seen from
    ``views`` orbit cameras at uniform yaw in +-``max_yaw`` and pitch in +-``max_pitch`` degrees."""
    from ide3d_core.cameras import orbit_camera
    from training.procedural import sample_heads

    g = torch.Generator().manual_seed(seed)
    heads = sample_heads(n, g)
    yaw = (torch.rand(n * views, generator=g) * 2 - 1) * max_yaw
    pitch = (torch.rand(n * views, generator=g) * 2 - 1) * max_pitch
    cams = torch.stack([torch.as_tensor(orbit_camera(math.radians(float(y)), math.radians(float(p))).label())
                        for y, p in zip(yaw, pitch)]).float()
    return heads, cams, torch.arange(n).repeat_interleave(views)


def inverted_pixels(G, encoder, n: int, views: int, seed: int, progress: ProgressFn | None = None,
                    cancel: CancelToken | None = None) -> DetailPixels:
    """Model pixels of ``n`` procedural heads, each inverted (``ide3d invert``'s default policy, exact mask
    and camera) from the first of its ``views + 1`` views and rendered at the other ``views``: the detail
    then learns on what an inverted portrait's novel views give it."""
    from ide3d_core.inversion import invert
    from training.procedural import render_heads

    heads, cams, idx = head_views(n, views + 1, seed)
    parts = []
    for i in range(n):
        report(progress, i, n, f"inverting head {i + 1} of {n}", cancel)
        sel = idx == i
        c = cams[sel]
        truth = render_heads(heads.index(torch.tensor([i] * int(sel.sum()))), c, G.img_resolution)
        res = invert(G, truth.image[:1], mask=truth.labels[0].numpy().astype("uint8"), camera=c[0].numpy(),
                     encoder=encoder)
        tuned = res.generator
        with torch.no_grad():
            planes = tuned.planes(res.ws)
            n_v = c.shape[0] - 1
            planes = type(planes)(planes.semantic.expand(n_v, -1, -1, -1, -1), planes.texture.expand(n_v, -1, -1, -1, -1))
            parts.append(model_pixels(tuned, planes, res.ws.expand(n_v, -1, -1), c[1:], truth.image[1:],
                                      truth.labels[1:]))
    return DetailPixels.cat(parts)


def fit_detail_folder(model, out, cfg: DetailFitConfig = DetailFitConfig(), heads: int = 48, views: int = 3,
                      inverted_heads: int = 0, progress: ProgressFn | None = None,
                      cancel: CancelToken | None = None, minutes: float | None = None, **fields) -> dict:
    """Give the model folder ``model`` a surface detail stage fitted to procedural heads and write the model
    folder ``out`` (a copy with the new generator, float16, and ``detail_fit.json``). ``heads`` procedural
    heads of ``views`` views each give the perfect-field pixels; ``inverted_heads`` more heads inverted with
    the folder's standard encoder give model pixels (module docstring). Returns the fit's figures."""
    from pathlib import Path

    from ide3d_core.networks.io import load_generator
    from training.model_folder import write_model_copy

    model, out = Path(model), Path(out)
    G = generator_with_detail(load_generator(model), **fields)
    parts = []
    if heads:
        hb, cams, idx = head_views(heads, views, DETAIL_HEAD_SEED)
        for s in range(0, cams.shape[0], 8):
            report(progress, s, cams.shape[0], "rendering procedural heads", cancel)
            sel = torch.arange(s, min(s + 8, cams.shape[0]))
            parts.append(procedural_pixels(hb.index(idx[sel]), cams[sel], G.neural_resolution, G.img_resolution,
                                           G.config.num_classes, G.config.ray_far))
    if inverted_heads:
        from ide3d_core.encoders import load_encoder

        encoder = load_encoder(model / "encoders" / "standard")
        parts.append(inverted_pixels(G, encoder, inverted_heads, views, DETAIL_HEAD_SEED + 1, progress, cancel))
    if not parts:
        raise ValueError("no training heads: give heads or inverted_heads")
    pixels = DetailPixels.cat(parts)
    stats = fit_detail(G.detail, pixels, cfg, progress, cancel, minutes)
    stats.update(heads=heads, views=views, inverted_heads=inverted_heads, pixels=len(pixels),
                 policy=dataclasses.asdict(cfg), detail={k: getattr(G.config, k) for k in DEFAULT_DETAIL})
    write_model_copy(model, out, G, "detail_fit.json", stats)
    return stats
