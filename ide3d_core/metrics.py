# SPDX-License-Identifier: GPL-3.0-or-later
"""The one definition of intersection-over-union used everywhere (inversion reports, training metrics,
mesh-level calibration, model cards, evaluation scripts).

Conventions:

* :func:`mean_iou` pools every pixel of the batch (one confusion matrix over all maps, not a mean of
  per-image scores) and averages the per-class IoU over the classes that occur in ``pred`` or
  ``target``. A class absent from both has no IoU (0/0): it is skipped, never counted as 0 or 1, so a
  head without glasses is not rewarded or punished for the glasses it correctly lacks. Identical maps
  score 1.0; maps with no pixels raise ``ValueError``. Label ids outside ``0..num_classes-1`` raise.
* :func:`iou` of two boolean masks: two empty masks agree and score 1.0 (used for silhouettes, which
  are never both empty in a meaningful comparison); averages over classes use :func:`mean_iou`.

Inputs may be numpy arrays or torch tensors (any device); results are Python floats.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ide3d_core.labels import NUM_CLASSES


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # a torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(pred: Any, target: Any, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """[K, K] int64 counts, rows = target class, columns = predicted class, over all pixels of two integer
    label maps of equal shape (any leading dimensions)."""
    p, t = _numpy(pred).astype(np.int64, copy=False), _numpy(target).astype(np.int64, copy=False)
    if p.shape != t.shape:
        raise ValueError(f"label maps differ in shape: {p.shape} vs {t.shape}")
    for name, a in (("pred", p), ("target", t)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} holds label ids outside 0..{num_classes - 1}")
    idx = t.reshape(-1) * num_classes + p.reshape(-1)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def class_ious(pred: Any, target: Any, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """[K] float64 IoU per class; NaN for classes absent from both maps (see the module docstring)."""
    cm = confusion_matrix(pred, target, num_classes).astype(np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def mean_iou(pred: Any, target: Any, num_classes: int = NUM_CLASSES) -> float:
    """Mean IoU over the classes present in ``pred`` or ``target`` (module docstring); 1.0 for identical maps."""
    ious = class_ious(pred, target, num_classes)
    present = ~np.isnan(ious)
    if not present.any():
        raise ValueError("empty label maps: no pixels to compare")
    return float(ious[present].mean())


def iou(a: Any, b: Any) -> float:
    """IoU of two boolean masks of equal shape (1.0 when both are empty)."""
    a, b = _numpy(a).astype(bool, copy=False), _numpy(b).astype(bool, copy=False)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
