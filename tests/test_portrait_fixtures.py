# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared helpers of the inversion/editing/portrait tests: the real ``tiny`` generator and camera labels."""
from __future__ import annotations

import math

import torch
from torch import nn

from ide3d_core.cameras import orbit_camera
from ide3d_core.networks import CONFIGS, Generator


def make_generator(seed: int = 0) -> nn.Module:
    """The ``tiny`` generator (eval mode, float32, no gradients on its weights)."""
    return Generator(CONFIGS["tiny"], seed=seed).eval().requires_grad_(False)


def label(yaw_deg: float = 0.0, pitch_deg: float = 0.0, batch: int = 1) -> torch.Tensor:
    """[batch, 25] float32 packed label of an orbit camera."""
    cam = orbit_camera(math.radians(yaw_deg), math.radians(pitch_deg))
    return torch.as_tensor(cam.label()).expand(batch, 25).clone()


def test_tiny_generator_has_the_contract_code_split():
    g = make_generator()
    ws = g.codes_from_seeds([1])
    assert ws.shape == (1, g.num_ws, g.w_dim) and 0 < g.num_shape_ws < g.num_ws
    assert g.mapping.w_avg.shape == (g.w_dim,)
