# SPDX-License-Identifier: GPL-3.0-or-later
"""Volume-rendering maths against closed forms (constant-density slab and sphere)."""
import math

import pytest
import torch

from ide3d_core.rendering import (composite, interval_edges, render_rays, sample_pdf,
                                  stratified_depths)

NEAR, FAR = 2.0, 4.0


def rays_along_z(offsets_x):
    n = len(offsets_x)
    origins = torch.zeros(1, n, 3, dtype=torch.float64)
    origins[0, :, 0] = torch.tensor(offsets_x, dtype=torch.float64)
    dirs = torch.zeros(1, n, 3, dtype=torch.float64)
    dirs[..., 2] = 1.0
    return origins, dirs


def slab_field(a, b, sigma0):
    def field(points):
        z = points[..., 2:3]
        sigma = torch.where((z >= a) & (z <= b), sigma0, 0.0).to(points.dtype)
        return sigma, torch.cat([torch.ones_like(z), z], dim=-1)  # values: 1 and the depth itself
    return field


def slab_truth(a, b, sigma0, far=FAR):
    L = b - a
    e = math.exp(-sigma0 * L)
    opacity = 1.0 - e
    depth = a * (1 - e) + (1.0 / sigma0) * (1 - e * (1 + sigma0 * L)) + e * far
    return opacity, depth


def test_slab_on_bin_edges_opacity_is_exact():
    origins, dirs = rays_along_z([0.0])
    a, b, s0 = 2.5, 3.2, 3.0  # bin edges of 200 bins over [2, 4]
    out = render_rays(slab_field(a, b, s0), origins, dirs, NEAR, FAR, 200, 0).composite
    opacity, depth = slab_truth(a, b, s0)
    assert out.opacity.item() == pytest.approx(opacity, abs=1e-6)
    assert out.values[0, 0, 0].item() == pytest.approx(opacity, abs=1e-6)  # composited constant 1
    assert out.depth.item() == pytest.approx(depth, abs=1e-3)


@pytest.mark.parametrize("jitter", [False, True])
def test_slab_with_importance_samples(jitter):
    origins, dirs = rays_along_z([0.0] * 8)
    a, b, s0 = 2.63, 3.11, 5.0
    gen = torch.Generator().manual_seed(1) if jitter else None
    out = render_rays(slab_field(a, b, s0), origins, dirs, NEAR, FAR, 64, 64, generator=gen).composite
    opacity, depth = slab_truth(a, b, s0)
    # Deterministic samples: close on every ray; jittered samples: unbiased, so close on average.
    tol = 5e-2 if jitter else 2e-2
    assert (out.opacity - opacity).abs().max() < tol and (out.depth - depth).abs().max() < tol
    assert abs(out.opacity.mean() - opacity) < 1e-2 and abs(out.depth.mean() - depth) < 1e-2
    # Expected depth: the composited "depth" value equals depth minus the background term.
    assert torch.allclose(out.values[..., 1:2] + (1 - out.opacity) * FAR, out.depth, atol=1e-9)


def test_sphere_opacity_and_depth():
    r, s0, centre = 0.4, 2.0, 3.0
    offsets = [0.0, 0.1, 0.25, 0.35, 0.5]
    origins, dirs = rays_along_z(offsets)

    def field(points):
        d2 = points[..., 0] ** 2 + points[..., 1] ** 2 + (points[..., 2] - centre) ** 2
        return (d2 <= r * r).to(points.dtype).unsqueeze(-1) * s0, points[..., :0]

    out = render_rays(field, origins, dirs, NEAR, FAR, 1000, 0).composite
    for k, d in enumerate(offsets):
        L = 2 * math.sqrt(max(r * r - d * d, 0.0))
        if L == 0:
            assert out.opacity[0, k].item() == 0.0 and out.depth[0, k].item() == pytest.approx(FAR)
            continue
        opacity, depth = slab_truth(centre - L / 2, centre + L / 2, s0)
        assert out.opacity[0, k].item() == pytest.approx(opacity, abs=1e-2)
        assert out.depth[0, k].item() == pytest.approx(depth, abs=1e-2)


