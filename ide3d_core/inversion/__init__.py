# SPDX-License-Identifier: GPL-3.0-or-later
"""Hybrid inversion from one or more views: encoder initialisation, code optimisation and pivotal tuning
(see ``procedure``; the views' checks and weights are in ``views``)."""
from ide3d_core.inversion.losses import mean_iou, ms_ssim, psnr, semantic_cross_entropy, ssim
from ide3d_core.inversion.procedure import (THOROUGH_POLICY, InversionPolicy, InversionResult, invert,
                                            invert_views)
from ide3d_core.inversion.views import InversionView, NoUsableViews, ViewReport, image_to_tensor

__all__ = ["InversionPolicy", "InversionResult", "InversionView", "NoUsableViews", "THOROUGH_POLICY", "ViewReport",
           "image_to_tensor", "invert", "invert_views", "mean_iou", "ms_ssim", "psnr", "semantic_cross_entropy",
           "ssim"]
