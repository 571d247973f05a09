# SPDX-License-Identifier: GPL-3.0-or-later
"""Generator properties that hold by construction: shape/texture disentanglement, camera independence,
mirror consistency, exact region texture substitution, gradients, determinism, bf16 autocast."""
import pytest
import torch

from ide3d_core.cameras import mirror_label, orbit_camera, stack_labels
from ide3d_core.networks import Generator, TriPlanes
from ide3d_core.networks.mapping import (interpolate_codes, mix_shape_texture, style_mix, truncate,
                                         truncate_groups)


@pytest.fixture(scope="module")
def G():
    return Generator("tiny").eval()


def labels(*yaw_pitch):
    return torch.from_numpy(stack_labels([orbit_camera(y, p) for y, p in yaw_pitch]))


def random_points(n=500, seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, 3, generator=g) - 0.5


@torch.no_grad()
def test_texture_codes_never_change_geometry_or_semantics(G):
    ws = G.codes_from_seeds([0, 1])
    other = G.codes_from_seeds([7, 8])
    ws2 = mix_shape_texture(ws, other, G.num_shape_ws)  # same w_s, different w_t
    assert not torch.equal(ws[:, G.num_shape_ws:], ws2[:, G.num_shape_ws:])
    p1, p2 = G.planes(ws), G.planes(ws2)
    assert torch.equal(p1.semantic, p2.semantic)
    assert not torch.allclose(p1.texture, p2.texture)
    pts = random_points()
    f1, f2 = G.query(p1, pts), G.query(p2, pts)
    assert torch.equal(f1.sigma, f2.sigma) and torch.equal(f1.semantic, f2.semantic)
    assert not torch.allclose(f1.features, f2.features)
    c = labels((0.3, 0.1), (-0.4, 0.0))
    r1, r2 = G.render(p1, c, ws), G.render(p2, c, ws2)
    for key in ("depth", "opacity", "semantic_raw"):
        assert torch.equal(getattr(r1, key), getattr(r2, key)), key
    # ...while the shape codes do change them.
    p3 = G.planes(mix_shape_texture(other, ws, G.num_shape_ws))
    assert not torch.allclose(G.query(p3, pts).sigma, f1.sigma)


@torch.no_grad()
def test_field_query_is_camera_independent_and_matches_rendering(G):
    ws_a = G.codes_from_seeds([2], c=labels((0.0, 0.0)))
    planes = G.planes(ws_a)
    pts = random_points(batch=1)
    before = G.query(planes, pts)
    G.render(planes, labels((0.5, 0.2)), ws_a)  # rendering changes no state
    after = G.query(planes, pts)
    assert torch.equal(before.sigma, after.sigma) and torch.equal(before.features, after.features)
    assert (before.sigma >= 0).all() and before.features.abs().max() <= 1
    assert torch.equal(G.density(planes, pts), before.sigma)


@torch.no_grad()
def test_mirrored_camera_equals_mirrored_planes(G):
    ws = G.codes_from_seeds([4, 5])
    planes = G.planes(ws)
    c = labels((0.35, 0.12), (-0.2, -0.1))
    c_mirror = torch.from_numpy(mirror_label(c.numpy()))
    a = G.render(planes, c_mirror, ws)
    b = G.render(G.mirror_planes(planes), c, ws)
    for key in ("features_raw", "semantic_raw", "depth", "opacity"):
        assert torch.allclose(getattr(a, key), getattr(b, key).flip(-1), atol=1e-4), key


