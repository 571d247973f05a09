# SPDX-License-Identifier: GPL-3.0-or-later
"""Label-map metrics: class frequencies and their distance; confusion and mean IoU are
:mod:`ide3d_core.metrics` (one definition for inference, training and the model card)."""
from __future__ import annotations

import torch

from ide3d_core.labels import NUM_CLASSES
from ide3d_core.metrics import confusion_matrix, mean_iou  # noqa: F401 (the one definition)


def label_frequency(labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """[K] float64 share of pixels of each class in integer label maps (sums to 1)."""
    counts = torch.bincount(labels.reshape(-1).long(), minlength=num_classes).double()
    return counts / counts.sum().clamp_min(1)


def frequency_distance(freq_a: torch.Tensor, freq_b: torch.Tensor) -> float:
    """Total-variation distance ``0.5 * sum |a - b|`` between two class-frequency vectors (0..1)."""
    return float(0.5 * (freq_a.double() - freq_b.double()).abs().sum())
