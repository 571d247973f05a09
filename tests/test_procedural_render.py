# SPDX-License-Identifier: GPL-3.0-or-later
"""Procedural-head renderer against independent truth: a brute-force float64 numpy ray marcher over the
primitives' inside tests, camera projection (ide3d_core.cameras) for multi-view consistency, and the
mirror convention (Camera.mirrored + labels.mirror_labels)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ide3d_core import cameras as C
from ide3d_core.labels import ID, NUM_CLASSES, mirror_labels
from training.procedural import orbit_labels, render_heads, sample_cameras, sample_heads


def _heads(n, seed, symmetric=False):
    return sample_heads(n, torch.Generator().manual_seed(seed), symmetric=symmetric)


def _inside_all(head, pts):
    """(S, 3) float64 points -> (S, P) bool: inside test of every primitive (module docstring of
    training.procedural.quadrics), written independently in numpy."""
    c = head.centre[0].double().numpy()
    rot = head.rot[0].double().numpy()
    inv_r = head.inv_radii[0].double().numpy()
    planes = head.planes[0].double().numpy()
    slots = head.plane_slots.numpy()
    active = head.active[0].numpy()
    local = np.einsum("pij,spj->spi", rot, pts[:, None, :] - c[None]) * inv_r[None]
    inside = (local ** 2).sum(-1) <= 1.0
    for p in range(c.shape[0]):
        for k in slots[p]:
            if k < planes.shape[0]:
                inside[:, p] &= pts @ planes[k, :3] <= planes[k, 3]
    return inside & active[None]


def _march(head, origin, direction, t0=1.6, t1=3.8, dt=2e-4):
    """First primitive entered along the ray and the entry distance, or (None, None); also whether a
    second primitive is entered within two steps (an ambiguous pixel)."""
    ts = np.arange(t0, t1, dt)
    inside = _inside_all(head, origin[None] + ts[:, None] * direction[None])
    any_in = inside.any(1)
    if not any_in.any():
        return None, None, False
    i = int(np.argmax(any_in))
    prims = np.flatnonzero(inside[i])
    near = np.flatnonzero(inside[i:i + 3].any(0))
    return int(head.label[prims[0]]), ts[i], len(set(int(head.label[p]) for p in near)) > 1


@pytest.mark.parametrize("yaw,pitch", [(0.0, 0.0), (35.0, -12.0)])
def test_labels_and_depth_match_independent_ray_marching(yaw, pitch):
    heads = _heads(2, seed=3)
    res = 32
    cam = C.orbit_camera(math.radians(yaw), math.radians(pitch))
    labels = torch.from_numpy(np.tile(cam.label(), (2, 1)))
    r = render_heads(heads, labels, res, antialias=1)
    origins, dirs = cam.rays(res, res)
    rng = np.random.default_rng(0)
    checked = 0
    for h in range(2):
        head = heads.index(h)
        fg = np.argwhere(r.labels[h].numpy() > 0)
        picks = np.concatenate([fg[rng.choice(len(fg), 14, replace=False)], rng.integers(0, res, (4, 2))])
        for j, i in picks:
            lab, t, ambiguous = _march(head, origins[j, i], dirs[j, i])
            if ambiguous:
                continue
            checked += 1
            assert int(r.labels[h, j, i]) == (0 if lab is None else lab), (h, j, i)
            if lab is None:
                assert r.depth[h, 0, j, i] == 0 and r.mask[h, 0, j, i] == 0
            else:
                assert abs(float(r.depth[h, 0, j, i]) - t) < 3e-4
    assert checked >= 30


def test_small_parts_are_exact_too():
    """Pixels on eyes, brows and lips (a few pixels wide) agree with the marcher as well."""
    heads = _heads(1, seed=5)
    res = 64
    cam = C.canonical_camera()
    r = render_heads(heads, torch.from_numpy(cam.label()[None]), res, antialias=1)
    origins, dirs = cam.rays(res, res)
    lab = r.labels[0].numpy()
    for name in ("l_eye", "r_eye", "l_brow", "u_lip", "nose"):
        pix = np.argwhere(lab == ID[name])
        assert len(pix), name
        j, i = pix[len(pix) // 2]
        got, _, _ = _march(heads, origins[j, i], dirs[j, i])
        assert got == ID[name]


def test_orbit_labels_equal_camera_module():
    rng = np.random.default_rng(1)
    angles = np.stack([rng.uniform(-1, 1, 9), rng.uniform(-0.5, 0.5, 9)], 1)
    fast = orbit_labels(angles, C.CANONICAL_RADIUS, C.CANONICAL_FOCAL)
    ref = C.stack_labels([C.orbit_camera(y, p) for y, p in angles])
    np.testing.assert_allclose(fast, ref, atol=1e-6)


def test_multi_view_consistency():
    """A surface point seen in one view, lifted with its depth and projected into another view, lands
    on a pixel with the same label (where it is visible there)."""
    heads = _heads(1, seed=7)  # short hair, glasses, earrings, collar
    res = 64
    cams = [C.orbit_camera(math.radians(-20), math.radians(5)), C.orbit_camera(math.radians(25), math.radians(-5))]
    r = render_heads(heads.index(torch.tensor([0, 0])), torch.from_numpy(C.stack_labels(cams)), res, antialias=1)
    o1, d1 = cams[0].rays(res, res)
    depth1 = r.depth[0, 0].double().numpy()
    fg = depth1 > 0
    pts = o1[fg] + depth1[fg][:, None] * d1[fg]
    uv, _ = cams[1].project(pts, res, res)
    ij = np.floor(uv).astype(int)
    ok = (ij >= 0).all(1) & (ij < res).all(1)
    pts, ij, lab1 = pts[ok], ij[ok], r.labels[0].numpy()[fg][ok]
    depth2 = r.depth[1, 0].double().numpy()[ij[:, 1], ij[:, 0]]
    visible = np.abs(depth2 - np.linalg.norm(pts - cams[1].position, axis=1)) < 0.02
    assert visible.sum() > 300
    # compare away from label boundaries of view 2 (a reprojected point lies anywhere in its pixel,
    # the pixel's label is that of its centre): the 3x3 neighbourhood must hold one label
    lab2_img = np.pad(r.labels[1].numpy(), 1, mode="edge")
    win = np.stack([lab2_img[1 + dj:res + 1 + dj, 1 + di:res + 1 + di] for dj in (-1, 0, 1) for di in (-1, 0, 1)])
    uniform = (win.min(0) == win.max(0))[ij[:, 1], ij[:, 0]]
    lab2 = r.labels[1].numpy()[ij[:, 1], ij[:, 0]]
    sel = visible & uniform
    assert sel.sum() > 400 and len(set(lab1[sel])) >= 5
    agree = (lab1[sel] == lab2[sel]).mean()
    assert agree > 0.99, agree


def test_mirrored_camera_mirrors_symmetric_head():
    heads = _heads(3, seed=7, symmetric=True)
    cam = C.orbit_camera(math.radians(22), math.radians(7))
    labels = np.stack([cam.label(), cam.mirrored().label()])
    res = 40
    for h in range(3):
        r = render_heads(heads.index(torch.tensor([h, h])), torch.from_numpy(labels), res)
        a, b = r.labels[0].numpy(), r.labels[1].numpy()
        assert (mirror_labels(a) == b).mean() > 0.995
        assert not (a == b).all()
        img_a, img_b = r.image[0].numpy(), r.image[1].numpy()
        assert np.abs(img_a[:, :, ::-1] - img_b).mean() < 0.01


def test_outputs_shapes_ranges_and_mask():
    heads = _heads(3, seed=2)
    cams = sample_cameras(3, torch.Generator().manual_seed(0))
    r = render_heads(heads, cams, 24, antialias=2)
    assert r.image.shape == (3, 3, 24, 24) and r.labels.shape == (3, 24, 24)
    assert r.depth.shape == r.mask.shape == (3, 1, 24, 24) and r.cameras.shape == (3, 25)
    assert r.image.min() >= -1 and r.image.max() <= 1 and r.labels.dtype == torch.int64
    assert 0 <= int(r.labels.min()) and int(r.labels.max()) < NUM_CLASSES
    assert torch.equal(r.mask[:, 0] > 0, r.labels > 0)
    assert torch.all((r.depth[:, 0] > 0) == (r.labels > 0))
    fgd = r.depth[r.depth > 0]
    assert fgd.min() > 2.7 - 0.9 and fgd.max() < 2.7 + 0.9  # the head box seen from radius 2.7


def test_bad_cameras_are_rejected():
    heads = _heads(2, seed=0)
    with pytest.raises(ValueError):
        render_heads(heads, torch.zeros(3, 25), 16)
    with pytest.raises(ValueError):
        render_heads(heads, torch.zeros(2, 25), 0)
    inside = C.look_at((0.1, 0.0, 0.3), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="inside the head box"):
        render_heads(heads, torch.from_numpy(np.tile(C.pack_label(inside, C.intrinsics()), (2, 1))), 16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_render_matches_cpu():
    heads = _heads(4, seed=9)
    cams = sample_cameras(4, torch.Generator().manual_seed(2))
    cpu = render_heads(heads, cams, 48)
    gpu = render_heads(heads.to("cuda"), cams.cuda(), 48)
    assert (gpu.labels.cpu() == cpu.labels).float().mean() > 0.999
    assert (gpu.image.cpu() - cpu.image).abs().mean() < 0.01
    same = (gpu.labels.cpu() == cpu.labels)[:, None]
    assert torch.allclose(gpu.depth.cpu()[same], cpu.depth[same], atol=1e-3)
