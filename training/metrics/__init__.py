# SPDX-License-Identifier: GPL-3.0-or-later
"""Download-free metrics: SWD, semantic consistency (mIoU), multi-view consistency, label frequency."""
from training.metrics.evaluate import MetricsReport, evaluate_generator, evaluate_real
from training.metrics.multiview import ConsistencyResult, view_consistency
from training.metrics.semantic import confusion_matrix, frequency_distance, label_frequency, mean_iou
from training.metrics.swd import SWDResult, laplacian_pyramid, sliced_wasserstein

__all__ = ["MetricsReport", "evaluate_generator", "evaluate_real", "ConsistencyResult", "view_consistency",
           "confusion_matrix", "frequency_distance", "label_frequency", "mean_iou", "SWDResult",
           "laplacian_pyramid", "sliced_wasserstein"]
