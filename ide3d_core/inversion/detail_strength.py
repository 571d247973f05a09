# SPDX-License-Identifier: GPL-3.0-or-later
"""The portrait's surface-detail strength, solved in closed form at its input views (models with a
surface detail stage, :mod:`ide3d_core.networks.detail`).

Why: the detail is one texture shared by every head. On some heads it lands where the photo has its
strands and creases and raises the PSNR at novel views; on others it does not and costs up to half a dB
(docs/training.md, "Surface detail"). The input views can tell which: after the fit (which renders
without the detail, :attr:`InversionPolicy.fit_detail`), the detail's change of each view's image, ``d``,
either points along the views' residual ``r = target - render`` or not.

The final image is linear in the strength ``s_k`` of each class ``k`` (the detail is ``m D`` with
``m = sum_k s_k p_k``, and the backdrop is composited linearly over it), so with the image change of
strength 1, ``d``, the change at strengths ``s`` is ``sum_k s_k B_k`` with ``B_k = d p_k / (1 - p_bg)``.

* ``mode="global"``: one strength for every class, ``g = <d, r> / <d, d>`` over all views' pixels;
* ``mode="class"``: least squares over the per-class strengths, pulled towards ``g`` by a ridge of
  ``ridge`` times each class's own energy ``<B_k, B_k>`` (a class with few pixels keeps about ``g``).

Either is clamped to ``[0, 1]`` (1 is the strength the detail was trained at; above it the shared texture
would be exaggerated) and written into a copy of the generator, so the portrait's weight delta carries it
and every later render (free cameras, the canonical editor, restyles, the mesh texture) uses it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ide3d_core.networks.generator import BACKGROUND_CLASS, TriPlanes

#: strength modes of :func:`solve_detail_strength`
MODES = ("off", "global", "class")


def detail_change(generator: nn.Module, ws: torch.Tensor, cameras: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(base [N, 3, R, R], d [N, 3, R, R], probs [N, K, R, R])``: the images of codes ``ws [1, num_ws,
    w_dim]`` at ``cameras [N, 25]`` without the detail, the change the detail makes at strength 1, and the
    class probabilities (the same with and without it)."""
    n = cameras.shape[0]
    with torch.no_grad():
        planes = generator.planes(ws)
        planes = TriPlanes(planes.semantic.expand(n, -1, -1, -1, -1), planes.texture.expand(n, -1, -1, -1, -1))
        wse = ws.expand(n, -1, -1)
        base = generator.render(planes, cameras, wse, detail=False)
        saved = generator.detail.strength.clone()
        generator.detail.strength.fill_(1.0)
        try:
            full = generator.render(planes, cameras, wse, detail=True)
        finally:
            generator.detail.strength.copy_(saved)
    return base.image.float(), (full.image - base.image).float(), full.semantic.float().softmax(dim=1)


def strength_from_views(base: torch.Tensor, d: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor,
                        mode: str = "global", ridge: float = 1.0) -> torch.Tensor:
    """``[K]`` strengths in ``[0, 1]`` (module docstring) from :func:`detail_change`'s ``base``, ``d`` and
    ``probs`` and the views' ``targets [N, 3, R, R]`` (image range). The background entry is 0."""
    if mode not in ("global", "class"):
        raise ValueError(f"mode must be 'global' or 'class', got {mode!r}")
    k = probs.shape[1]
    r = targets.float() - base
    den = float((d * d).sum())
    if den <= 0.0:
        out = torch.ones(k)
        out[BACKGROUND_CLASS] = 0.0
        return out
    g = min(max(float((d * r).sum()) / den, 0.0), 1.0)
    s = torch.full((k,), g, dtype=torch.float64)
    if mode == "class":
        head = (1.0 - probs[:, BACKGROUND_CLASS:BACKGROUND_CLASS + 1]).clamp_min(1e-6)
        share = (probs / head).flatten(2).clone()  # [N, K, P]: B_k = d * share_k, over the head classes
        share[:, BACKGROUND_CLASS] = 0.0
        dd = (d * d).sum(1).flatten(1)  # [N, P]
        dr = (d * r).sum(1).flatten(1)
        a = torch.einsum("nkp,nlp,np->kl", share, share, dd).double()
        b = torch.einsum("nkp,np->k", share, dr).double()
        scale = float(a.diagonal().sum()) / k  # the system's own scale (a faint detail has tiny entries)
        lam = ridge * a.diagonal().clone() + 1e-9 * scale  # a class without pixels stays at g
        s = torch.linalg.solve(a + torch.diag(lam), b + lam * g)
    s = s.clamp(0.0, 1.0).float()
    s[BACKGROUND_CLASS] = 0.0
    return s


def solve_detail_strength(generator: nn.Module, targets: torch.Tensor, cameras: torch.Tensor, ws: torch.Tensor,
                          mode: str = "global", ridge: float = 1.0
                          ) -> tuple[nn.Module, torch.Tensor | None, float | None]:
    """(a copy of ``generator`` with the detail strength solved at the views ``targets [N, 3, R, R]``,
    ``cameras [N, 25]`` for codes ``ws``, the ``[K]`` strengths, their mean over the views' head pixels);
    ``(generator, None, None)`` (itself) when it has no detail stage or ``mode`` is "off"."""
    if mode not in MODES:
        raise ValueError(f"detail strength mode must be one of {', '.join(MODES)}, got {mode!r}")
    if getattr(generator, "detail", None) is None or mode == "off":
        return generator, None, None
    base, d, probs = detail_change(generator, ws, cameras)
    s = strength_from_views(base, d, probs, targets.to(base.device), mode, ridge)
    mass = probs.sum((0, 2, 3)).cpu()  # pixels' worth of each class; the background's strength is 0
    head = float(mass.sum() - mass[BACKGROUND_CLASS])
    mean = float((mass * s).sum()) / head if head > 0 else float(s.max())
    out = copy.deepcopy(generator)
    with torch.no_grad():
        out.detail.strength.copy_(s.to(out.detail.strength))
    return out, s, mean
