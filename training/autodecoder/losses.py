# SPDX-License-Identifier: GPL-3.0-or-later
"""Losses of the auto-decoder step (pure functions of the generator's outputs and the bank's targets).

Small parts get their due: every per-point and per-pixel term is weighted by
:func:`class_weights` (x ``small_part_weight`` on eyes, brows, mouth and lips), the bank's points are
class-balanced (:mod:`training.autodecoder.bank`) and images add a Laplacian-pyramid L1 (GLO's "Lap1"),
which weighs edges as much as flat regions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ide3d_core.labels import ID, NUM_CLASSES

#: The classes an artist looks at first and that averaging erases first.
SMALL_PARTS = tuple(ID[n] for n in ("l_eye", "r_eye", "l_brow", "r_brow", "mouth", "u_lip", "l_lip"))


def class_weights(small_part_weight: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """[19] per-class loss weights: ``small_part_weight`` on :data:`SMALL_PARTS`, 1 elsewhere."""
    w = torch.ones(NUM_CLASSES, device=device)
    w[list(SMALL_PARTS)] = float(small_part_weight)
    return w


def occupancy_bce(sigma: torch.Tensor, occ: torch.Tensor, delta: float) -> torch.Tensor:
    """BCE of the sample opacity ``1 - exp(-sigma delta)`` (``sigma [..., 1]`` or ``[...]``) against 0/1."""
    alpha = 1 - torch.exp(-sigma.float().reshape(occ.shape) * delta)
    return F.binary_cross_entropy(alpha.clamp(1e-5, 1 - 1e-5), occ.float())


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of ``logits [..., C]`` against ``labels [...]``, each term weighted by
    ``weight[label]`` (and ``mask``), normalised by the weights' sum."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1).long(),
                         reduction="none")
    w = weight[labels.reshape(-1).long()]
    if mask is not None:
        w = w * mask.reshape(-1).float()
    return (ce * w).sum() / w.sum().clamp_min(1e-6)


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean over the last axis of ``|pred - target|``, weighted by ``w`` (broadcast to its shape)."""
    err = (pred.float() - target.float()).abs().mean(-1)
    w = w.expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1e-6)


def laplacian_pyramid_l1(pred: torch.Tensor, target: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Sum over ``levels`` band-pass levels and the low-pass residual of the per-pixel mean L1 between
    the Laplacian pyramids of two [B, C, H, W] images. GLO's Lap1 weighs the summed L1 of level ``j`` by
    ``4^j``, which is the per-pixel mean: every band counts equally, so edges (the fine bands) weigh as
    much as the flat colour (the residual)."""
    loss = pred.new_zeros((), dtype=torch.float32)
    a, b = pred.float(), target.float()
    for level in range(levels):
        if min(a.shape[-2:]) < 2:
            loss = loss + (a - b).abs().mean()
            break
        a_low, b_low = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        a_up = F.interpolate(a_low, scale_factor=2, mode="bilinear", align_corners=False)
        b_up = F.interpolate(b_low, scale_factor=2, mode="bilinear", align_corners=False)
        loss = loss + ((a - a_up) - (b - b_up)).abs().mean()
        a, b = a_low, b_low
    else:
        loss = loss + (a - b).abs().mean()
    return loss
