# SPDX-License-Identifier: GPL-3.0-or-later
"""Label-map metrics: confusion, mean IoU, class frequencies and their distance."""
from __future__ import annotations

import torch

from ide3d_core.labels import NUM_CLASSES


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """[K, K] int64 counts, rows = target class, columns = predicted class. pred, target: integer
    label maps of equal shape (any leading dims)."""
    if pred.shape != target.shape:
        raise ValueError(f"label maps differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    idx = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES) -> float:
    """Mean intersection-over-union over the classes present in ``pred`` or ``target``
    (classes absent from both are skipped rather than counted as 0 or 1). 1.0 for identical maps."""
    cm = confusion_matrix(pred, target, num_classes).double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    if not present.any():
        raise ValueError("empty label maps")
    return float((inter[present] / union[present]).mean())


def label_frequency(labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """[K] float64 share of pixels of each class in integer label maps (sums to 1)."""
    counts = torch.bincount(labels.reshape(-1).long(), minlength=num_classes).double()
    return counts / counts.sum().clamp_min(1)


def frequency_distance(freq_a: torch.Tensor, freq_b: torch.Tensor) -> float:
    """Total-variation distance ``0.5 * sum |a - b|`` between two class-frequency vectors (0..1)."""
    return float(0.5 * (freq_a.double() - freq_b.double()).abs().sum())
