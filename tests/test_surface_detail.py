# SPDX-License-Identifier: GPL-3.0-or-later
"""The surface detail (ide3d_core/networks/detail.py, training/detail_fit.py): the hash grid against a dense
trilinear lookup, surface points against an analytic sphere, the generator and fast-renderer integration,
the shape/texture split, pivotal tuning leaving it alone, and a fit on procedural heads that must put
back detail of held-out views (PSNR and sharpness above the perfect 64 px field's, which has none)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ide3d_core import cameras as C
from ide3d_core import fast_render
from ide3d_core.networks import Generator
from ide3d_core.networks.config import CONFIGS, GeneratorConfig
from ide3d_core.networks.detail import HashGrid, SurfaceDetail, level_resolutions, parameter_count, surface_points
from training.detail_fit import (DetailFitConfig, DetailPixels, fit_detail, generator_with_detail, head_views,
                                 predict, procedural_pixels)

LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def _tiny_with_detail() -> Generator:
    return Generator(dataclasses.replace(CONFIGS["tiny"], detail_levels=3, detail_min_res=4, detail_max_res=64,
                                         detail_log2_table=10, detail_hidden=8)).eval()


def test_level_resolutions_are_geometric_from_min_to_max():
    assert level_resolutions(1, 16, 1024) == [16]
    r = level_resolutions(5, 16, 256)
    assert r == [16, 32, 64, 128, 256]


def test_a_dense_level_is_trilinear_interpolation_of_its_vertex_grid():
    grid = HashGrid(levels=1, min_res=5, max_res=5, log2_table=8, features=2)  # 6^3 = 216 <= 256 rows: dense
    with torch.no_grad():
        grid.tables.normal_()
    vol = grid.tables[0, :216].reshape(6, 6, 6, 2)  # [x, y, z, F] by the dense index (x * 6 + y) * 6 + z
    pts = torch.rand(200, 3)
    # grid_sample's (x, y, z) index a [D=z?] volume: lay it out as [N, C, X, Y, Z] and pass (z, y, x)
    ref = F.grid_sample(vol.permute(3, 0, 1, 2)[None], (pts * 2 - 1)[None, :, None, None, [2, 1, 0]],
                        mode="bilinear", align_corners=True)[0, :, :, 0, 0].T
    assert torch.allclose(grid(pts), ref, atol=1e-5)


def test_a_hashed_level_interpolates_the_rows_of_the_spatial_hash():
    """A level too fine for its table: each point's value is the trilinear blend of the rows the
    instant-ngp hash (x * 1 xor y * 2654435761 xor z * 805459861, mod the table) gives its 8 vertices
    (written out here point by point)."""
    grid = HashGrid(levels=2, min_res=3, max_res=40, log2_table=6, features=3)  # 41^3 > 64 rows: hashed
    with torch.no_grad():
        grid.tables.normal_()
    pts = torch.rand(50, 3)
    got = grid(pts)[:, 3:]
    for n, p in enumerate(pts.tolist()):
        s = [v * 40 for v in p]
        b = [min(math.floor(v), 39) for v in s]
        acc = torch.zeros(3)
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    vx, vy, vz = b[0] + dx, b[1] + dy, b[2] + dz
                    row = ((vx * 1) ^ (vy * 2654435761) ^ (vz * 805459861)) % 64
                    wt = 1.0
                    for d, i in zip((dx, dy, dz), range(3)):
                        f = s[i] - b[i]
                        wt *= f if d else 1 - f
                    acc += wt * grid.tables[1, row].detach()
        assert torch.allclose(got[n], acc, atol=1e-5), n


def test_parameter_count_matches_the_module():
    net = SurfaceDetail(19, 1.0, levels=4, min_res=8, max_res=64, log2_table=9, features=2, hidden=16)
    assert parameter_count(4, 9, 2, 16, 19) == sum(p.numel() for p in net.parameters())


def test_surface_points_of_an_analytic_sphere_lie_on_it():
    """A sphere of radius 0.3 at the origin seen by an orbit camera: its exact 32 px depth and hit mask give
    256 px surface points on the sphere (inside the silhouette, away from its edge)."""
    cam = torch.as_tensor(C.orbit_camera(math.radians(25.0), math.radians(10.0)).label()).float()[None]
    radius, far = 0.3, torch.full((1, 1, 1), 3.3)

    def hit(res):
        o, d = C.rays_from_labels(cam, res, res)
        b = (o * d).sum(-1)
        disc = b * b - ((o * o).sum(-1) - radius ** 2)
        t = -b - disc.clamp_min(0).sqrt()
        return o, d, t, disc > 0

    _, _, t, inside = hit(32)
    depth = torch.where(inside, t, far.view(1, 1)).view(1, 1, 32, 32)
    pts = surface_points(depth, inside.float().view(1, 1, 32, 32), cam, far, 256)[0]
    _, _, _, inside256 = hit(256)
    # well inside the silhouette: the 256 px pixel's 3 x 3 neighbourhood at 32 px all hit
    core = (F.avg_pool2d(inside.float().view(1, 1, 32, 32), 3, 1, 1) > 0.999).float()
    core = F.interpolate(core, size=256, mode="nearest")[0, 0].flatten().bool() & inside256[0]
    err = (pts[core].norm(dim=-1) - radius).abs()
    assert core.sum() > 5000
    assert float(err.max()) < 0.01 and float(err.mean()) < 0.002  # 32 px depth, bilinear: ~1 % of the radius


def test_config_keys_are_optional_and_round_trip():
    data = CONFIGS["tiny"].to_dict()
    for k in ("detail_levels", "detail_min_res", "detail_max_res", "detail_log2_table", "detail_features",
              "detail_hidden"):
        data.pop(k)  # a model folder written before the detail existed
    assert GeneratorConfig.from_dict(data).detail_levels == 0
    assert Generator(CONFIGS["tiny"]).detail is None
    cfg = _tiny_with_detail().config
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="detail_min_res"):
        dataclasses.replace(cfg, detail_min_res=128, detail_max_res=64)


def test_a_new_detail_stage_changes_nothing_and_carries_the_weights_over():
    G = Generator(CONFIGS["tiny"]).eval()
    D = generator_with_detail(G, detail_levels=2, detail_min_res=4, detail_max_res=16, detail_log2_table=8,
                              detail_hidden=8)
    assert D.detail is not None and G.detail is None
    ws = G.codes_from_seeds([3])
    c = torch.as_tensor(C.orbit_camera(0.3).label()).float()[None]
    with torch.no_grad():
        a, b = G(ws, c), D(ws, c)
    assert torch.equal(a.image, b.image) and torch.equal(a.semantic, b.semantic)


def test_detail_changes_only_the_head_rgb():
    G = _tiny_with_detail()
    with torch.no_grad():
        G.detail.out.bias.normal_()  # a detail that does something everywhere it may
    ws = G.codes_from_seeds([1, 2])
    c = torch.as_tensor(C.orbit_camera(0.2).label()).float()[None].expand(2, -1).contiguous()
    with torch.no_grad():
        planes = G.planes(ws)
        with_detail = G.render(planes, c, ws)
        without = G.render(planes, c, ws, detail=False)  # what inversion fits (InversionPolicy.fit_detail)
        detail, G.detail = G.detail, None
        assert torch.equal(G.render(planes, c, ws).image, without.image)
        G.detail = detail
    assert torch.equal(with_detail.semantic, without.semantic)
    assert torch.equal(with_detail.depth, without.depth)
    change = (with_detail.image - without.image).abs().amax(1)
    assert float(change.max()) > 1e-3
    # the matte gates it: where the semantics say background for sure, nothing changes
    sem = torch.zeros(1, 19, 16, 16)
    sem[:, 0, :, :8] = 40.0
    sem[:, 4, :, 8:] = 40.0
    img = torch.rand(1, 3, 16, 16)
    out = G.detail(img, sem, torch.full((1, 1, 4, 4), 2.6), torch.ones(1, 1, 4, 4), c[:1], torch.full((1, 1, 1), 3.3))
    assert torch.equal(out[..., :8], img[..., :8]) and not torch.equal(out[..., 8:], img[..., 8:])


def test_fast_renderer_matches_the_reference_with_detail():
    G = _tiny_with_detail()
    with torch.no_grad():
        G.detail.out.bias.normal_(0, 0.2)
    ws = G.codes_from_seeds([5])
    c = torch.as_tensor(C.orbit_camera(-0.2).label()).float()[None]
    with torch.no_grad():
        planes = G.planes(ws)
        ref = G.render(planes, c, ws)
        fast = fast_render.render_quality(G, planes, c, ws, "full")
    assert fast_render.psnr(fast.image, ref.image) > 40


def test_pivotal_tuning_leaves_the_detail_alone():
    from ide3d_core.inversion import InversionPolicy, invert

    G = _tiny_with_detail()
    ws = G.codes_from_seeds([7])
    c = torch.as_tensor(C.orbit_camera(0.1).label()).float()[None]
    with torch.no_grad():
        target = G(ws, c).image.clamp(-1, 1) * 0.8
    res = invert(G, target, camera=c[0].numpy(), policy=InversionPolicy(use_encoder=False, optimise_steps=2,
                                                                       tune_steps=2, coarse_resolution=0))
    tuned = res.generator
    for (n, a), (_, b) in zip(G.detail.named_parameters(), tuned.detail.named_parameters()):
        assert torch.equal(a, b), n
    assert any(not torch.equal(a, b) for a, b in zip(G.superresolution.parameters(),
                                                     tuned.superresolution.parameters()))


def _sharpness(img: torch.Tensor, mask: torch.Tensor) -> float:
    lap = F.conv2d(img.mean(1, keepdim=True), LAPLACE, padding=1).abs()[:, 0]
    return float(lap[mask].mean())


def _textured_sphere(yaw_deg: float, pitch_deg: float, res: int, radius: float = 0.3):
    """Exact render of a sphere whose colour is a solid texture of the 3D point (stripes 40 per unit in x,
    a checker of 25 per unit in y and z: detail a 16 px field cannot hold): ``(image [1, 3, res, res],
    depth [1, 1, res, res] (far = 3.3 off the sphere), mask [1, 1, res, res], camera [1, 25])``."""
    cam = torch.as_tensor(C.orbit_camera(math.radians(yaw_deg), math.radians(pitch_deg)).label()).float()[None]
    o, d = C.rays_from_labels(cam, res, res)
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - radius ** 2)
    hit = disc > 0
    t = torch.where(hit, -b - disc.clamp_min(0).sqrt(), torch.full_like(b, 3.3))
    p = o + t[..., None] * d
    tex = 0.5 + 0.3 * torch.sin(40 * math.tau * p[..., 0]) * (torch.sin(25 * math.tau * p[..., 1])
                                                                * torch.sin(25 * math.tau * p[..., 2])).sign()
    rgb = torch.stack([tex, 0.6 * tex + 0.2, 1.0 - tex], -1) * 2 - 1
    rgb = torch.where(hit[..., None], rgb, torch.full_like(rgb, -0.5))
    img = rgb.view(1, res, res, 3).permute(0, 3, 1, 2)
    return img, t.view(1, 1, res, res), hit.float().view(1, 1, res, res), cam


def _sphere_pixels(yaw: float, pitch: float) -> DetailPixels:
    """Pixels of the sphere as a perfect 16 px field gives them (bicubic base, 16 px depth and mask) at 64 px,
    against its exact 64 px render (box-filtered from 256 px)."""
    img, _, mask, cam = _textured_sphere(yaw, pitch, 256)
    truth = F.avg_pool2d(img, 4)
    _, lo_depth, lo_mask, _ = _textured_sphere(yaw, pitch, 16)
    lo_img = F.avg_pool2d(_textured_sphere(yaw, pitch, 128)[0], 8)  # the 16 px render, anti-aliased
    base = F.interpolate(lo_img, size=64, mode="bicubic", align_corners=False)
    points = surface_points(lo_depth, lo_mask, cam, torch.full((1, 1, 1), 3.3), 64)
    head = F.avg_pool2d(mask, 4)[:, 0] > 0.999
    probs = torch.zeros(1, 19, 64, 64)
    probs[:, 1] = 1.0
    k = head.reshape(-1)
    flat = lambda x: x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])[k]  # noqa: E731
    return DetailPixels(points.reshape(-1, 3)[k], flat(base), flat(base), torch.ones(int(k.sum())),
                        flat(probs).half(), flat(truth))


def test_fit_learns_a_solid_texture_and_shows_it_in_views_it_never_saw():
    """Independent truth: an analytic sphere with a solid texture (the procedural heads' kind of detail: a
    function of the 3D point). Trained on four views, the detail must put the texture back in two other
    views far better than the perfect 16 px field upsampled bicubically, and about as sharp as the truth."""
    torch.manual_seed(0)
    train = DetailPixels.cat([_sphere_pixels(y, p) for y, p in ((-40, 0), (-10, 15), (20, -10), (45, 5))])
    test = DetailPixels.cat([_sphere_pixels(y, p) for y, p in ((0, 0), (30, 10))])
    det = SurfaceDetail(19, 1.0, levels=6, min_res=16, max_res=256, log2_table=14, features=2, hidden=32)
    fit_detail(det, train, DetailFitConfig(steps=400, pixels=4096))
    with torch.no_grad():
        pred = predict(det, test)
    mse = lambda x: float(((x - test.target) ** 2).mean())  # noqa: E731
    gain_db = 10 * math.log10(mse(test.base) / mse(pred))
    assert gain_db > 3.0, gain_db


def test_train_detail_writes_a_new_model_folder_and_leaves_the_source_alone(tmp_path, capsys):
    from blender_helpers import make_tiny_model

    from ide3d_core.cli import main
    from ide3d_core.networks import load_generator

    src = make_tiny_model(tmp_path / "tiny")
    before = (src / "generator.safetensors").read_bytes()
    out = tmp_path / "with_detail"
    assert main(["train-detail", "--model", str(src), "--out", str(out), "--heads", "1", "--views", "1",
                 "--steps", "3"]) == 0
    G = load_generator(out)
    assert G.detail is not None and G.config.detail_levels > 0
    assert (out / "detail_fit.json").is_file() and (out / "encoders" / "standard" / "config.json").is_file()
    assert (src / "generator.safetensors").read_bytes() == before and not (src / "detail_fit.json").exists()
    # the rest of the generator is the source's (written in float16)
    plain, new = load_generator(src).state_dict(), G.state_dict()
    for k, v in plain.items():
        assert torch.equal(v.half().to(v.dtype), new[k]), k
    assert main(["train-detail", "--model", str(src), "--out", str(out), "--heads", "1"]) != 0
    assert "exists" in capsys.readouterr().err
