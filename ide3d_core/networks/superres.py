# SPDX-License-Identifier: GPL-3.0-or-later
"""RGB and semantic super-resolution: two StyleGAN2 synthesis blocks from H/4 to H.

Input: the neural render's colour features ``[B, F, h, h]`` (first 3 = RGB) and composited semantic
log-probabilities ``[B, 19, h, h]``, resized (bilinear, anti-aliased when shrinking) to ``H / 4`` when
``h`` differs. The features and the class probabilities go into the block trunk together
(concatenated), and each block adds a to-RGB
residual to the up-sampled RGB and a to-semantic residual to the up-sampled semantic map ("predict the
residuals of the LR inputs", paper section 3.1). Codes: ``[B, 5, w_dim]`` (two per block, the fifth
drives the last block's outputs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.networks.config import GeneratorConfig
from ide3d_core.networks.layers import ModulatedConv2d, to_output, upsample2x


class SuperResolution(nn.Module):
    """``(features [B, F, h, h], semantic [B, 19, h, h], ws [B, 5, w_dim]) ->
    (image [B, 3, H, H], semantic logits [B, 19, H, H])``."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0, c1 = cfg.sr_channels
        k = cfg.num_classes
        self.conv00 = ModulatedConv2d(cfg.feature_channels + k, c0, cfg.w_dim, up=True)
        self.conv01 = ModulatedConv2d(c0, c0, cfg.w_dim)
        self.rgb0, self.seg0 = to_output(c0, 3, cfg.w_dim), to_output(c0, k, cfg.w_dim)
        self.conv10 = ModulatedConv2d(c0, c1, cfg.w_dim, up=True)
        self.conv11 = ModulatedConv2d(c1, c1, cfg.w_dim)
        self.rgb1, self.seg1 = to_output(c1, 3, cfg.w_dim), to_output(c1, k, cfg.w_dim)
        # the configured logit adjustment (not a weight: weight files stay as they were)
        bias = torch.tensor(cfg.semantic_logit_bias or [0.0] * k, dtype=torch.float32).view(1, k, 1, 1)
        self.register_buffer("semantic_bias", bias, persistent=False)

    def forward(self, features: torch.Tensor, semantic: torch.Tensor,
                ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.cfg.sr_input_resolution
        if features.shape[-1] != r or features.shape[-2] != r:
            # float32: the anti-aliased kernel has no bf16 version on CPU (and the inputs are the
            # float32 composites anyway).
            shrink = features.shape[-1] > r
            features = F.interpolate(features.float(), size=(r, r), mode="bilinear",
                                     align_corners=False, antialias=shrink)
            semantic = F.interpolate(semantic.float(), size=(r, r), mode="bilinear",
                                     align_corners=False, antialias=shrink)
        # The trunk sees class probabilities (bounded, like the features); the residual is added to
        # the log-probabilities, whose magnitudes (down to log 1e-6) would swamp the convolutions.
        x = torch.cat([features, semantic.float().softmax(dim=1).to(features.dtype)], dim=1)
        rgb, seg = features[:, :3], semantic
        x = self.conv01(self.conv00(x, ws[:, 0]), ws[:, 1])
        rgb = upsample2x(rgb) + self.rgb0(x, ws[:, 1])
        seg = upsample2x(seg) + self.seg0(x, ws[:, 1])
        x = self.conv11(self.conv10(x, ws[:, 2]), ws[:, 3])
        rgb = upsample2x(rgb) + self.rgb1(x, ws[:, 4])
        seg = upsample2x(seg) + self.seg1(x, ws[:, 4])
        return rgb, self.adjust_logits(seg)

    @property
    def logit_offsets(self) -> torch.Tensor | None:
        """[1, 19, 1, 1] the configured ``semantic_logit_bias``, or None when the config has none."""
        return self.semantic_bias if self.cfg.semantic_logit_bias else None

    def adjust_logits(self, seg: torch.Tensor) -> torch.Tensor:
        """``seg [B, 19, H, W]`` plus :attr:`logit_offsets` (unchanged when there are none); the last step of
        :meth:`forward` and of its fast twin (:func:`ide3d_core.fast_networks.superresolve`)."""
        offsets = self.logit_offsets
        return seg if offsets is None else seg + offsets.to(seg.dtype)