@torch.no_grad()
def test_region_texture_substitution_is_exact_outside_the_classes(G):
    ws = G.codes_from_seeds([0])
    planes = G.planes(ws)
    other = G.planes(G.codes_from_seeds([11])).texture
    pts = random_points(n=2000, batch=1)
    base = G.query(planes, pts)
    label = base.semantic.argmax(-1)
    counts = torch.bincount(label.flatten(), minlength=19)
    chosen = (int(counts.argmax()),)
    inside = label == chosen[0]
    assert inside.any() and (~inside).any(), "test needs points inside and outside the class set"
    swapped = G.query(planes, pts, texture_swap=(other, chosen))
    assert torch.equal(swapped.sigma, base.sigma) and torch.equal(swapped.semantic, base.semantic)
    assert torch.equal(swapped.features[~inside], base.features[~inside])
    full_other = G.query(TriPlanes(planes.semantic, other), pts)
    assert torch.equal(swapped.features[inside], full_other.features[inside])
    assert not torch.allclose(swapped.features[inside], base.features[inside])
    # Swapping every class renders exactly like rendering with the other texture planes.
    c = labels((0.1, 0.0))
    a = G.render(planes, c, ws, texture_swap=(other, tuple(range(19))))
    b = G.render(TriPlanes(planes.semantic, other), c, ws)
    assert torch.allclose(a.features_raw, b.features_raw, atol=1e-6)
    with pytest.raises(ValueError, match="class ids"):
        G.query(planes, pts, texture_swap=(other, (19,)))


