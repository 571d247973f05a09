# SPDX-License-Identifier: GPL-3.0-or-later
"""The generator field's lattice query (plane rows gathered instead of bilinear taps, density output
only) against its own point query, and the grid sampled through it against the grid sampled through
``density(points)`` (the truth: the same field asked point by point)."""
from __future__ import annotations

import numpy as np
import torch

from ide3d_core.mesh.generator_field import GeneratorField
from ide3d_core.mesh.grid import GridConfig, sample_density_grid
from ide3d_core.networks import Generator


class _PointsOnly:
    """The same field without its lattice query."""

    def __init__(self, field):
        self.field, self.device = field, field.device

    def density(self, points):
        return self.field.density(points)


def _field(seed=0):
    G = Generator("tiny").eval()
    with torch.no_grad():
        return GeneratorField(G, G.codes_from_seeds([seed]))


def test_lattice_query_equals_point_query():
    field = _field()
    for r, bound in ((48, 0.5), (17, 0.6)):
        axis = torch.linspace(-bound, bound, r)
        idx = torch.randint(0, r, (5000, 3), generator=torch.Generator().manual_seed(r))
        got = field.density_at_indices(axis, idx)
        want = field.density(axis[idx])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sparse_grid_through_lattice_equals_points_only():
    field = _field(1)
    level = float(np.percentile(sample_density_grid(field, GridConfig(resolution=17, block=0)).density, 70))
    for block in (4, 6):
        cfg = GridConfig(resolution=48, block=block)
        a = sample_density_grid(field, cfg, level)
        b = sample_density_grid(_PointsOnly(field), cfg, level)
        assert a.queried == b.queried
        np.testing.assert_allclose(a.density, b.density, rtol=1e-5, atol=1e-5)
