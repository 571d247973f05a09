# SPDX-License-Identifier: GPL-3.0-or-later
"""The inversion loss of N views of one head (:class:`Objective`): ``l2 * MSE + ssim * (1 - MS-SSIM) +
semantic * CE + lpips * LPIPS`` per view, combined with Cauchy view weights
(:func:`~ide3d_core.inversion.views.robust_weights`); see :mod:`ide3d_core.inversion.procedure`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.fast_render import network_dtype, occupancy_grid
from ide3d_core.inversion.losses import ms_ssim
from ide3d_core.inversion.policy import InversionPolicy
from ide3d_core.inversion.views import robust_weights



class Objective:
    """The inversion loss of N views of one head, rendered in one batch from one set of tri-planes."""

    def __init__(self, targets: torch.Tensor, labels: torch.Tensor, cameras: torch.Tensor,
                 semantic: torch.Tensor, policy: InversionPolicy, lpips: Optional[nn.Module]) -> None:
        """targets [N, 3, R, R] in [-1, 1]; labels [N, R, R] int64; cameras [N, 25]; semantic [N] 0/1 (which
        views have a mask worth fitting)."""
        self.targets, self.labels, self.cameras, self.semantic = targets, labels, cameras, semantic
        self.policy, self.lpips = policy, lpips
        #: bf16 autocast is honoured only where the device has native bf16 (else float32)
        self.bf16_native = network_dtype("auto", targets.device) == torch.bfloat16
        s = policy.ssim_resolution
        self.ssim_pool = targets.shape[-1] // s if s and targets.shape[-1] > s else 1
        self.ssim_targets = F.avg_pool2d(targets, self.ssim_pool) if self.ssim_pool > 1 else targets

    def per_view(self, generator: nn.Module, ws: torch.Tensor, neural_resolution: int | None = None,
                 bf16: bool = False, planes=None, cameras: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses [N], images [N, 3, R, R]) of codes ws [1, num_ws, w_dim]; ``bf16``: the render under
        bfloat16 autocast where the device has native bf16 (the losses always in float32); ``planes``: the
        codes' tri-planes when the caller already has them (tuning with a frozen synthesis), else computed;
        ``cameras``: [N, 25] labels to render with instead of the objective's (pose refinement; may carry
        gradients)."""
        with torch.autocast(self.targets.device.type, dtype=torch.bfloat16, enabled=bf16 and self.bf16_native):
            out = self._render(generator, ws, neural_resolution, planes,
                               self.cameras if cameras is None else cameras)
        return self._losses(out, _logit_offsets(generator))

    def with_cameras(self, cameras: torch.Tensor) -> "Objective":
        """The same objective for other cameras [N, 25] (the refined poses of the tuning stage)."""
        return Objective(self.targets, self.labels, cameras.detach(), self.semantic, self.policy, self.lpips)

    def _render(self, generator: nn.Module, ws: torch.Tensor, neural_resolution: int | None, planes,
                cameras: torch.Tensor):
        from ide3d_core.networks.generator import TriPlanes

        n = self.targets.shape[0]
        if planes is None:
            planes = generator.planes(ws)
        if n > 1:
            planes = TriPlanes(planes.semantic.expand(n, -1, -1, -1, -1), planes.texture.expand(n, -1, -1, -1, -1))
        occupied = None
        if self.policy.skip_empty:
            grid = occupancy_grid(generator, TriPlanes(planes.semantic[:1].detach(), planes.texture[:1].detach()))
            occupied = lambda points: grid.lookup(points, 0)  # noqa: E731  (every view shares the planes)
        # one view: its backdrop (solved under its camera) may hold the refined pose; several: not
        # (EnvironmentBackground.render says why, measured)
        return generator.render(planes, cameras, ws.expand(n, -1, -1), neural_resolution=neural_resolution,
                                occupied=occupied, backdrop_camera_grad=n == 1, detail=self.policy.fit_detail)

    def _losses(self, out, offsets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``offsets``: the model's semantic logit adjustment, taken off before the cross-entropy (the fit
        matches the model's own probabilities to the mask; the adjustment only moves the argmax)."""
        n = self.targets.shape[0]
        img, p = out.image.float(), self.policy
        loss = p.l2_weight * (img - self.targets).pow(2).mean((1, 2, 3))
        if p.ssim_weight:
            x = F.avg_pool2d(img, self.ssim_pool) if self.ssim_pool > 1 else img
            if min(x.shape[-2:]) >= 11:
                loss = loss + p.ssim_weight * (1.0 - ms_ssim(x, self.ssim_targets))
        if p.semantic_weight and bool(self.semantic.any()):
            labels = self.labels
            if labels.shape[-2:] != out.semantic.shape[-2:]:
                labels = F.interpolate(labels[:, None].float(), size=out.semantic.shape[-2:], mode="nearest")[:, 0]
            logits = out.semantic.float() if offsets is None else out.semantic.float() - offsets
            ce = F.cross_entropy(logits, labels.long(), reduction="none").mean((1, 2))
            loss = loss + p.semantic_weight * ce * self.semantic
        if self.lpips is not None and p.lpips_weight:
            loss = loss + p.lpips_weight * self.lpips(img, self.targets).reshape(n, -1).mean(1)
        return loss, img

    def __call__(self, generator: nn.Module, ws: torch.Tensor, neural_resolution: int | None = None,
                 bf16: bool = False, planes=None, cameras: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(robustly weighted loss, per-view losses [N] (detached), images); ``bf16``, ``planes`` and
        ``cameras`` as in :meth:`per_view`."""
        losses, img = self.per_view(generator, ws, neural_resolution, bf16, planes, cameras)
        w = robust_weights(losses, self.policy.robust_scale)
        return (w * losses).sum(), losses.detach(), img


def _logit_offsets(generator: nn.Module) -> torch.Tensor | None:
    """[1, 19, 1, 1] the generator's semantic logit adjustments (``GeneratorConfig.semantic_logit_bias`` and
    a portrait's ``label_offsets``), or None when it has none (or is a stand-in without them)."""
    offsets = getattr(getattr(generator, "superresolution", None), "logit_offsets", None)
    labels = getattr(generator, "label_offsets", None)
    if labels is not None:
        labels = labels.float().view(1, -1, 1, 1)
        offsets = labels if offsets is None else offsets.float() + labels
    return None if offsets is None else offsets.float()
