# SPDX-License-Identifier: GPL-3.0-or-later
"""Block-sparse sampling (:mod:`ide3d_core.mesh.sparse`) against the truth of dense sampling: the
``"grow"`` rule gives the dense grid's surface exactly, also for a sheet thinner than a block that no
block corner sees and that runs far from every seed, and where the head crosses the box border; the
grid's ``box`` changes nothing in either extractor; and the generator field's lattice density (softplus
inputs floored; or the fused kernel) against the decoder's own density where its hidden units are far
negative."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ide3d_core.mesh.analytic import AnalyticField, box_sdf, sphere_sdf, union_sdf
from ide3d_core.mesh.extract import marching_cubes
from ide3d_core.mesh.grid import DensityGrid, GridConfig, sample_density_grid
from ide3d_core.mesh.isosurface import mcubes_available
from ide3d_core.progress import CancelToken, Cancelled

ISOSURFACE = [pytest.param("mcubes", marks=pytest.mark.skipif(not mcubes_available(), reason="PyMCubes not installed")),
              "tetrahedra"]
R, BLOCK, LEVEL = 65, 4, 10.0
# a sheet one sample thick, midway between two layers of block corners (y index 34 of 65), attached to
# a sphere and reaching 0.35 past it in x and z; a neck through the bottom of the box
SHEET_Y = -0.5 + 34 / 64


def _field():
    sdf = union_sdf(sphere_sdf((0.0, 0.05, 0.0), 0.2), box_sdf((0.0, SHEET_Y, 0.0), (0.45, 0.006, 0.3)),
                    box_sdf((0.0, -0.35, 0.0), (0.08, 0.3, 0.08)))
    return AnalyticField(sdf, level=LEVEL, width=0.004)


@pytest.fixture(scope="module")
def grids():
    field = _field()
    return {refine: sample_density_grid(field, GridConfig(R, block=BLOCK, refine=refine), LEVEL)
            for refine in ("grow", "dilate")} | {"dense": sample_density_grid(field, GridConfig(R, block=0), LEVEL)}


def test_the_sheet_is_invisible_to_the_block_corners(grids):
    corners = grids["dense"].density[::BLOCK, ::BLOCK, ::BLOCK]
    sheet = grids["dense"].density[:, 34]
    assert (sheet > LEVEL).sum() > 500  # the sheet is in the dense grid ...
    # ... but no block corner outside the sphere's blocks comes near the level
    far = np.abs(np.arange(0, R, BLOCK) * (1 / 64) - 0.5)[:, None] > 0.3
    assert corners[:, :, :][far[:, 0]].max() < 0.25 * LEVEL


@pytest.mark.parametrize("method", ISOSURFACE)
def test_grow_gives_the_dense_surface(grids, method):
    dense, grow = marching_cubes(grids["dense"], LEVEL, method), marching_cubes(grids["grow"], LEVEL, method)
    assert grids["grow"].queried < 0.5 * R ** 3
    np.testing.assert_array_equal(grow.faces, dense.faces)
    np.testing.assert_allclose(grow.vertices, dense.vertices, atol=1e-6)
    # the earlier rule loses the sheet more than a block away from the sphere
    assert marching_cubes(grids["dilate"], LEVEL, method).num_faces < dense.num_faces


@pytest.mark.parametrize("method", ISOSURFACE)
def test_box_changes_nothing(grids, method):
    g = grids["grow"]
    assert g.box is not None and g.box != ((0, R), (0, R), (0, R))
    (i0, i1), (j0, j1), (k0, k1) = g.box
    outside = np.ones((R, R, R), bool)
    outside[i0:i1, j0:j1, k0:k1] = False
    assert g.density[outside].max() <= LEVEL
    a = marching_cubes(g, LEVEL, method)
    b = marching_cubes(DensityGrid(g.density, g.config, g.queried), LEVEL, method)
    np.testing.assert_array_equal(a.faces, b.faces)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)


def test_progress_is_monotone_and_cancel_stops():
    seen = []
    sample_density_grid(_field(), GridConfig(R, block=BLOCK, chunk=2000), LEVEL,
                        progress=lambda d, t, m: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1] == (R + 1, R + 1) and len(seen) > 3
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        sample_density_grid(_field(), GridConfig(R, block=BLOCK), LEVEL, cancel=token)


def test_bad_refine_is_refused():
    with pytest.raises(ValueError, match="refine"):
        GridConfig(refine="spread")


@pytest.mark.parametrize("impl", ["torch", "auto"])
def test_lattice_density_with_far_negative_hidden_units(impl):
    from ide3d_core.mesh.generator_field import GeneratorField
    from ide3d_core.networks import Generator
    from ide3d_core.triplane import sample_triplane

    G = Generator("tiny").eval()
    with torch.no_grad():
        G.semantic_decoder.hidden.weight.mul_(60.0)  # hidden pre-activations down to about -100
        field = GeneratorField(G, G.codes_from_seeds([3]), impl=impl)
    axis = torch.linspace(-0.5, 0.5, 40)
    idx = torch.randint(0, 40, (4000, 3), generator=torch.Generator().manual_seed(0))
    cfg = G.config
    with torch.no_grad():
        feats = sample_triplane(field.planes.semantic, axis[idx][None], cfg.plane_axes, cfg.aggregation,
                                cfg.box_size)
        hidden = G.semantic_decoder.hidden(feats)
    assert float((hidden < 1e-12).float().mean()) > 0.01  # thousands of units far below the floor (-20)
    torch.testing.assert_close(field.density_at_indices(axis, idx), field.density(axis[idx]),
                               rtol=1e-5, atol=1e-6)


def test_bad_impl_is_refused():
    from ide3d_core.mesh.generator_field import GeneratorField
    from ide3d_core.networks import Generator

    G = Generator("tiny").eval()
    with pytest.raises(ValueError, match="impl"):
        GeneratorField(G, G.codes_from_seeds([0]), impl="cuda")
