# SPDX-License-Identifier: GPL-3.0-or-later
"""The environment background (ide3d_core/networks/background.py, training/autodecoder/background_fit.py):
the matte's analytic limits, the generator and fast-renderer integration, the shape/texture split, and a
fit on the procedural heads' own backdrops that must predict views it never saw better than a flat colour."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ide3d_core import cameras as C
from ide3d_core.networks import Generator
from ide3d_core.networks.background import (EnvironmentBackground, composite_background, encode_directions,
                                            parameter_count)
from ide3d_core.networks.config import CONFIGS, GeneratorConfig
from training.autodecoder.background_fit import (BackgroundFitConfig, backdrop_pixels, backdrop_psnr,
                                                 fit_background)


def _tiny_with_background() -> Generator:
    return Generator(dataclasses.replace(CONFIGS["tiny"], background_hidden=16)).eval()


def test_composite_is_the_image_on_the_head_and_the_backdrop_off_it():
    image, backdrop = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    sem = torch.zeros(1, 19, 4, 4)
    sem[:, 0, :, :2] = 40.0  # left half: background for sure
    sem[:, 5, :, 2:] = 40.0  # right half: a head class for sure
    out = composite_background(image, sem, backdrop)
    assert torch.allclose(out[..., :2], backdrop[..., :2], atol=1e-6)
    assert torch.allclose(out[..., 2:], image[..., 2:], atol=1e-6)
    even = composite_background(image, torch.zeros(1, 19, 4, 4), backdrop)  # p_bg = 1/19
    assert torch.allclose(even, image + (backdrop - image) / 19, atol=1e-6)


def test_direction_encoding_is_periodic_per_octave():
    d = torch.tensor([[0.25, -0.5, 0.75]])
    e = encode_directions(d, octaves=3)
    assert e.shape == (1, 3 + 18)
    assert torch.allclose(e[0, :3], d[0])
    assert torch.allclose(e[0, 3:6], torch.sin(math.pi * d[0]), atol=1e-6)  # octave 0
    assert torch.allclose(e[0, 12:15], torch.cos(math.pi * d[0]), atol=1e-6)


def test_parameter_count_matches_the_module():
    for w_dim, hidden in ((32, 16), (512, 64)):
        net = EnvironmentBackground(w_dim, hidden)
        assert parameter_count(w_dim, hidden) == sum(p.numel() for p in net.parameters())


def test_config_key_is_optional_and_round_trips():
    data = CONFIGS["tiny"].to_dict()
    data.pop("background_hidden")  # a model folder written before the background existed
    assert GeneratorConfig.from_dict(data).background_hidden == 0
    cfg = dataclasses.replace(CONFIGS["tiny"], background_hidden=16)
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    assert Generator(CONFIGS["tiny"]).background is None
    with pytest.raises(ValueError, match="background_hidden"):
        dataclasses.replace(CONFIGS["tiny"], background_hidden=-1)


def test_generator_lays_the_backdrop_behind_the_head():
    # (the fast renderer against the reference with a backdrop: tests/test_fast_render.py)
    G = _tiny_with_background()
    with torch.no_grad():
        ws = G.codes_from_seeds([0, 1])
        c = torch.from_numpy(C.stack_labels([C.orbit_camera(0.3, 0.0), C.orbit_camera(-0.5, 0.2)]))
        ref = G(ws, c)
        backdrop = G.background.render(c, G.background_code(ws), G.img_resolution)
        p_bg = ref.semantic.softmax(1)[:, :1]
    # where the matte says background the image is the backdrop, where it says head it is not
    far = p_bg > 0.99
    if far.any():
        assert (ref.image - backdrop).abs().amax(1, keepdim=True)[far].max() < 0.05
    with pytest.raises(ValueError, match="needs the cameras"):
        n = G.neural_resolution
        G.finish_render(torch.zeros(1, n * n, G.config.feature_channels), torch.zeros(1, n * n, 19),
                        torch.zeros(1, n * n, 1), torch.zeros(1, n * n, 1), ws[:1], n)


def test_backdrop_depends_on_the_texture_code_only():
    G = _tiny_with_background()
    with torch.no_grad():
        ws = G.codes_from_seeds([0])
        other = ws.clone()
        other[:, :G.num_shape_ws] += 1.0  # shape code changed, texture code kept
        c = torch.from_numpy(C.stack_labels([C.orbit_camera(0.2, 0.1)]))
        a = G.background.render(c, G.background_code(ws), 32)
        b = G.background.render(c, G.background_code(other), 32)
        textured = ws.clone()
        textured[:, G.num_shape_ws:] += 1.0
        t = G.background.render(c, G.background_code(textured), 32)
    assert torch.equal(a, b)
    assert not torch.allclose(a, t)


def test_the_backdrop_pulls_on_neither_codes_nor_cameras():
    """Code optimisation and (multi-view) camera refinement see the backdrop but get no gradient from it;
    a one-view inversion asks for the camera's (``camera_grad``; ``EnvironmentBackground.render`` says
    why); the patterns and mixing always learn."""
    net = EnvironmentBackground(8, 8)
    w = torch.randn(1, 8, requires_grad=True)
    for camera_grad in (False, True):
        c = torch.from_numpy(C.stack_labels([C.orbit_camera(0.3, 0.1)])).float().requires_grad_(True)
        net.render(c, w, 16, camera_grad).square().sum().backward()
        assert w.grad is None
        assert (c.grad is not None and float(c.grad.abs().sum()) > 0) == camera_grad
    assert net.mix.bias.grad is not None and float(net.fc0.weight.grad.abs().sum()) > 0


def test_fit_represents_procedural_backdrops():
    """Truth: the procedural renderer's backdrops (stripes, blotches, gradients under a grain: an environment
    at infinity). Each head has two views among the yaws -30 .. 30 degrees. Fitted with a free mixing per
    head, the shared patterns must beat each head's mean backdrop colour on those views by a clear margin
    (they draw the patterns, not just the colours); and a mixing solved from those two views alone, as
    inversion does, must predict a third, unseen view better than that flat colour."""
    from training.autodecoder.background_fit import one_view_psnr
    from training.procedural import render_heads, sample_heads

    torch.manual_seed(0)
    n, res = 48, 48
    heads = sample_heads(n, torch.Generator().manual_seed(5), "cpu")
    grid = (-30.0, -15.0, 0.0, 15.0, 30.0)
    # head h: train on grid[h], grid[h + 2]; test on grid[h + 1] (indices mod 5)
    per_head = [(grid[h % 5], grid[(h + 2) % 5], grid[(h + 1) % 5]) for h in range(n)]
    imgs, labs, cams = [], [], []
    for k in range(3):
        cam = torch.stack([torch.from_numpy(C.orbit_camera(math.radians(per_head[h][k]), 0.05).label()).float()
                           for h in range(n)])
        r = render_heads(heads, cam, res)
        imgs.append(r.image.float()), labs.append(r.labels), cams.append(cam)
    images, labels, cameras = torch.stack(imgs, 1), torch.stack(labs, 1), torch.stack(cams, 1)
    train = backdrop_pixels(images[:, :2], labels[:, :2], cameras[:, :2])
    test = backdrop_pixels(images[:, 2:], labels[:, 2:], cameras[:, 2:])
    codes = torch.randn(n, 32, generator=torch.Generator().manual_seed(1))  # distinct codes per head
    net = EnvironmentBackground(32, 32)
    torch.manual_seed(0)
    stats = fit_background(net, codes, train, BackgroundFitConfig(steps=1500, views=8, pixels=512, lr=3e-3,
                                                                  holdout=0))
    unseen = one_view_psnr(net, codes, train, test, strength=1e-4)

    def flat_psnr(pix):  # each head's mean backdrop colour of its training views
        se, count = 0.0, 0
        for h in range(n):
            t = pix.rgb[pix.head == h]
            se += float((t - train.rgb[train.head == h].mean(0)).square().sum())
            count += t.numel()
        return 10 * math.log10(4.0 / (se / count))

    flat, flat_unseen = flat_psnr(train), flat_psnr(test)
    print(f"seen views: fitted {stats['train_psnr']:.2f} dB vs flat {flat:.2f}; unseen view, solved from the "
          f"seen ones: {unseen:.2f} vs {flat_unseen:.2f}")
    assert stats["steps"] == 1500 and math.isfinite(stats["code_train_psnr"])
    assert stats["train_psnr"] > flat + 3.0, f"seen views: fitted {stats['train_psnr']:.2f} dB vs flat {flat:.2f} dB"
    assert unseen > flat_unseen + 3.0, f"unseen view: solved {unseen:.2f} dB vs flat colour {flat_unseen:.2f} dB"


def test_solve_mixing_recovers_an_exact_mixing_and_falls_back_on_the_prior():
    """Analytic truth: colours made by a known mixing of known patterns are solved back exactly; where the
    pixels cannot tell two patterns apart (identical columns), the split between them comes from the prior."""
    from ide3d_core.networks.background import solve_mixing

    g = torch.Generator().manual_seed(0)
    phi = torch.randn(500, 4, generator=g)
    m = torch.randn(3, 5, generator=g)
    rgb = phi @ m[:, :4].T + m[:, 4]
    assert torch.allclose(solve_mixing(phi, rgb, torch.zeros(3, 5), strength=0.0), m, atol=1e-4)
    twin = torch.cat([phi[:, :1], phi[:, :1]], 1)  # two identical patterns: only their sum is observable
    rgb2 = twin[:, :1] @ torch.tensor([[1.0, -2.0, 0.5]])  # the sum's weights
    prior = torch.tensor([[0.7, 0.3, 0.0], [-1.0, -1.0, 0.0], [0.5, 0.0, 0.0]])
    got = solve_mixing(twin, rgb2, prior, strength=1e-3)
    assert torch.allclose(got[:, 0] + got[:, 1], torch.tensor([1.0, -2.0, 0.5]), atol=2e-3)
    # the split: the prior's difference between the twins is kept (the data only fix the sum)
    assert torch.allclose(got[:, 0] - got[:, 1], prior[:, 0] - prior[:, 1], atol=2e-3)
    with pytest.raises(ValueError):
        solve_mixing(phi, rgb[:, :2], torch.zeros(3, 5))


def test_fix_mixing_and_the_code_map():
    """``fix_mixing`` gives every code exactly the asked-for mixing; the ridge code map recovers an exactly
    linear relation between codes and mixings."""
    from training.autodecoder.background_fit import set_code_map

    net = EnvironmentBackground(6, 8, patterns=2)
    w = torch.randn(4, 6)
    target = torch.randn(3, 3)
    net.fix_mixing(target)
    assert torch.allclose(net.mixing(w), target.expand(4, -1, -1), atol=1e-6)
    codes = torch.randn(40, 6, generator=torch.Generator().manual_seed(2))
    a, b = torch.randn(9, 6), torch.randn(9)
    mixings = (codes @ a.T + b).reshape(40, 3, 3)
    set_code_map(net, codes, mixings, ridge=0.0)
    assert torch.allclose(net.mixing(codes), mixings, atol=1e-4)


def test_pivotal_tuning_fits_a_new_backdrop():
    """A photo of the bundled model's own head (with its background, or a new one) in front of a flat colour
    the backdrop has never drawn: inversion (the backdrop solved from the photo's background pixels, then
    tuned) must bring the backdrop pixels most of the way to that colour, say how many pixels it used, and
    keep that backdrop whatever later happens to the texture code."""
    from ide3d_core.inversion import InversionPolicy, invert
    from ide3d_core.model_loading import BUNDLED_MODEL_DIR
    from ide3d_core.networks.io import load_generator
    from training.autodecoder.background_fit import generator_with_background

    if not (BUNDLED_MODEL_DIR / "config.json").is_file():
        pytest.skip("no bundled model (an untrained field has no empty space)")
    G = generator_with_background(load_generator(BUNDLED_MODEL_DIR), 16)
    colour = torch.tensor([0.6, -0.4, 0.2])
    cam = C.orbit_camera(0.2, 0.0).label()
    c = torch.from_numpy(cam)[None]
    with torch.no_grad():
        ws = G.codes_from_seeds([0])
        out = G(ws, c)
    far = (out.semantic.softmax(1)[:, :1] > 0.99).expand(-1, 3, -1, -1)
    assert far.float().mean() > 0.2, "the test needs backdrop pixels"
    target = torch.where(far, colour[None, :, None, None].expand_as(out.image), out.image)
    before = float((out.image - target).abs()[far].mean())
    policy = InversionPolicy(use_encoder=False, optimise_steps=3, tune_steps=12, refine_pose=False,
                             plateau_patience=2)
    res = invert(G, target[0], camera=cam, policy=policy)
    with torch.no_grad():
        after_img = res.generator(res.ws, c).image
    after = float((after_img - target).abs()[far].mean())
    assert after < 0.2 * before, f"backdrop L1 {before:.3f} -> {after:.3f}"
    assert any(n.startswith("backdrop solved from") for n in res.notes), res.notes
    assert res.delta is not None
    # the portrait's backdrop is its own: a restyle of its texture code does not move it
    restyled = res.ws.clone()
    restyled[:, G.num_shape_ws:] += 0.5
    with torch.no_grad():
        bg = [res.generator.background.render(c, res.generator.background_code(w), 64) for w in (res.ws, restyled)]
    assert torch.allclose(bg[0], bg[1], atol=2e-3)  # the float16 weight delta: not bit-exact


def test_a_backdrop_solve_that_explains_little_can_be_refused():
    """The solve before the cameras are refined (ide3d_core.inversion.backdrop.INITIAL_MIN_PSNR): the
    model's own backdrop is explained almost exactly and solved; noise that no mixing of the patterns can
    draw scores far below the threshold and, with ``min_psnr``, leaves the generator untouched."""
    from ide3d_core.inversion.backdrop import INITIAL_MIN_PSNR, solve_backdrop

    G = _tiny_with_background()
    cam = torch.from_numpy(C.stack_labels([C.orbit_camera(0.2, 0.0)]))
    with torch.no_grad():
        ws = G.codes_from_seeds([0])
        own = G.background.render(cam, G.background_code(ws), 32)  # [1, 3, 32, 32]
    labels = torch.zeros(1, 32, 32, dtype=torch.long)  # all background
    out, pixels, db = solve_backdrop(G, own, labels, cam, ws, min_psnr=INITIAL_MIN_PSNR)
    assert out is not G and pixels > 0 and db > 40.0, db
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out, pixels, db = solve_backdrop(G, noise, labels, cam, ws, min_psnr=INITIAL_MIN_PSNR)
    assert out is G and pixels == 0 and db < INITIAL_MIN_PSNR, db
    out, pixels, _ = solve_backdrop(G, noise, labels, cam, ws)  # no threshold: solved as before
    assert out is not G and pixels > 0
