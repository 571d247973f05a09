# SPDX-License-Identifier: GPL-3.0-or-later
"""The portrait's label offsets: per-class logit offsets solved at its input views, so that its label maps
agree with the photos' masks class by class (``Generator.label_offsets``).

Why: the fit (code optimisation and pivotal tuning) minimises a per-pixel cross-entropy, in which a small
class (an eye, a brow, the lips) weighs as little as its pixels. The mIoU that artists see (does the
painted-over eye region follow the eye?) weighs every class alike. After the fit, a portrait's rendered
eyes may be systematically a little small or its brows a little thick. A per-class offset added to the
logits before the argmax moves those borders, and what moves them right at the input views moves them
right at the others (the same head, the same bias): measured in docs/multiview.md.

*Decision:* coordinate ascent on the mIoU of the views' masks (:func:`ide3d_core.metrics.mean_iou`: one
confusion matrix over the views, classes present in the mask or the render), one class at a time over a
grid of offsets (:data:`GRID`), two sweeps, a change kept only when it gains :data:`MIN_GAIN`. The offsets
go after everything the image reads from the semantics (the detail's matte, the backdrop's), so they move
label maps only, never a pixel of colour.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ide3d_core.metrics import mean_iou
from ide3d_core.networks.generator import TriPlanes

#: the offsets tried per class (logits). *Decision (measured, docs/multiview.md):* novel-view mIoU on issue
#: 14's 8 heads / issue 17's 2 heads (one view, three views) was 0.755 / 0.718 / 0.734 with +-1,
#: 0.755 / 0.723 / 0.745 with +-1.5 and 0.751 / 0.728 / 0.748 with +-2 (0.728 / 0.710 / 0.725 without);
#: a wider range fits the input views better and the others less
GRID = tuple(x / 4.0 for x in range(-6, 7))
#: the smallest mIoU gain that changes an offset
MIN_GAIN = 1e-4
#: coordinate-ascent sweeps over the classes
SWEEPS = 2


def offsets_from_views(logits: torch.Tensor, labels: torch.Tensor, grid: tuple[float, ...] = GRID,
                       sweeps: int = SWEEPS, min_gain: float = MIN_GAIN) -> tuple[torch.Tensor, float, float]:
    """``logits [N, K, H, W]`` (the views' rendered semantics), ``labels [N, H, W]`` int64 (their masks) ->
    (``[K]`` offsets, pooled mIoU before, after). See the module docstring."""
    n, k = logits.shape[:2]
    flat = logits.detach().float().permute(1, 0, 2, 3).reshape(k, -1)  # [K, P]
    target = labels.reshape(-1).to(flat.device).long()
    offsets = torch.zeros(k, device=flat.device)
    best = before = mean_iou(flat.argmax(0), target, k)
    values = torch.tensor(grid, device=flat.device)
    for _ in range(sweeps):
        for c in range(k):
            shifted = flat + offsets[:, None]
            others = shifted.clone()
            others[c] = float("-inf")
            top, arg = others.max(0)  # the best other class of every pixel
            own = flat[c]
            keep = offsets[c].clone()
            for v in values:
                pred = torch.where(own + v > top, torch.full_like(arg, c), arg)
                score = mean_iou(pred, target, k)
                if score > best + min_gain:
                    best, keep = score, v
            offsets[c] = keep
    return offsets.cpu(), before, best


def solve_label_offsets(generator: nn.Module, cameras: torch.Tensor, ws: torch.Tensor, labels: torch.Tensor
                        ) -> tuple[nn.Module, torch.Tensor | None, float, float]:
    """(a copy of ``generator`` whose ``label_offsets`` best fit the masks ``labels [N, R, R]`` of the views
    at ``cameras [N, 25]`` for codes ``ws``, the offsets, pooled mIoU before, after). ``generator`` itself
    and None when it has no ``label_offsets``."""
    if getattr(generator, "label_offsets", None) is None or labels.shape[0] == 0:
        return generator, None, float("nan"), float("nan")
    n = cameras.shape[0]
    with torch.no_grad():
        planes = generator.planes(ws)
        planes = TriPlanes(planes.semantic.expand(n, -1, -1, -1, -1), planes.texture.expand(n, -1, -1, -1, -1))
        logits = generator.render(planes, cameras, ws.expand(n, -1, -1), detail=False).semantic
    offsets, before, after = offsets_from_views(logits, labels)
    out = copy.deepcopy(generator)
    with torch.no_grad():
        out.label_offsets.add_(offsets.to(out.label_offsets))
    return out, offsets, before, after
