# SPDX-License-Identifier: GPL-3.0-or-later
"""Photo stereo (ide3d_core/photo_stereo.py) against independent truth: a procedural head's exact photos
at yaw -30, 0 and +30 and its exact surface at yaw 15. A surface pushed off the truth along the rays is
brought back near it, and the photos laid through the refined surface match the exact render better."""
from __future__ import annotations

import math

import pytest
import torch

from ide3d_core import cameras as C
from ide3d_core.inversion import psnr
from ide3d_core.photo_projection import (ProjectionConfig, ProjectionScope, lay_photos, project_photos, projected_photo,
                                         surface_normals)
from ide3d_core.photo_stereo import StereoConfig, photo_consistency, refine_points

R = 128


def _cam(yaw_deg: float) -> torch.Tensor:
    return torch.from_numpy(C.orbit_camera(math.radians(yaw_deg), 0.0).label()).float()


@pytest.fixture(scope="module")
def scene():
    """Exact photos at -30/0/+30 and the exact render at yaw 15 (camera, image, labels, surface points
    [R, R, 3], head mask [R, R], ray origins and directions [R, R, 3])."""
    from training.procedural import render_heads, sample_heads

    heads = sample_heads(1, torch.Generator().manual_seed(777), "cpu")
    photos = []
    for yaw in (-30.0, 0.0, 30.0):
        c = _cam(yaw)
        r = render_heads(heads, c[None], R)
        o, d = C.rays_from_labels(c[None], R, R)
        photos.append(projected_photo(r.image.float(), c, o + r.depth.flatten(1)[..., None] * d, r.mask.float(),
                                      r.labels, r.labels))
    c = _cam(15.0)
    r = render_heads(heads, c[None], R)
    o, d = C.rays_from_labels(c[None], R, R)
    o, d = o[0].reshape(R, R, 3), d[0].reshape(R, R, 3)
    points = o + r.depth[0, 0][..., None] * d
    return photos, c, r.image.float(), r.labels, points, r.mask[0, 0] > 0.5, o, d


def _pushed(scene, offset):
    photos, c, image, labels, points, head, o, d = scene
    return points + offset[..., None] * d


def _covered_error(scene, moved):
    """Mean distance to the exact surface over the head pixels the photos constrain (two of them see it)."""
    photos, c, image, labels, points, head, o, d = scene
    _, count = photo_consistency(points.reshape(-1, 3), photos, 0.06)
    both = head & (count.reshape(R, R) >= 2)
    assert both.float().sum() > 0.3 * head.float().sum()
    return float((moved - points).norm(dim=-1)[both].mean())


@pytest.mark.parametrize("stride,window", [(1, 11), (2, 7)])
def test_a_pushed_surface_comes_back_to_the_truth(scene, stride, window):
    photos, c, image, labels, points, head, o, d = scene
    yy, xx = torch.meshgrid(torch.linspace(0, 1, R), torch.linspace(0, 1, R), indexing="ij")
    for offset in (torch.full((R, R), 0.01), torch.full((R, R), -0.008), 0.01 * torch.sin(6.0 * xx + 4.0 * yy)):
        off = _pushed(scene, offset)
        cfg = StereoConfig(stride=stride, window=window)
        fixed = refine_points(off, c, head, photos, cfg)
        before, after = _covered_error(scene, off), _covered_error(scene, fixed)
        assert after < 0.45 * before, (stride, before, after)
        # the background and what the photos cannot see are untouched
        assert torch.equal(fixed[~head], off[~head])


def test_photos_carried_through_the_refined_surface_match_the_exact_view(scene):
    photos, c, image, labels, points, head, o, d = scene
    off = _pushed(scene, torch.full((R, R), 0.012))
    fixed = refine_points(off, c, head, photos)
    cfg = ProjectionConfig()
    eye = c[:16].reshape(4, 4)[:3, 3][None]
    normals = surface_normals(points[None], eye).reshape(-1, 3)
    results = [project_photos(p, c, photos, cfg, normals)[:2] for p in (off, fixed, points)]
    covered = head.reshape(-1) & torch.stack([w > 0 for _, w in results]).all(0)
    assert covered.float().sum() > 0.5 * head.float().sum()
    truth = image[0].reshape(3, -1).T[covered]
    p_off, p_on, p_exact = (float(10 * torch.log10(4.0 / (col[covered] - truth).square().mean())) for col, _ in results)
    assert p_on > p_off + 1.0, (p_off, p_on, p_exact)
    assert p_on > p_exact - 1.5, (p_on, p_exact)


