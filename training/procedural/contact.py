# SPDX-License-Identifier: GPL-3.0-or-later
"""A contact sheet of procedural heads: each view beside its colourised label mask."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ide3d_core.cameras import orbit_camera, stack_labels
from ide3d_core.images import to_uint8_hwc
from ide3d_core.labels import colorize

from .anatomy import sample_heads
from .render import render_heads


def contact_sheet(seed: int = 0, n_heads: int = 4, yaws_deg: Sequence[float] = (-30.0, 0.0, 30.0),
                  resolution: int = 128, pitch_deg: float = 0.0, antialias: int = 2,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Grid image: one row per head, one (RGB | colourised mask) pair per yaw.

    Returns:
        (n_heads * (R + 4) + 4, len(yaws) * (2 R + 8) + 4, 3) uint8 on a grey canvas.
    """
    if n_heads < 1 or not yaws_deg:
        raise ValueError("contact_sheet needs at least one head and one yaw")
    heads = sample_heads(n_heads, torch.Generator().manual_seed(seed), device)
    nv = len(yaws_deg)
    cams = stack_labels([orbit_camera(math.radians(y), math.radians(pitch_deg)) for y in yaws_deg])
    idx = torch.arange(n_heads, device=heads.device).repeat_interleave(nv)
    rep = heads.index(idx)
    r = render_heads(rep, torch.from_numpy(np.tile(cams, (n_heads, 1))), resolution, antialias)
    rgb = to_uint8_hwc(r.image)
    masks = colorize(r.labels.cpu().numpy())
    pad, res = 4, resolution
    sheet = np.full((n_heads * (res + pad) + pad, nv * (2 * res + 2 * pad) + pad, 3), 60, np.uint8)
    for h in range(n_heads):
        for v in range(nv):
            i = h * nv + v
            y0, x0 = pad + h * (res + pad), pad + v * (2 * res + 2 * pad)
            sheet[y0:y0 + res, x0:x0 + res] = rgb[i]
            sheet[y0:y0 + res, x0 + res:x0 + 2 * res] = masks[i]
    return sheet
