# SPDX-License-Identifier: GPL-3.0-or-later
"""Losses, regularisers and schedules of GAN training (pure functions; the loop owns the order).

Values follow the IDE-3D supplement where it gives them (R1 gammas 2 for RGB and 200 for semantics,
learning rates, pose-conditioning swap with a random pose, blur initialisation, style mixing) and
EG3D otherwise (lazy R1 every 16 D steps, density regularisation every 4 G steps, blur fade, GPC fade).
Schedules take the number of images seen (``kimg`` = thousands of images) so they do not depend on
the batch size or the number of processes.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# Adversarial losses
# ----------------------------------------------------------------------------------------------

def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of the generator: mean softplus(-D(G(z))). logits [B, 1]."""
    return F.softplus(-fake_logits.float()).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic loss of the discriminator: mean softplus(D(fake)) + mean softplus(-D(real))."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``|| d sum(logits) / d inputs ||^2`` (Mescheder et al. 2018).

    ``inputs`` must require grad and be what produced ``logits``; the graph is kept so the penalty can
    be back-propagated into the discriminator. Multiply by ``gamma / 2`` (and the lazy interval).
    """
    (grad,) = torch.autograd.grad(logits.float().sum(), inputs, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------------------------
# Density regularisation
# ----------------------------------------------------------------------------------------------

def density_regularization(query_sigma: Callable[[torch.Tensor], torch.Tensor], batch: int,
                           num_points: int, perturbation: float, generator: torch.Generator,
                           device: torch.device, box: float = 0.5) -> torch.Tensor:
    """Mean L1 difference between the densities of random points and of slightly moved copies.

    Implements IDE-3D's density regularisation (nearby points get similar density), EG3D's ``l1``
    variant: ``num_points`` points uniform in the head box ``[-box, box]^3`` (model units), each paired
    with a copy moved by isotropic Gaussian noise of standard deviation ``perturbation`` (model units).

    Args:
        query_sigma: points [B, 2N, 3] -> densities [B, 2N, 1] (e.g. ``lambda p: G.query(planes, p).sigma``).
    Returns:
        scalar tensor (to be weighted by the caller).
    """
    p = (torch.rand(batch, num_points, 3, generator=generator, device=device) * 2.0 - 1.0) * box
    q = p + torch.randn(p.shape, generator=generator, device=device) * perturbation
    sigma = query_sigma(torch.cat([p, q], dim=1)).float()
    return (sigma[:, :num_points] - sigma[:, num_points:]).abs().mean()


# ----------------------------------------------------------------------------------------------
# Generator pose conditioning and style mixing
# ----------------------------------------------------------------------------------------------

def swap_probability(kimg: float, final_prob: float, fade_kimg: float) -> float:
    """Probability of replacing the generator's conditioning pose (EG3D's GPC regulariser).

    Starts at 1 (the mapping network never sees the rendering camera, so it cannot tie identity to
    pose early on) and fades linearly to ``final_prob`` over ``fade_kimg``."""
    if fade_kimg <= 0:
        return final_prob
    alpha = min(kimg / fade_kimg, 1.0)
    return (1.0 - alpha) + alpha * final_prob


def swap_conditioning(c: torch.Tensor, random_c: torch.Tensor, prob: float,
                      generator: torch.Generator) -> torch.Tensor:
    """Per sample, with probability ``prob`` use ``random_c`` (a random pose from the pose prior, as in
    IDE-3D) instead of ``c`` as the mapping network's conditioning. c, random_c: [B, 25]."""
    if prob <= 0.0:
        return c
    u = torch.rand(c.shape[0], 1, generator=generator, device=c.device)
    return torch.where(u < prob, random_c, c)


def mix_styles(ws: torch.Tensor, ws_other: torch.Tensor, prob: float,
               generator: torch.Generator) -> torch.Tensor:
    """Style mixing: per sample, with probability ``prob`` take ``ws_other[:, k:]`` from a cut-off
    ``k`` drawn uniformly in ``[1, num_ws)``. ws, ws_other: [B, num_ws, w_dim].

    With IDE-3D's split codes, cut-offs at or past ``num_shape_ws`` keep a head's geometry and
    semantics and give it another texture, which is what region-wise editing needs."""
    if prob <= 0.0:
        return ws
    b, n = ws.shape[:2]
    cut = torch.randint(1, n, (b, 1), generator=generator, device=ws.device)
    use = torch.rand(b, 1, generator=generator, device=ws.device) < prob
    cut = torch.where(use, cut, torch.full_like(cut, n))
    take_other = torch.arange(n, device=ws.device)[None, :] >= cut  # [B, num_ws]
    return torch.where(take_other[..., None], ws_other, ws)


# ----------------------------------------------------------------------------------------------
# Blurred discriminator inputs
# ----------------------------------------------------------------------------------------------

def blur_sigma(kimg: float, sigma0: float, fade_kimg: float) -> float:
    """Standard deviation (pixels) of the blur applied to every discriminator input: ``sigma0``
    faded linearly to 0 over ``fade_kimg`` (EG3D/StyleGAN3 'blur initialisation')."""
    if fade_kimg <= 0 or sigma0 <= 0:
        return 0.0
    return max(1.0 - kimg / fade_kimg, 0.0) * sigma0


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, C, H, W] with standard deviation ``sigma`` pixels.

    The kernel spans +-3 sigma (at most the image size) and is normalised to sum 1; borders are
    reflected so a constant image stays constant. ``sigma <= 0`` returns ``x`` unchanged."""
    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    radius = min(int(math.ceil(3.0 * sigma)), h - 1, w - 1)
    if radius < 1:
        return x
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# ----------------------------------------------------------------------------------------------
# Neural rendering resolution schedule
# ----------------------------------------------------------------------------------------------

def neural_resolution(kimg: float, initial: int, final: int | None, start_kimg: float,
                      fade_kimg: float, multiple: int = 16) -> int:
    """Neural rendering resolution at ``kimg``: ``initial`` until ``start_kimg``, then linearly raised
    to ``final`` over ``fade_kimg`` (EG3D's 64 -> 128 stage), rounded down to a multiple of
    ``multiple`` pixels so the super-resolution network always sees sizes it was built for."""
    if final is None or final == initial:
        return initial
    if fade_kimg <= 0:
        alpha = 1.0 if kimg >= start_kimg else 0.0
    else:
        alpha = float(np.clip((kimg - start_kimg) / fade_kimg, 0.0, 1.0))
    r = initial + alpha * (final - initial)
    r = int(r // multiple * multiple) if final > initial else int(math.ceil(r / multiple) * multiple)
    return int(np.clip(r, min(initial, final), max(initial, final)))