def test_lay_photos_refines_with_two_photos_or_more(scene):
    photos, c, image, labels, points, head, o, d = scene
    off = _pushed(scene, torch.full((R, R), 0.012))
    sem = torch.zeros(1, 19, R, R)
    sem[:, 0] = torch.where(head, -5.0, 5.0)
    sem[:, 1] = 1.0
    grey = torch.zeros_like(image)
    scope = ProjectionScope(labels=True, colour=True)
    lay = [lay_photos(grey, sem, off.reshape(1, -1, 3), c[None], photos, cfg, scope)[0]
           for cfg in (ProjectionConfig(), ProjectionConfig(stereo=StereoConfig(steps=0)))]
    # compare where both take the photos' colour fully (W = 1; elsewhere the grey render is mixed in)
    cfg = ProjectionConfig()
    eye = c[:16].reshape(4, 4)[:3, 3][None]
    normals = surface_normals(off[None], eye).reshape(-1, 3)
    full = [project_photos(p, c, photos, cfg, normals)[1] == 1.0 for p in (refine_points(off, c, head, photos), off)]
    m = (head.reshape(-1) & full[0] & full[1]).reshape(1, 1, R, R)
    assert m.float().sum() > 0.2 * head.float().sum()
    p_on, p_off = (float(psnr(x, image, mask=m)) for x in lay)
    assert p_on > p_off + 0.5, (p_on, p_off)


def test_one_photo_or_none_changes_nothing(scene):
    photos, c, image, labels, points, head, o, d = scene
    off = _pushed(scene, torch.full((R, R), 0.01))
    assert torch.equal(refine_points(off, c, head, photos[:1]), off)
    assert torch.equal(refine_points(off, c, head, photos, StereoConfig(steps=0)), off)
    assert torch.equal(refine_points(off, c, torch.zeros_like(head), photos), off)


def test_config_is_checked():
    for bad in (dict(steps=1), dict(span=0.0), dict(window=4), dict(stride=0), dict(visibility_tolerance=0.0)):
        with pytest.raises(ValueError):
            StereoConfig(**bad)


def test_previews_lay_the_photos_without_the_stereo(scene):
    import dataclasses

    from ide3d_core.photo_projection import PhotoProjection

    photos = scene[0]
    proj = PhotoProjection(tuple(photos), torch.zeros(1, 4, 8), 2, ProjectionConfig(view_preference=8.0))
    quick = proj.without_stereo()
    assert quick.config.stereo.steps == 0 and proj.config.stereo.steps > 0
    assert dataclasses.replace(quick.config, stereo=proj.config.stereo) == proj.config
    assert quick.photos is proj.photos


def test_the_outline_keeps_the_render_matte(scene):
    """At a pixel the render covers partly (background probability p < 0.5), the photo's colour replaces the
    head's share only: ``(1 - p) photo + p backdrop`` where the photo counts fully."""
    photos, c, image, labels, points, head, o, d = scene
    p = torch.full((R, R), 0.3)
    sem = torch.full((1, 19, R, R), -30.0)
    sem[:, 0] = 0.0
    # the view's exact class on the head, with softmax(background) = p there
    on = torch.where(head, torch.log((1 - p) / p), torch.full_like(p, -5.0))
    sem.scatter_(1, labels.clamp_min(1)[:, None], on[None, None])
    backdrop = torch.full_like(image, -0.5)
    scope = ProjectionScope(labels=False, colour=True)
    cfg = ProjectionConfig(stereo=StereoConfig(steps=0))
    grey = torch.zeros_like(image)
    kept, _ = lay_photos(grey, sem, points.reshape(1, -1, 3), c[None], photos, cfg, scope, backdrop)
    plain, _ = lay_photos(grey, sem, points.reshape(1, -1, 3), c[None], photos, cfg, scope)
    colour, weight, _, label = project_photos(points, c, photos, cfg)
    # where the photo counts fully and its class is the render's (colour goes only there)
    full = (head.reshape(-1) & (weight == 1.0) & (label == labels.reshape(-1))).reshape(R, R)
    assert full.float().sum() > 100
    col = colour.T.reshape(3, R, R)
    torch.testing.assert_close(kept[0][:, full], (0.7 * col + 0.3 * -0.5)[:, full], atol=1e-5, rtol=0)
    torch.testing.assert_close(plain[0][:, full], col[:, full], atol=1e-5, rtol=0)