def test_gradients_reach_every_parameter():
    G = Generator("tiny")
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    c = labels((0.2, 0.0), (-0.2, 0.1))
    ws = G.mapping(z, c)
    out = G(ws, c, generator=torch.Generator().manual_seed(1))
    loss = sum(t.square().mean() for t in (out.image, out.semantic, out.image_raw, out.depth))
    loss.backward()
    dead = [n for n, p in G.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, dead


def test_seeded_determinism_and_initialisation():
    a, b = Generator("tiny"), Generator("tiny")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = Generator("tiny", seed=1)
    assert not torch.equal(a.mapping.embed.weight, c.mapping.embed.weight)
    heads = a.synthesis.heads
    assert not torch.equal(heads[0].conv.weight, heads[1].conv.weight)  # heads are not copies
    ws1, ws2 = a.codes_from_seeds([3, 9]), a.codes_from_seeds([3, 9])
    assert torch.equal(ws1, ws2) and not torch.equal(ws1[0], ws1[1])
    cams = labels((0.1, 0.0), (0.2, 0.0))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with torch.no_grad():
        o1, o2 = a(ws1, cams, generator=g1), a(ws1, cams, generator=g2)
        o3 = a(ws1, cams)
    assert torch.equal(o1.image, o2.image)
    assert not torch.equal(o1.depth, o3.depth)  # jittered samples differ from the deterministic ones
    # The z of a seed is the CPU draw of that seed, whatever else is drawn around it.
    z0 = torch.randn(a.z_dim, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a.mapping(z0[None], a.canonical_labels(1)), ws1[:1], atol=1e-6)


@torch.no_grad()
def test_bf16_autocast_forward(G):
    ws = G.codes_from_seeds([0, 1])
    c = labels((0.2, 0.0), (-0.1, 0.05))
    ref = G(ws, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = G(ws, c)
        f = G.query(G.planes(ws), random_points())
    for key in ("image", "semantic", "depth", "opacity", "features_raw"):
        t = getattr(out, key)
        assert torch.isfinite(t).all(), key
    # compositing runs in float32 whatever the autocast dtype
    assert out.depth.dtype == torch.float32 and out.opacity.dtype == torch.float32
    assert (f.sigma >= 0).all()
    assert (out.image.float() - ref.image).abs().mean() < 0.1
    assert (out.depth - ref.depth).abs().max() < 0.05


def test_truncation_and_mixing_helpers(G):
    ws = G.codes_from_seeds([0, 1])
    w_avg = torch.randn(G.w_dim, generator=torch.Generator().manual_seed(2))
    half = truncate(ws, w_avg, 0.5)
    assert torch.allclose(half, w_avg + 0.5 * (ws - w_avg))
    cut = truncate(ws, w_avg, 0.0, cutoff=3)
    assert torch.allclose(cut[:, :3], w_avg.expand(2, 3, -1)) and torch.equal(cut[:, 3:], ws[:, 3:])
    grp = truncate_groups(ws, w_avg, G.num_shape_ws, psi_shape=1.0, psi_texture=0.0)
    assert torch.equal(grp[:, :G.num_shape_ws], ws[:, :G.num_shape_ws])
    assert torch.allclose(grp[:, G.num_shape_ws:], w_avg.expand_as(grp[:, G.num_shape_ws:]))
    other = G.codes_from_seeds([5, 6])
    mixed = style_mix(ws, other, 1)
    assert torch.equal(mixed[:, :1], ws[:, :1]) and torch.equal(mixed[:, 1:], other[:, 1:])
    mid = interpolate_codes(ws, other, 0.5, G.num_shape_ws, groups="texture")
    assert torch.equal(mid[:, :G.num_shape_ws], ws[:, :G.num_shape_ws])
    # mapping-level truncation with psi = 0 gives w_avg (zero at initialisation) for all codes
    z = torch.randn(1, G.z_dim)
    assert torch.equal(G.mapping(z, G.canonical_labels(1), truncation_psi=0.0), torch.zeros(1, G.num_ws, G.w_dim))
    before = G.mapping.w_avg.clone()
    G.mapping(z, G.canonical_labels(1))
    assert torch.equal(G.mapping.w_avg, before)  # a forward pass changes no state
    G2 = Generator("tiny")
    G2.mapping.update_w_avg(ws, beta=0.5)
    assert torch.allclose(G2.mapping.w_avg, 0.5 * ws.reshape(-1, G.w_dim).mean(0))


@torch.no_grad()
def test_render_pixels_follow_the_camera_convention(G):
    """Each pixel of the raw maps is the composite along the ray that the numpy camera model
    (:meth:`Camera.rays`, pixel (i, j) = column i, row j from the top) shoots through that pixel."""
    from ide3d_core.rendering import render_rays

    cam = orbit_camera(0.4, 0.15)
    ws = G.codes_from_seeds([6])
    planes = G.planes(ws)
    out = G.render(planes, torch.from_numpy(cam.label())[None], ws)
    h = G.neural_resolution
    origins, dirs = cam.rays(h, h)  # (h, w, 3) numpy, float64
    o = torch.from_numpy(origins).float().reshape(1, -1, 3)
    d = torch.from_numpy(dirs).float().reshape(1, -1, 3)

    def field(points):
        f = G.query(planes, points)
        inside = (points.abs() <= 0.5 * G.config.box_size).all(-1, keepdim=True)  # renders: no density outside
        return f.sigma * inside, f.features

    cfg = G.config
    ref = render_rays(field, o, d, cfg.ray_near, cfg.ray_far, cfg.coarse_samples, cfg.fine_samples).composite
    assert torch.allclose(out.depth[0, 0], ref.depth[0, :, 0].reshape(h, h), atol=1e-4)
    assert torch.allclose(out.features_raw[0], ref.values[0].T.reshape(-1, h, h), atol=1e-4)
    assert out.depth.std() > 0  # the field is not empty: the comparison means something


@torch.no_grad()
def test_rays_that_miss_the_box_are_empty_and_bounds_follow_the_camera(G):
    """Rays that never enter the tri-plane box accumulate exactly nothing (no ghost columns from the one
    plane that still reads real features there); and a camera at any distance samples the same stretch of
    space around the head: its depth map equals the canonical-radius camera's plus the extra distance."""
    from ide3d_core.cameras import Camera, intrinsics

    ws = G.codes_from_seeds([2])
    planes = G.planes(ws)
    base = orbit_camera(0.0)
    # principal point far off-centre: every ray passes beside the box (|x| > 0.5 along the whole ray)
    off = Camera(base.cam2world, intrinsics(base.intrinsics[0, 0], base.intrinsics[1, 1], 8.0, 0.5))
    out = G.render(planes, torch.from_numpy(off.label())[None].float(), ws)
    assert torch.equal(out.opacity, torch.zeros_like(out.opacity))
    near_cam = torch.from_numpy(orbit_camera(0.0, radius=2.7).label())[None].float()
    far_cam = torch.from_numpy(orbit_camera(0.0, radius=6.0).label())[None].float()
    a, b = G.render(planes, near_cam, ws), G.render(planes, far_cam, ws)
    assert b.opacity.mean() > 0.5 * a.opacity.mean() > 0  # fixed bounds [2.25, 3.3] would see nothing at 6
    near_far = G.config.ray_near + (6.0 - 2.7)
    assert b.depth.min() >= near_far - 1e-4 and a.depth.min() >= G.config.ray_near - 1e-4
