# SPDX-License-Identifier: GPL-3.0-or-later
"""Hybrid inversion on a tiny generator: one view (a procedural head with its exact mask, and the generator's
own renders), several views (robust weights, odd views, views without a face), the document's source views."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ide3d_core.cameras import Camera
from ide3d_core.encoders import HybridEncoder, config_for_generator
from ide3d_core.inversion import InversionPolicy, invert, psnr
from ide3d_core.portrait import decode_portrait, encode_portrait
from ide3d_core.progress import CancelToken, Cancelled
from test_portrait_fixtures import label, make_generator


@pytest.fixture(scope="module")
def setup():
    """The tiny generator and a procedural head's exact render and label map (a mask with a face)."""
    from training.procedural import render_heads, sample_heads

    g = make_generator()
    ws_true = g.codes_from_seeds([3]).detach()
    cam = label(20.0, -5.0)
    r = render_heads(sample_heads(1, torch.Generator().manual_seed(4), "cpu"), cam, g.img_resolution)
    return g, ws_true, cam, r.image.float(), r.labels[0].numpy().astype(np.uint8)


def test_optimisation_lowers_the_loss_and_tuning_raises_psnr(setup):
    g, ws_true, cam, target, mask = setup
    seen = []
    policy = InversionPolicy(optimise_steps=12, tune_steps=12, optimise_lr=0.05, tune_lr=2e-3, ssim_weight=0.2,
                             plateau_patience=0)
    res = invert(g, target, mask=mask, camera=cam[0].numpy(), encoder=None, policy=policy,
                 progress=lambda d, t, m: seen.append((d, t)))
    st = res.stages
    assert st["optimise"]["loss"] < st["init"]["loss"]
    assert st["tune"]["psnr"] > st["optimise"]["psnr"] + 0.1
    assert seen[-1][0] == seen[-1][1] == 25 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # independent check of the reported PSNR: render the result ourselves (at its refined camera)
    assert Camera.from_label(res.camera).position is not None
    with torch.no_grad():
        img = res.generator(res.ws, torch.from_numpy(res.camera)[None]).image
    assert float(psnr(img, target)) == pytest.approx(st["tune"]["psnr"], abs=1e-3)
    assert res.mask_source == "given" and np.array_equal(res.mask, mask)
    # the tuned generator is exactly what the stored delta rebuilds, also after a document round trip
    p = decode_portrait(encode_portrait(res.portrait(g, source_mask=mask)))
    rebuilt = p.generator(g)
    for (n1, t1), (n2, t2) in zip(res.generator.state_dict().items(), rebuilt.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2)
    assert torch.equal(p.ws, res.ws)
    # the base generator was not touched by tuning
    assert all(not torch.equal(a, b) for (_, a), (_, b) in
               zip(g.state_dict().items(), res.generator.state_dict().items()) if _ in res.delta.deltas)


def test_w_space_keeps_one_code_and_encoder_predicts_the_camera(setup):
    g, _, _, target, _ = setup
    torch.manual_seed(0)
    enc = HybridEncoder(config_for_generator(g, "tiny"), g.mapping.w_avg).eval()
    res = invert(g, target, encoder=enc, policy=InversionPolicy(code_space="w", optimise_steps=2, tune_steps=0))
    assert torch.equal(res.ws, res.ws[:, :1].expand_as(res.ws))
    Camera.from_label(res.camera)  # a valid rigid camera from the predicted yaw/pitch
    assert res.mask_source == "self" and res.delta is None and res.generator is g
    assert res.mask.shape == (g.img_resolution, g.img_resolution)


def test_group_space_keeps_one_shape_and_one_texture_code(setup):
    """code_space="group": one w_s repeated over the shape layers and one w_t over the texture layers (the
    layout an auto-decoded model was trained with), started from the per-group mean of the initial codes."""
    g, _, cam, target, mask = setup
    policy = InversionPolicy(code_space="group", optimise_steps=4, tune_steps=0, plateau_patience=0,
                             coarse_resolution=0)
    res = invert(g, target, mask=mask, camera=cam[0].numpy(), policy=policy)
    ns = g.num_shape_ws
    w_s, w_t = res.ws[:, :ns], res.ws[:, ns:]
    assert torch.equal(w_s, w_s[:, :1].expand_as(w_s)) and torch.equal(w_t, w_t[:, :1].expand_as(w_t))
    assert not torch.equal(res.ws, res.ws_init) and res.stages["optimise"]["loss"] < res.stages["init"]["loss"]