def test_composite_empty_and_opaque():
    depths = stratified_depths((1, 1), 10, NEAR, FAR).double()
    vals = torch.randn(1, 1, 10, 3, dtype=torch.float64)
    empty = composite(torch.zeros(1, 1, 10), vals, depths, NEAR, FAR)
    assert empty.opacity.item() == 0 and empty.depth.item() == FAR and empty.values.abs().max() == 0
    wall = torch.zeros(1, 1, 10)
    wall[..., 3] = 1e4  # opaque at the 4th sample
    hit = composite(wall, vals, depths, NEAR, FAR)
    assert hit.opacity.item() == pytest.approx(1.0)
    assert hit.depth.item() == pytest.approx(depths[0, 0, 3].item())
    assert torch.allclose(hit.values[0, 0], vals[0, 0, 3].float())


def test_stratified_depths():
    d = stratified_depths((2, 3), 5, NEAR, FAR)
    assert torch.allclose(d[0, 0], torch.tensor([2.2, 2.6, 3.0, 3.4, 3.8]))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    j1 = stratified_depths((2, 3), 5, NEAR, FAR, generator=g1)
    assert torch.equal(j1, stratified_depths((2, 3), 5, NEAR, FAR, generator=g2))
    bins = ((j1 - NEAR) / 0.4).floor()
    assert torch.equal(bins, torch.arange(5.0).expand(2, 3, 5))
    assert not torch.allclose(j1, d)
    assert torch.allclose(interval_edges(d, NEAR, FAR)[0, 0], torch.tensor([2.0, 2.4, 2.8, 3.2, 3.6, 4.0]))


def test_importance_samples_concentrate_where_the_weights_are():
    edges = torch.linspace(0.0, 1.0, 11).expand(4, 11)
    weights = torch.zeros(4, 10)
    weights[:, 6] = 0.9
    s = sample_pdf(edges, weights, 64)
    assert ((s >= 0.6) & (s <= 0.7)).all()
    g = torch.Generator().manual_seed(0)
    s = sample_pdf(edges, weights, 1000, generator=g)
    assert ((s >= 0.6) & (s <= 0.7)).float().mean() > 0.99
    # Proportional allocation: quantiles land in each bin in proportion to its weight.
    w = torch.tensor([[1.0, 3.0, 0.0, 4.0]])
    e = torch.tensor([[0.0, 0.1, 0.5, 0.6, 1.0]])
    s = sample_pdf(e, w, 800)
    counts = torch.histc(s, bins=4, min=0, max=1)  # not the bins above: count per interval instead
    idx = torch.searchsorted(e[0].contiguous(), s[0].contiguous(), right=True) - 1
    counts = torch.bincount(idx.clamp(0, 3), minlength=4)
    assert counts.tolist() == pytest.approx([100, 300, 0, 400], abs=1)


def test_tuple_values_composite_like_concatenated_values():
    origins, dirs = rays_along_z([0.0, 0.1])
    field = slab_field(2.6, 3.1, 4.0)

    def tuple_field(points):
        sigma, v = field(points)
        return sigma, (v[..., :1], v[..., 1:])

    a = render_rays(field, origins, dirs, NEAR, FAR, 16, 16).composite
    b = render_rays(tuple_field, origins, dirs, NEAR, FAR, 16, 16).composite
    assert torch.equal(torch.cat(b.values, dim=-1), a.values) and torch.equal(a.depth, b.depth)


def test_render_rays_puts_fine_samples_on_the_surface():
    origins, dirs = rays_along_z([0.0])
    a, b = 3.0, 3.05  # a thin, nearly opaque shell
    rays = render_rays(slab_field(a, b, 200.0), origins, dirs, NEAR, FAR, 32, 64)
    d = rays.depths[0, 0]
    assert d.shape == (96,) and torch.all(d[1:] >= d[:-1])  # merged and sorted
    # Only the coarse sample at 3.03125 (bin 16 of 32 over [2, 4]) hits the shell; its interval is
    # [3.0, 3.0625], so the importance samples must all land there (1 coarse + 64 fine).
    inside = ((d >= 3.0) & (d <= 3.0625)).sum().item()
    assert inside == 65
