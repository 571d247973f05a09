# SPDX-License-Identifier: GPL-3.0-or-later
"""The portrait's own backdrop, solved in closed form from the views' background pixels (models with an
environment background, :mod:`ide3d_core.networks.background`).

The backdrop is ``M phi(d)``: patterns of the ray direction shared by every head, mixed by a 3 x (K + 1)
matrix that the texture code predicts. The codes carry little of a photo's backdrop (the encoders read
the head), and a few tuning steps cannot move the matrix far, so the inversion solves it instead: the
background pixels of every view (their labels, eroded by one pixel so that no silhouette pixel counts),
their ray directions, and ridge least squares towards the code's own matrix
(:func:`~ide3d_core.networks.background.solve_mixing`). The result is fixed in a copy of the generator
(the mixing no longer reads the code), so the portrait's weight delta carries it and every later render
(free cameras, the canonical editor, restyles, the mesh texture) shows the same backdrop. With several
views, all their pixels enter one solve: each view shows other directions of the same environment.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ide3d_core.cameras import rays_from_labels
from ide3d_core.inversion.losses import psnr
from ide3d_core.networks.background import mix_patterns, solve_mixing
from ide3d_core.networks.generator import BACKGROUND_CLASS

#: the most pixels a solve uses (an even stride over the background pixels): the 3 (K + 1) unknowns are
#: fixed long before, and the patterns' network is evaluated once per pixel
MAX_PIXELS = 16384
#: fewer background pixels than this and the backdrop is left as the code gives it
MIN_PIXELS = 64
#: the solve before the cameras are refined is kept only when it explains the background pixels at least
#: this well (dB; a solve at the right camera scores about 31 on the held-out procedural heads, one at a
#: camera 3 degrees off on a striped backdrop 15.9)
INITIAL_MIN_PSNR = 20.0


def clean_background(labels: torch.Tensor, cameras: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``labels [M, R, R]``, ``cameras [M, 25]`` -> (``keep [M, R*R]`` bool: labelled background and so is
    the 3 x 3 neighbourhood (the anti-aliased silhouette mixes head and backdrop), ``dirs [M, R*R, 3]`` the
    pixel-centre unit world ray directions)."""
    m, r = labels.shape[0], labels.shape[-1]
    bg = (labels.reshape(m, 1, r, r) == BACKGROUND_CLASS).float()
    keep = (-F.max_pool2d(-bg, 3, stride=1, padding=1) > 0.5).reshape(m, r * r)
    _, dirs = rays_from_labels(cameras.reshape(m, -1).float(), r, r)
    return keep, dirs


def background_pixels(targets: torch.Tensor, labels: torch.Tensor, cameras: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``targets [N, 3, R, R]`` (image range), ``labels [N, R, R]``, ``cameras [N, 25]`` -> (directions
    [P, 3] unit world, colours [P, 3]) of the :func:`clean_background` pixels, at most :data:`MAX_PIXELS`
    (an even stride)."""
    n, _, r, _ = targets.shape
    clean, dirs = clean_background(labels, cameras)
    rgb = targets.float().reshape(n, 3, r * r).permute(0, 2, 1)
    d, c = dirs[clean], rgb[clean]
    if d.shape[0] > MAX_PIXELS:
        keep = torch.linspace(0, d.shape[0] - 1, MAX_PIXELS, device=d.device).long()
        d, c = d[keep], c[keep]
    return d, c


def solve_backdrop(generator: nn.Module, targets: torch.Tensor, labels: torch.Tensor, cameras: torch.Tensor,
                   ws: torch.Tensor, strength: float = 1e-4,
                   min_psnr: float | None = None) -> tuple[nn.Module, int, float]:
    """(generator whose backdrop for the codes ``ws [1, num_ws, w_dim]`` best fits the views' background
    pixels, pixels used, the fit's PSNR on them in dB). A copy when it changes; ``generator`` itself,
    untouched (0 pixels; NaN dB when nothing was solved), when it has no environment background, the views
    show fewer than :data:`MIN_PIXELS` background pixels, or the fit stays below ``min_psnr`` dB.

    ``min_psnr`` is for the solve before the cameras are refined (:data:`INITIAL_MIN_PSNR`): at a camera a
    few degrees off, a high-contrast backdrop cannot be placed by any mixing, and a solve that explains
    little leaves streaks the pose refinement then cannot see past (docs/multiview.md, "Found and mended: one
    view with a wrong camera and a striped backdrop failed")."""
    backdrop = getattr(generator, "background", None)
    if backdrop is None:
        return generator, 0, float("nan")
    dirs, rgb = background_pixels(targets, labels, cameras)
    if dirs.shape[0] < MIN_PIXELS:
        return generator, 0, float("nan")
    with torch.no_grad():
        w = generator.background_code(ws[:1]).float()
        phi = backdrop.patterns_of(dirs.to(backdrop.mix.weight.dtype)).float()
        m = solve_mixing(phi, rgb, backdrop.mixing(w)[0].float(), strength)
        fit = mix_patterns(phi[None], m[None])  # [1, P, 3]
        fit_db = float(psnr(fit[..., None], rgb.float()[None, ..., None])[0])
    if min_psnr is not None and fit_db < min_psnr:
        return generator, 0, fit_db
    out = copy.deepcopy(generator)
    with torch.no_grad():
        out.background.fix_mixing(m)
    return out, int(dirs.shape[0]), fit_db
