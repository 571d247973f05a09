# SPDX-License-Identifier: GPL-3.0-or-later
"""ops.ray_occupancy: the twin against per-point arithmetic written out here, the C kernel against the
twin (exact except for points within float rounding of a cell face), dispatch and errors."""
from __future__ import annotations

import math

import pytest
import torch

from ops import _native
from ops.ray_occupancy import ray_occupancy, ray_occupancy_torch

needs_kernel = pytest.mark.skipif(_native.load() is None, reason=f"no C kernels: {_native.unavailable_reason()}")


def _rays(n=97, s=23, r=6, box=1.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    occupied = torch.rand(r, r, r, generator=g) > 0.6
    origins = torch.randn(n, 3, generator=g) * 2.0
    dirs = torch.nn.functional.normalize(-origins + 0.3 * torch.randn(n, 3, generator=g), dim=-1)
    depths = torch.sort(torch.rand(n, s, generator=g) * 5.0, -1).values
    return occupied, origins, dirs, depths, box


def test_twin_matches_per_point_arithmetic():
    occupied, origins, dirs, depths, box = _rays(n=20, s=9)
    r, half = occupied.shape[0], box / 2
    out = ray_occupancy_torch(occupied, origins, dirs, depths, box)
    for i in range(20):
        for j in range(9):
            p = [float(origins[i, a] + dirs[i, a] * depths[i, j]) for a in range(3)]
            if not all(abs(c) <= half for c in p):
                want = False
            else:
                idx = [min(r - 1, max(0, math.floor((c + half) * r / box))) for c in p]
                want = bool(occupied[idx[0], idx[1], idx[2]])
            assert bool(out[i, j]) == want, (i, j, p)
    assert 0 < int(out.sum()) < out.numel()


@needs_kernel
def test_kernel_matches_twin():
    occupied, origins, dirs, depths, box = _rays(n=2001, s=37)
    ref = ray_occupancy(occupied, origins, dirs, depths, box, impl="torch")
    got = ray_occupancy(occupied, origins, dirs, depths, box, impl="c", threads=2)
    assert got.dtype == torch.bool and got.shape == ref.shape
    differ = (got != ref).nonzero()
    r = occupied.shape[0]
    for i, j in differ.tolist():  # only at a cell face or the box face, within float rounding
        p = origins[i].double() + dirs[i].double() * float(depths[i, j])
        cell = (p + box / 2) * r / box
        assert float((cell - cell.round()).abs().min()) < 1e-4, (i, j, p)
    assert len(differ) <= 3
    assert 0 < int(ref.sum()) < ref.numel()


def test_dispatch_and_errors():
    occupied, origins, dirs, depths, box = _rays(n=5, s=4)
    torch.testing.assert_close(ray_occupancy(occupied, origins.double(), dirs.double(), depths.double(), box),
                               ray_occupancy_torch(occupied, origins.double(), dirs.double(), depths.double(), box))
    with pytest.raises(ValueError, match="impl"):
        ray_occupancy(occupied, origins, dirs, depths, box, impl="fast")
    with pytest.raises(ValueError, match="occupied"):
        ray_occupancy(occupied[0], origins, dirs, depths, box)
    with pytest.raises(ValueError, match="depths"):
        ray_occupancy(occupied, origins, dirs, depths[:3], box)
