# SPDX-License-Identifier: GPL-3.0-or-later
"""Tri-plane projection and sampling against hand-built planes whose values are their own coordinates."""
import pytest
import torch

from ide3d_core.triplane import mirror_planes, project_onto_planes, sample_planes, sample_triplane

P = 16


def coordinate_planes(n_planes: int = 3) -> torch.Tensor:
    """[1, n, 2, P, P]: channel 0 = world coordinate of each texel centre along W, channel 1 along H
    (texel centre i at -0.5 + (i + 0.5) / P for the unit box)."""
    centres = -0.5 + (torch.arange(P, dtype=torch.float64) + 0.5) / P
    hh, ww = torch.meshgrid(centres, centres, indexing="ij")
    plane = torch.stack([ww, hh])  # [2, P, P]
    return plane.expand(1, n_planes, 2, P, P).clone()


def test_each_plane_sees_its_two_coordinates():
    # A known point inside the box (away from the border so bilinear reproduces linear functions).
    point = torch.tensor([[[0.21, -0.13, 0.37]]], dtype=torch.float64)
    planes = coordinate_planes()
    feats = sample_planes(planes, project_onto_planes(point, ("xy", "yz", "xz")), "concat")[0, 0]
    x, y, z = point[0, 0].tolist()
    # plane 0 "xy": (W, H) = (x, y); plane 1 "yz": (y, z); plane 2 "xz": (x, z).
    assert feats.tolist() == pytest.approx([x, y, y, z, x, z], abs=1e-12)


def test_eg3d_plane_set_is_expressible_and_differs():
    point = torch.tensor([[[0.21, -0.13, 0.37]]], dtype=torch.float64)
    feats = sample_planes(coordinate_planes(), project_onto_planes(point, ("xy", "xz", "zx")), "concat")
    assert feats[0, 0].tolist() == pytest.approx([0.21, -0.13, 0.21, 0.37, 0.37, 0.21], abs=1e-12)


def test_box_size_scales_coordinates():
    point = torch.tensor([[[0.4, 0.2, -0.6]]], dtype=torch.float64)
    coords = project_onto_planes(point, ("xy", "yz", "xz"), box_size=2.0)
    assert coords[0, :, 0].flatten().tolist() == pytest.approx([0.4, 0.2, 0.2, -0.6, 0.4, -0.6])


def test_aggregations_and_outside_is_zero():
    planes = torch.randn(2, 3, 4, P, P, dtype=torch.float64)
    pts = torch.rand(2, 5, 3, dtype=torch.float64) - 0.5
    cat = sample_triplane(planes, pts, aggregation="concat")
    assert cat.shape == (2, 5, 12)
    per_plane = cat.reshape(2, 5, 3, 4)
    assert torch.allclose(sample_triplane(planes, pts, aggregation="sum"), per_plane.sum(2))
    assert torch.allclose(sample_triplane(planes, pts, aggregation="mean"), per_plane.mean(2))
    far = torch.full((2, 1, 3), 2.0, dtype=torch.float64)
    assert sample_triplane(planes, far).abs().max() == 0  # zero padding outside the cube
    with pytest.raises(ValueError):
        sample_triplane(planes, pts, aggregation="max")


def test_mirror_planes_is_the_mirrored_field():
    planes = torch.randn(1, 3, 3, P, P, dtype=torch.float64)
    pts = torch.rand(1, 50, 3, dtype=torch.float64) - 0.5
    mirrored_pts = pts * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    for axes in (("xy", "yz", "xz"), ("yx", "zy", "zx")):
        a = sample_triplane(mirror_planes(planes, axes), pts, axes, "concat")
        b = sample_triplane(planes, mirrored_pts, axes, "concat")
        assert torch.allclose(a, b, atol=1e-12)


def test_bf16_planes_are_sampled_at_full_coordinate_precision():
    planes = torch.randn(1, 3, 4, 256, 256).bfloat16()
    pts = torch.rand(1, 300, 3) * 0.9 - 0.45
    ref = sample_triplane(planes.float(), pts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sample_triplane(planes, pts.bfloat16().float())  # points as the autocast path sees them
        out_fp32_pts = sample_triplane(planes, pts)
    assert out_fp32_pts.dtype == torch.float32
    assert torch.allclose(out_fp32_pts, ref, atol=1e-5)
    assert not torch.allclose(out, ref, atol=1e-3)  # what bf16 coordinates would have cost
