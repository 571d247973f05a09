# SPDX-License-Identifier: GPL-3.0-or-later
"""scripts/fit_semantic_bias.py: its fast per-view mIoU (confident pixels counted once) equals
:func:`ide3d_core.metrics.mean_iou` of the full argmax maps, and the fit finds a planted offset."""
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ide3d_core.labels import NUM_CLASSES
from ide3d_core.metrics import mean_iou

SPEC = importlib.util.spec_from_file_location("fit_semantic_bias",
                                              Path(__file__).parents[1] / "scripts" / "fit_semantic_bias.py")
fsb = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(fsb)


def _views(n=5, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 6, (n, size, size), generator=g)
    logits = 4 * torch.randn(n, NUM_CLASSES, size, size, generator=g)
    logits += 3 * torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2)  # mostly right
    logits[:, 5] -= 4.0  # class 5 under-predicted: what an offset repairs
    return logits, labels


def test_fast_miou_equals_the_metric_on_full_maps():
    logits, labels = _views()
    views = fsb.Views(logits, labels)
    for seed in range(4):
        bias = torch.from_numpy(np.random.default_rng(seed).choice(fsb.GRID, NUM_CLASSES)).float()
        expected = [mean_iou((logits[v] + bias.view(-1, 1, 1)).argmax(0).numpy(), labels[v].numpy())
                    for v in range(len(labels))]
        np.testing.assert_allclose(views.mious(bias), expected, rtol=1e-12)
    keep = np.array([True, False, True, False, True])
    sub = views.subset(keep)
    expected = [mean_iou(logits[v].argmax(0).numpy(), labels[v].numpy()) for v in np.flatnonzero(keep)]
    np.testing.assert_allclose(sub.mious(torch.zeros(NUM_CLASSES)), expected, rtol=1e-12)


def test_the_fit_raises_an_under_predicted_class():
    logits, labels = _views()
    views = fsb.Views(logits, labels)
    bias = fsb.fit(views)
    assert bias[5] >= 2.0
    assert views.mious(bias).mean() > views.mious(torch.zeros(NUM_CLASSES)).mean() + 0.02
