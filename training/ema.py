# SPDX-License-Identifier: GPL-3.0-or-later
"""Exponential moving average of the generator's weights (the model that is shipped and evaluated).

The decay is set by a half-life in thousands of images (StyleGAN2/EG3D: 10 kimg at batch 32), with a
ramp-up that shortens the half-life to ``rampup * images seen`` early on so the average is not
dominated by the random initialisation.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch_size: int, half_life_kimg: float, images_seen: int,
             rampup: float | None = 0.05) -> float:
    """Per-step decay ``beta`` so that weights older than the half-life count half.

    Args:
        batch_size: images per step (all processes together).
        half_life_kimg: half-life in thousands of images.
        images_seen: images seen before this step (for the ramp-up).
        rampup: if given, the half-life is at most ``rampup * images_seen`` images.
    """
    half_life = half_life_kimg * 1000.0
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` in eval mode."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema = beta * ema + (1 - beta) * model`` for parameters; buffers are copied (e.g. ``w_avg``)."""
    p_ema, p = list(ema.parameters()), [q.detach() for q in model.parameters()]
    if p_ema:
        torch._foreach_lerp_(p_ema, p, 1.0 - beta)  # one fused launch per dtype/device on GPU
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b.detach())
