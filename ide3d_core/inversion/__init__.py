# SPDX-License-Identifier: GPL-3.0-or-later
"""Hybrid inversion: encoder initialisation, code optimisation and pivotal tuning (see ``procedure``)."""
from ide3d_core.inversion.losses import mean_iou, ms_ssim, psnr, semantic_cross_entropy, ssim
from ide3d_core.inversion.procedure import InversionPolicy, InversionResult, image_to_tensor, invert

__all__ = ["InversionPolicy", "InversionResult", "image_to_tensor", "invert", "mean_iou", "ms_ssim", "psnr",
           "semantic_cross_entropy", "ssim"]