def test_uint8_photo_of_another_size_and_cancel(setup):
    g, _, cam, target, _ = setup
    photo = ((target[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    photo = np.repeat(np.repeat(photo, 2, 0), 2, 1)  # twice the generator's size
    tok = CancelToken()
    calls = []

    def progress(done, total, msg):
        calls.append(done)
        if done >= 3:
            tok.cancel()

    with pytest.raises(Cancelled):
        invert(g, photo, camera=cam[0].numpy(), policy=InversionPolicy(optimise_steps=10, tune_steps=5),
               progress=progress, cancel=tok)
    assert max(calls) == 3
    with pytest.raises(ValueError, match="code_space"):
        InversionPolicy(code_space="z")


def test_parser_gives_the_mask_when_none_is_given(setup):
    g, _, cam, target, mask = setup
    calls = []

    def parser(image):
        calls.append(tuple(image.shape))
        return mask

    res = invert(g, target, camera=cam[0].numpy(), parser=parser,
                 policy=InversionPolicy(optimise_steps=0, tune_steps=0))
    assert calls == [(1, 3, g.img_resolution, g.img_resolution)]
    assert res.mask_source == "parser" and np.array_equal(res.mask, mask)


# ------------------------------------------------------------------------------------------------
# Several views
# ------------------------------------------------------------------------------------------------

def test_view_helpers_against_hand_values():
    from ide3d_core.inversion.views import has_face, odd_views, primary_view, robust_weights
    from ide3d_core.labels import ID

    # Cauchy weights: equal losses -> equal weights; a view at 10x the median counts ~(2/10)^2 of one
    w = robust_weights(torch.tensor([1.0, 1.0, 1.0, 10.0]), 2.0)
    assert torch.allclose(w[:3], w[0].expand(3)) and float(w.sum()) == pytest.approx(1.0)
    assert float(w[3] / w[0]) == pytest.approx((1 + 0.25) / (1 + 25), rel=1e-5)
    assert torch.equal(robust_weights(torch.tensor([3.0]), 2.0), torch.tensor([1.0]))
    assert torch.allclose(robust_weights(torch.tensor([1.0, 9.0]), 0.0), torch.tensor([0.5, 0.5]))
    # the most frontal camera direction wins (yaw 5 / pitch 5 beats yaw -30 and yaw 8)
    assert primary_view([(-30.0, 0.0), (5.0, 5.0), (8.0, 0.0)]) == 1
    assert primary_view([(-30.0, 0.0), (30.0, 0.0)]) == 0
    # odd views: more than the margin below the median of the others; with two views only the worse one
    assert odd_views([24.0, 23.5, 15.0], 4.0) == [2]
    assert odd_views([24.0, 23.5, 22.0], 4.0) == []
    assert odd_views([24.0, 18.0], 4.0) == [1] and odd_views([24.0], 4.0) == []
    face = np.zeros((32, 32), np.uint8)
    assert not has_face(face)
    face[10:20, 10:20] = ID["skin"]
    assert has_face(face)


def test_tuning_warm_up_against_hand_values(setup):
    from ide3d_core.inversion.procedure import tune_lr_at

    # 10 steps, a 30 % ramp: 3 ramp steps at 1/3, 2/3, 3/3 of the rate, then the full rate
    p = InversionPolicy(tune_steps=10, tune_lr=3e-3, tune_rampup=0.3)
    assert [tune_lr_at(k, p) for k in range(5)] == pytest.approx([1e-3, 2e-3, 3e-3, 3e-3, 3e-3])
    assert tune_lr_at(0, InversionPolicy(tune_lr=2e-3, tune_rampup=0.0)) == 2e-3
    for bad in ({"tune_rampup": 1.5}, {"tune_coarse_fraction": -0.1}):
        with pytest.raises(ValueError):
            InversionPolicy(**bad)
    # one coarse tuning step runs, and (Adam's first step moves a weight by at most its rate) moves no
    # weight by more than tune_lr
    g, _, cam, img, mask = setup
    one = InversionPolicy(use_encoder=False, optimise_steps=0, tune_steps=1, tune_lr=1e-2, tune_rampup=1.0,
                          tune_coarse_fraction=1.0, coarse_resolution=8, plateau_patience=0)
    res = invert(g, img, mask=mask, camera=cam[0].numpy(), policy=one)
    moved = max(float(d.float().abs().max()) for d in res.delta.deltas.values())
    assert 0.0 < moved <= 1e-2 * 1.01  # fp16 delta rounding
    assert res.stages["tune"]["steps"] == 1


def _own_views(g, ws, yaws):
    with torch.no_grad():
        outs = [g(ws, label(y)) for y in yaws]
    return [(o.image, label(y)[0].numpy()) for o, y in zip(outs, yaws)]


def test_one_view_is_the_n1_case_and_several_views_share_codes(setup):
    from ide3d_core.inversion import InversionView, invert_views

    g, _, cam, target, mask = setup
    policy = InversionPolicy(optimise_steps=3, tune_steps=2, plateau_patience=0, coarse_resolution=8)
    a = invert(g, target, mask=mask, camera=cam[0].numpy(), policy=policy)
    b = invert_views(g, [InversionView(target, mask, cam[0].numpy())], policy=policy)
    assert torch.equal(a.ws, b.ws) and a.stages["tune"]["psnr"] == b.stages["tune"]["psnr"]
    assert len(a.views) == 1 and a.views[0].weight == 1.0 and a.primary == 0
    # three views: one code set; the primary view is the most frontal one; every view has its residual
    from training.procedural import render_heads, sample_heads

    heads = sample_heads(1, torch.Generator().manual_seed(4), "cpu")
    views = []
    for y in (-30.0, 5.0, 30.0):
        r = render_heads(heads, label(y), g.img_resolution)
        views.append(InversionView(r.image.float(), r.labels[0].numpy().astype(np.uint8), label(y)[0].numpy(),
                                   f"yaw {y:+.0f}"))
    seen = []
    res = invert_views(g, views, policy=policy, progress=lambda d, t, m: seen.append((d, t)))
    assert res.primary == 1 and np.array_equal(res.camera, res.views[1].camera)
    assert np.allclose(res.camera, views[1].camera, atol=0.1) and np.array_equal(res.mask, views[1].mask)
    assert seen[-1][0] == seen[-1][1] == 6
    assert [v.name for v in res.views] == ["yaw -30", "yaw +5", "yaw +30"] and all(v.used for v in res.views)
    assert sum(v.weight for v in res.views) == pytest.approx(1.0)
    for v, view in zip(res.views, views):  # the reported residual is the render's PSNR against that view
        with torch.no_grad():
            img = res.generator(res.ws, torch.from_numpy(v.camera)[None]).image  # its refined camera
        assert float(psnr(img, view.image)) == pytest.approx(v.psnr["tune"], abs=1e-3)
        assert v.yaw == pytest.approx(float(v.name.split()[1]), abs=2.0)


def test_side_views_fit_the_exact_side_renders_better_than_one_front_view(setup):
    """Independent truth: a procedural head's exact renders. Inverting yaw -30/0/+30 together (one code set,
    one tuned generator) must reproduce the exact +-30 renders better than inverting the front view alone
    with the same policy (same steps), and the front view no worse than 1 dB below the one-view fit."""
    from ide3d_core.inversion import InversionView, invert_views
    from training.procedural import render_heads, sample_heads

    g, _, _, _, _ = setup
    heads = sample_heads(1, torch.Generator().manual_seed(4), "cpu")
    truth = {}
    for y in (-30.0, 0.0, 30.0):
        r = render_heads(heads, label(y), g.img_resolution)
        truth[y] = (r.image.float(), r.labels[0].numpy().astype(np.uint8), label(y)[0].numpy())
    policy = InversionPolicy(optimise_steps=4, tune_steps=16, optimise_lr=0.05, tune_lr=1e-2, plateau_patience=0,
                             coarse_resolution=0)
    one = invert_views(g, [InversionView(*truth[0.0])], policy=policy)
    three = invert_views(g, [InversionView(*truth[y]) for y in (-30.0, 0.0, 30.0)], policy=policy)

    def score(res, y):
        with torch.no_grad():
            return float(psnr(res.generator(res.ws, torch.from_numpy(truth[y][2])[None]).image, truth[y][0]))

    for y in (-30.0, 30.0):
        assert score(three, y) > score(one, y) + 0.5, y
    assert score(three, 0.0) > score(one, 0.0) - 1.0


def test_a_view_of_someone_else_is_named_and_weighted_down(setup):
    """Three renders of one code and a fourth view that is no render of it (a white frame): the fourth gets
    the smallest weight and is named in a note."""
    from ide3d_core.inversion import InversionView, invert_views

    g, ws_true, _, _, _ = setup
    own = _own_views(g, ws_true, (-20.0, 0.0, 20.0))
    views = [InversionView(img, None, cam, f"own {k}") for k, (img, cam) in enumerate(own)]
    views.append(InversionView(torch.ones_like(own[1][0]), None, own[1][1], "stranger"))
    res = invert_views(g, views, policy=InversionPolicy(use_encoder=False, optimise_steps=0, tune_steps=0))
    w = [v.weight for v in res.views]
    assert int(np.argmin(w)) == 3 and w[3] < 0.5 * min(w[:3])
    assert any(n.startswith("stranger fits far worse") for n in res.notes)
    assert res.views[3].note and not any(v.note for v in res.views[:3])


def test_views_without_a_face_are_skipped_and_none_is_an_error(setup):
    from ide3d_core.inversion import InversionView, NoUsableViews, invert_views

    g, _, cam, target, mask = setup
    empty = np.zeros_like(mask)
    policy = InversionPolicy(optimise_steps=1, tune_steps=0)
    res = invert_views(g, [InversionView(target, empty, cam[0].numpy(), "back"),
                           InversionView(target, mask, cam[0].numpy(), "front")], policy=policy)
    assert [v.used for v in res.views] == [False, True] and res.primary == 1
    assert "back: no face in its mask; view skipped" in res.notes
    with pytest.raises(NoUsableViews, match="none of the 2 view"):
        invert_views(g, [InversionView(target, empty, cam[0].numpy())] * 2, policy=policy)
    with pytest.raises(NoUsableViews):
        invert_views(g, [], policy=policy)


def test_portrait_records_every_source_view(setup):
    from ide3d_core.inversion import InversionView, invert_views

    g, _, cam, target, mask = setup
    photo = ((target[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    cams = [label(y)[0].numpy() for y in (-25.0, 0.0)]
    res = invert_views(g, [InversionView(photo, mask, c) for c in cams],
                       policy=InversionPolicy(optimise_steps=1, tune_steps=1))
    sources = [(photo, mask), (photo[::-1].copy(), None)]
    p = decode_portrait(encode_portrait(res.portrait(g, source_image=photo, source_mask=mask, sources=sources)))
    assert len(p.source_views) == 2 and np.array_equal(p.source_views[1].image, photo[::-1])
    assert p.source_views[1].mask is None and np.array_equal(p.source_views[0].mask, mask)
    assert np.array_equal(p.source_views[0].camera, res.views[0].camera) and p.source_views[0].params["name"] == "view 0"
    assert np.allclose(p.source_views[0].camera, cams[0], atol=0.1)  # refined a little
    assert len(p.history[0].params["views"]) == 2
    # one view: the document is a single-view document (no source views)
    one = invert(g, photo, mask=mask, camera=cams[1], policy=InversionPolicy(optimise_steps=0, tune_steps=0))
    assert decode_portrait(encode_portrait(one.portrait(g, source_image=photo, sources=[(photo, mask)]))).source_views == ()


def test_bf16_autocast_policy_tunes_like_float32(setup):
    """``autocast="all"``: the same procedure under bfloat16 autocast (where the CPU has native bf16) still
    lowers the loss and lands near the float32 run; on other CPUs it is the float32 run exactly."""
    from ide3d_core.fast_render import network_dtype

    g, _, cam, target, mask = setup
    base = dict(optimise_steps=6, tune_steps=6, optimise_lr=0.05, tune_lr=2e-3, plateau_patience=0)
    r32 = invert(g, target, mask=mask, camera=cam[0].numpy(), policy=InversionPolicy(**base))
    r16 = invert(g, target, mask=mask, camera=cam[0].numpy(), policy=InversionPolicy(autocast="all", **base))
    assert r16.stages["tune"]["loss"] < r16.stages["init"]["loss"]
    if network_dtype("auto", torch.device("cpu")) == torch.bfloat16:
        assert r16.stages["tune"]["psnr"] == pytest.approx(r32.stages["tune"]["psnr"], abs=0.5)
    else:
        assert r16.stages["tune"]["psnr"] == r32.stages["tune"]["psnr"]
    with pytest.raises(ValueError, match="autocast"):
        InversionPolicy(autocast="fp8")


def test_step_defaults_agree_everywhere():
    """The service request, the add-on's properties and `ide3d invert --help` state InversionPolicy's own
    step defaults (the add-on and the vendored protocol cannot import it: torch)."""
    import re
    from pathlib import Path

    from ide3d_core.service.protocol_requests import InvertRequest

    pol = InversionPolicy()
    assert (InvertRequest("x").steps, InvertRequest("x").tune_steps) == (pol.optimise_steps, pol.tune_steps)
    root = Path(__file__).resolve().parents[1]
    props = (root / "blender_addon" / "properties.py").read_text()
    assert re.search(rf"photo_steps: IntProperty\([^)]*default={pol.optimise_steps},", props)
    assert re.search(rf"photo_tune_steps: IntProperty\([^)]*default={pol.tune_steps},", props)
    assert InvertRequest("x").refine_camera is pol.refine_pose
    assert re.search(rf"photo_refine_camera: BoolProperty\([^)]*default={pol.refine_pose},", props)
    cli = (root / "ide3d_core" / "commands" / "portrait_cli.py").read_text()
    assert f"code optimisation steps (default {pol.optimise_steps})" in cli
    assert f"pivotal tuning steps (default {pol.tune_steps})" in cli


def test_tuning_with_a_frozen_synthesis_changes_only_decoders_and_superresolution(setup):
    g, _, cam, target, mask = setup
    policy = InversionPolicy(optimise_steps=2, tune_steps=6, tune_lr=2e-3, plateau_patience=0, tune_synthesis=False)
    res = invert(g, target, mask=mask, camera=cam[0].numpy(), policy=policy)
    base, tuned = dict(g.named_parameters()), dict(res.generator.named_parameters())
    moved = {n for n in base if not torch.equal(base[n], tuned[n])}
    assert moved and all(not n.startswith("synthesis.") for n in moved), sorted(moved)[:5]
    assert any(n.startswith("superresolution.") for n in moved)
    assert res.stages["tune"]["psnr"] > res.stages["optimise"]["psnr"]
    # the reported PSNR is that of the tuned generator's own full render (planes not cached any more)
    with torch.no_grad():
        img = res.generator(res.ws, cam).image
    assert float(psnr(img, target)) == pytest.approx(res.stages["tune"]["psnr"], abs=1e-3)


def test_a_semantic_logit_adjustment_moves_the_labels_but_not_the_fit(setup):
    """The objective's cross-entropy takes the model's ``semantic_logit_bias`` off again: the fit matches the
    model's own probabilities to the mask, the adjustment only moves the argmax of the label maps."""
    import dataclasses

    from ide3d_core.inversion.objective import Objective
    from ide3d_core.networks import Generator

    g, ws_true, cam, img, mask = setup
    offsets = tuple(float(v) for v in torch.linspace(-3.0, 3.0, g.config.num_classes))
    b = Generator(dataclasses.replace(g.config, semantic_logit_bias=offsets)).eval().requires_grad_(False)
    b.load_state_dict(g.state_dict())
    policy = InversionPolicy(semantic_weight=1.0, skip_empty=False)
    obj = Objective(img, torch.from_numpy(mask).long()[None], cam, torch.ones(1), policy, None)
    with torch.no_grad():
        plain, _ = obj.per_view(g, ws_true)
        adjusted, _ = obj.per_view(b, ws_true)
        labels_g = g.render(g.planes(ws_true), cam, ws_true).semantic.argmax(1)
        labels_b = b.render(b.planes(ws_true), cam, ws_true).semantic.argmax(1)
    torch.testing.assert_close(adjusted, plain, rtol=1e-5, atol=1e-5)
    assert (labels_g != labels_b).float().mean() > 0.01  # the offsets do change the label maps
